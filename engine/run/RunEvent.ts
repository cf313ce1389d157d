import type { FailureKind } from '../spec/Workflow.js';

export type { FailureKind };

/**
 * Everything that happens to a run is one of these events; the run's state is a fold of them
 * (reduceRun). Events carry their own time, so replaying them never reads a clock. `task` is
 * an instance key: the task name, or `name[i]` for the i-th item of a forEach.
 */
export type RunStatus = 'running' | 'paused' | 'succeeded' | 'failed' | 'cancelled';

export type TaskStatus =
  | 'pending'
  | 'queued'
  | 'running'
  | 'retrying'
  | 'waiting'
  | 'succeeded'
  | 'failed'
  | 'skipped'
  | 'cancelled';

/**
 * How a task instance ended in an earlier run, carried into a retry of it (`caravan retry`):
 * the instance is recorded as reused with these outputs and never dispatched again.
 */
export interface ReusedOutcome {
  outputs: Record<string, string>;
  /** A forEach item: reused only if the retry's expansion gives this same item at this index. */
  item?: unknown;
  exitCode?: number;
  /** An approval gate: who approved it in the earlier run. */
  approvedBy?: string;
}

/** What makes a run a retry: the run it retries and the instances it reuses (by instance key). */
export interface RetryOrigin {
  of: string;
  reuse: Record<string, ReusedOutcome>;
}

interface Base {
  runId: string;
  /** Milliseconds since the epoch, from the engine's clock when the event was made. */
  at: number;
}

export type RunEvent =
  /** `retry`: the run retries an earlier one (its record says Retry-Of) and reuses these instances. */
  | (Base & { type: 'run.started'; workflow: string; params: Record<string, unknown>; commit?: string; trigger: string; deadline?: number; retry?: RetryOrigin })
  | (Base & { type: 'task.expanded'; task: string; items: unknown[] })
  | (Base & { type: 'task.ready'; task: string })
  | (Base & { type: 'task.queued'; task: string; attempt: number })
  /** The executor cannot start a queued attempt yet, and why (Nomad has no node with room). */
  | (Base & { type: 'task.pending'; task: string; attempt: number; reason: string })
  | (Base & { type: 'task.started'; task: string; attempt: number })
  | (Base & { type: 'task.heartbeat'; task: string; attempt: number })
  | (Base & { type: 'task.log'; task: string; attempt: number; stream: 'stdout' | 'stderr'; line: string })
  /** `startedAt`: when the attempt started, if no task.started was sent for it (a short pooled task reports once). */
  | (Base & { type: 'task.succeeded'; task: string; attempt: number; outputs: Record<string, string>; exitCode?: number; startedAt?: number })
  /** `code`: a stable error code when the runner knows one (OUTPUT_TOO_LARGE). */
  | (Base & { type: 'task.failed'; task: string; attempt: number; error: string; code?: string; exitCode?: number; retryable: boolean; lost?: boolean; startedAt?: number; failure?: FailureKind })
  | (Base & { type: 'task.retry-scheduled'; task: string; attempt: number; retryAt: number })
  | (Base & { type: 'task.skipped'; task: string; reason: string })
  /** A retry carries the instance over from run `from`: succeeded with those outputs, not dispatched. */
  | (Base & { type: 'task.reused'; task: string; from: string; outputs: Record<string, string>; exitCode?: number; approvedBy?: string })
  | (Base & { type: 'task.cancelled'; task: string; attempt: number; reason: string })
  | (Base & { type: 'approval.requested'; task: string; timeoutAt?: number; message?: string })
  | (Base & { type: 'approval.granted'; task: string; by: string })
  | (Base & { type: 'approval.rejected'; task: string; by: string; reason?: string })
  /** A decision from someone not in the gate's `approvers`: recorded, and the gate keeps waiting. */
  | (Base & { type: 'approval.refused'; task: string; by: string; reason: string })
  | (Base & { type: 'compensation.started'; task: string; attempt: number })
  | (Base & { type: 'compensation.finished'; task: string; attempt: number; ok: boolean; error?: string })
  | (Base & { type: 'breaker.opened'; key: string; until: number; failures?: number })
  | (Base & { type: 'breaker.closed'; key: string })
  | (Base & { type: 'run.paused'; by: string })
  | (Base & { type: 'run.resumed'; by: string })
  /**
   * A cancel of a run whose workflow has finally tasks: everything else stops at once, the
   * finally tasks run, and run.cancelled (by the same person) ends the run after them.
   */
  | (Base & { type: 'run.cancelling'; by: string; reason?: string })
  | (Base & { type: 'run.cancelled'; by: string; reason?: string })
  | (Base & { type: 'run.failing'; reason: string })
  /** The main tasks (and compensation and onFailure) are over with this outcome: the finally tasks start. */
  | (Base & { type: 'run.finalizing'; outcome: 'succeeded' | 'failed' })
  /** `outputs`: the workflow's spec.outputs, evaluated as the run succeeded. */
  | (Base & { type: 'run.succeeded'; outputs?: Record<string, string> })
  | (Base & { type: 'run.failed'; reason: string })
  | (Base & { type: 'checkpoint'; seq: number });

export type RunEventType = RunEvent['type'];

/** The de-duplication key, as used for Nats-Msg-Id: `<run>:<task>:<attempt>:<event>`. */
export function eventId(e: RunEvent): string {
  const task = 'task' in e ? e.task : 'key' in e ? e.key : '-';
  const attempt = 'attempt' in e ? e.attempt : 0;
  // Logs and heartbeats repeat legitimately; their time makes each one distinct.
  const suffix = e.type === 'task.log' || e.type === 'task.heartbeat' || e.type === 'task.pending' || e.type === 'breaker.opened' || e.type === 'breaker.closed' ? `:${e.at}` : '';
  return `${e.runId}:${task}:${attempt}:${e.type}${suffix}`;
}

/** A run is over when it reaches one of these; no event changes it afterwards. */
export function isFinal(status: RunStatus): boolean {
  return status === 'succeeded' || status === 'failed' || status === 'cancelled';
}

export function isTaskDone(status: TaskStatus): boolean {
  return status === 'succeeded' || status === 'failed' || status === 'skipped' || status === 'cancelled';
}
