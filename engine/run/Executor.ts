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
  cancel(runId: string, instance: string, attempt: number): void;
  close(): Promise<void>;
}
