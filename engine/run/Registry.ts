import { CaravanError } from '../errors/CaravanError.js';

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
  /**
   * The lock is won. `index` grows with every acquisition of the lock (Consul's LockIndex):
   * a fencing token that a newer leader always has more of.
   */
  onElected: (index: number) => void;
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

  /**
   * A value and its modify index (Consul's ModifyIndex; in memory a counter). The key-value
   * methods hold durable controller state, such as a schedule's last fire: on Consul it
   * survives a restart and a change of leader. Keys are checked with checkRegistryKey.
   */
  getKey(key: string): Promise<{ value: string; index: number } | undefined>;
  /** Writes a value; with `cas` only if the key's index is still that (0: only if absent). Returns whether it was written. */
  putKey(key: string, value: string, options?: { cas?: number }): Promise<boolean>;
  /** Removes a key; an absent key is not an error. */
  deleteKey(key: string): Promise<void>;
  /** The keys that start with `prefix` (a plain string prefix, as in Consul), sorted. */
  listKeys(prefix: string): Promise<string[]>;
}

/**
 * Refuses keys that Consul's HTTP API or a reader would not take literally: empty, a leading
 * `/`, empty, `.` or `..` segments (HTTP path cleaning could move them to another key), and
 * control characters. A prefix (for listKeys) may be empty or end in `/`.
 */
export function checkRegistryKey(key: string, kind: 'key' | 'prefix' = 'key'): void {
  const problem = keyProblem(key, kind);
  if (problem !== undefined) throw new CaravanError('USAGE', `registry ${kind} '${JSON.stringify(key).slice(1, -1)}' ${problem}`, { data: { [kind]: key } });
}

function keyProblem(key: string, kind: 'key' | 'prefix'): string | undefined {
  if (key.length > 1024) return 'is longer than 1024 characters';
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
  if (/[\u0000-\u001f\u007f]/.test(key)) return 'contains a control character';
  if (key.startsWith('/')) return 'must not start with /';
  if (key === '') return kind === 'prefix' ? undefined : 'is empty';
  const segments = key.split('/');
  if (kind === 'prefix' && segments[segments.length - 1] === '') segments.pop();
  if (segments.some((s) => s === '' || s === '.' || s === '..')) return "must not contain empty, '.' or '..' segments";
  return undefined;
}

/** The registry's key-value part alone: what durable controller state needs (FileKeyValue has it too). */
export type KeyValue = Pick<Registry, 'getKey' | 'putKey' | 'deleteKey' | 'listKeys'>;
