import type { RunPlan } from './RunPlan.js';
import type { Dispatch } from './scheduleRun.js';

export interface StartRequest {
  runId: string;
  plan: RunPlan;
  dispatch: Dispatch;
  /** On reattach: the attempt's log lines already recorded, per stream (not reported again). */
  logged?: { stdout: number; stderr: number };
}

/**
 * The port that runs attempts: local processes by default, Nomad dispatches for real. An
 * executor reports what happens (task.started, heartbeat, log, succeeded, failed) on the
 * bus; it never touches run state itself.
 */
export interface Executor {
  start(request: StartRequest): void;
  /**
   * Picks up an attempt that was in flight when a previous engine stopped, without starting
   * it a second time if it is still running or already ran: it reports the attempt's end as
   * if it had started it, or reports it lost (task.failed with lost) when it is gone.
   * Executors that cannot leave it out, and the engine counts every such attempt as lost.
   */
  reattach?(request: StartRequest): void;
  cancel(runId: string, instance: string, attempt: number): void;
  close(): Promise<void>;
}
