/** A run's status as operators see it in the registry (Consul KV `caravan/runs/<workflow>/<run-id>`). */
export interface RunStatusRecord {
  workflow: string;
  runId: string;
  status: string;
  tasks: Record<string, number>;
  startedAt: string;
  finishedAt?: string;
  /** Commit of the run's record on caravan/runs. */
  auditCommit?: string;
}

export interface LeaderOptions {
  key?: string;
  ttlMs?: number;
  lockDelayMs?: number;
  holder: string;
  onElected: () => void;
  /** Called at once when leadership is lost (session gone, lock taken): stop leader work. */
  onLost: (reason: string) => void;
}

/**
 * The port for what operators see of running controllers and runs, and for leadership:
 * Consul for real, in memory for the embedded default and tests.
 */
export interface Registry {
  /** Registers a `caravan-controller` instance kept alive by a TTL; returns its deregistration. */
  registerController(id: string, ttlMs?: number): Promise<() => Promise<void>>;
  mirrorRun(r: RunStatusRecord): Promise<void>;
  readRun(workflow: string, runId: string): Promise<RunStatusRecord | undefined>;
  /**
   * Campaigns for the leader lock until stopped: onElected when it is won, onLost at once when
   * it is lost. Returns a stop function that releases the lock.
   */
  elect(o: LeaderOptions): () => Promise<void>;
}
