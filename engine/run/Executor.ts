import type { RunPlan } from './RunPlan.js';
import type { Dispatch } from './scheduleRun.js';

export interface StartRequest {
  runId: string;
  plan: RunPlan;
  dispatch: Dispatch;
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
   * it a second time if it is still running or already ran. Executors that cannot (the local
   * one: the attempt died with the process) leave it out, and the attempt counts as lost.
   */
  reattach?(request: StartRequest): void;
  cancel(runId: string, instance: string, attempt: number): void;
  close(): Promise<void>;
}
