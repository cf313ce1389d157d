import type { ReusedOutcome, RunStatus, TaskStatus } from './RunEvent.js';
import type { InstanceSnapshot, RunSnapshot, TaskSnapshot } from './RunSnapshot.js';

export interface AttemptRecord {
  attempt: number;
  queuedAt: number;
  startedAt?: number;
  finishedAt?: number;
  status: TaskStatus;
  error?: string;
  exitCode?: number;
}

/** One execution unit: a task, one forEach item of a task, or a compensation. */
export interface InstanceState {
  key: string;
  task: string;
  kind: 'task' | 'compensate';
  index?: number;
  item?: unknown;
  status: TaskStatus;
  attempt: number;
  attempts: AttemptRecord[];
  outputs: Record<string, string>;
  error?: string;
  /** The stable code of the last failure, when it has one (OUTPUT_TOO_LARGE). */
  errorCode?: string;
  exitCode?: number;
  startedAt?: number;
  finishedAt?: number;
  retryAt?: number;
  /** Carried over from this earlier run by a retry (task.reused): it never ran in this one. */
  reusedFrom?: string;
  /** The last attempt was lost with the engine: retried at once, outside the retry budget. */
  lost?: boolean;
  lastHeartbeat?: number;
  /** Why the executor has not started the queued attempt yet (task.pending). */
  pendingReason?: string;
  approval?: { requestedAt: number; timeoutAt?: number; by?: string };
}

/** A task of the workflow, whatever number of instances it fans out to. */
export interface GroupState {
  name: string;
  status: TaskStatus;
  onFailure: boolean;
  finally: boolean;
  remainingNeeds: number;
  instances: string[];
  expanded: boolean;
  done: number;
  failed: number;
  cancelled: number;
  reason?: string;
  /**
   * Set once the group ended, when it or a task it needs (directly or not) did not succeed:
   * how that task ended ("'heads' was skipped"). success() is false below such a group.
   */
  notSucceeded?: string;
  /** Set once the group ended, when it or a task it needs (directly or not) failed: failure() is true below it. */
  failedUpstream?: string;
}

export type RunPhase = 'main' | 'compensating' | 'onFailure' | 'finally' | 'done';

/** How the run ended before its finally tasks: what `run.status` reads in them. */
export type RunOutcome = 'succeeded' | 'failed' | 'cancelled';

export interface BreakerState {
  failures: number;
  openUntil?: number;
  /** Failures counted when it last opened: one more means the half-open probe failed. */
  failuresAtOpen?: number;
  /** The half-open probe succeeded: the scheduler records `breaker.closed`. */
  probeSucceeded?: boolean;
}

/**
 * The state of one run. It is built only by reduceRun from events, and it keeps the sets the
 * scheduler needs (ready, runnable, active...) up to date incrementally, so one step of a
 * 10,000-task run costs the same as one step of a 10-task run.
 */
export interface RunState {
  runId: string;
  workflow: string;
  /** The params as recorded: a param declared `secret: true` shows as `***`. */
  params: Record<string, unknown>;
  /**
   * The values of secret params, given to expressions only. Never in an event, so never in
   * the journal, the audit branch, the bus or a snapshot: a recovered run is given them again.
   */
  secretParams: Record<string, unknown>;
  commit?: string;
  trigger: string;
  /** The run this one retries (`caravan retry`). */
  retryOf?: string;
  /**
   * Instances a retry carries over from the run it retries, by instance key, taken from
   * run.started so that a recovered retry reuses the same ones. Empty for any other run.
   */
  reuse: Map<string, ReusedOutcome>;
  status: RunStatus;
  phase: RunPhase;
  startedAt: number;
  startedAtIso: string;
  finishedAt?: number;
  deadline?: number;
  failureReason?: string;
  cancelReason?: string;
  /** Set when the finally tasks start: the status the run has without them. */
  outcome?: RunOutcome;
  /** Who cancelled a run whose finally tasks still run (run.cancelling), for its closing run.cancelled. */
  cancelledBy?: string;
  /** The first finally task that failed: it turns a succeeded outcome into a failed run. */
  finallyFailure?: string;
  /** Failed instances of main tasks, in the order they failed: `run.failures` in onFailure and finally tasks. */
  failures: Array<{ task: string; error: string }>;
  groups: Map<string, GroupState>;
  instances: Map<string, InstanceState>;
  /** Groups whose needs all succeeded and that have not started: `when`, forEach and approvals are decided here. */
  ready: Set<string>;
  /** Pending groups with a need that ended without success: they will be skipped. */
  blocked: Set<string>;
  /** Instances of a retry whose earlier outcome is carried over: the scheduler records task.reused for them. */
  reusable: Set<string>;
  /** Instances waiting for capacity to be dispatched. */
  runnable: Set<string>;
  /** Failed attempts waiting for their retry time (retryAt unset until scheduled). */
  retrying: Set<string>;
  /** Queued or running instances. */
  active: Set<string>;
  activeByBucket: Map<string, number>;
  waitingApprovals: Set<string>;
  breakers: Map<string, BreakerState>;
  /** The breaker key of each task that has one (from the plan): whom an open breaker holds. */
  breakerOf: Map<string, string>;
  /** Compensation instance keys in the order they run, once the run is failing. */
  compensations: string[];
  compensationIndex: number;
  mainTotal: number;
  mainDone: number;
  failureTotal: number;
  failureDone: number;
  finallyTotal: number;
  finallyDone: number;
  /** The workflow's spec.outputs, evaluated as the run succeeded. */
  outputs?: Record<string, string>;
  /** Number of events applied. */
  seq: number;
}

/** A JSON-friendly copy for run.json and the CLI. */
export function snapshotRun(s: RunState): RunSnapshot {
  const tasks: Record<string, TaskSnapshot> = {};
  for (const g of s.groups.values()) {
    const instances = g.instances.map((k) => s.instances.get(k)).filter((i) => i !== undefined);
    const one = instances.length === 1 && instances[0]!.key === g.name ? instances[0] : undefined;
    tasks[g.name] = {
      status: g.status,
      ...(g.reason !== undefined ? { reason: g.reason } : {}),
      ...(one !== undefined
        ? instanceView(one, s)
        : instances.length > 0 ? { instances: instances.map((i) => instanceView(i, s)) } : {}),
    };
  }
  const compensations = s.compensations.map((k) => s.instances.get(k)).filter((i) => i !== undefined).map((i) => instanceView(i));
  const breakers = [...s.breakers].filter(([, b]) => b.openUntil !== undefined).map(([key, b]) => ({ key, failures: b.failures, openUntil: new Date(b.openUntil!).toISOString() }));
  return {
    runId: s.runId,
    workflow: s.workflow,
    status: s.status,
    trigger: s.trigger,
    ...(s.retryOf !== undefined ? { retryOf: s.retryOf } : {}),
    ...(s.commit !== undefined ? { workflowCommit: s.commit } : {}),
    params: s.params,
    startedAt: new Date(s.startedAt).toISOString(),
    ...(s.finishedAt !== undefined ? { finishedAt: new Date(s.finishedAt).toISOString(), durationMs: s.finishedAt - s.startedAt } : {}),
    ...(s.failureReason !== undefined ? { failureReason: s.failureReason } : {}),
    ...(s.cancelReason !== undefined ? { cancelReason: s.cancelReason } : {}),
    ...(s.outputs !== undefined ? { outputs: s.outputs } : {}),
    tasks,
    ...(compensations.length > 0 ? { compensations } : {}),
    ...(breakers.length > 0 ? { breakers } : {}),
    events: s.seq,
  };
}

/**
 * The open circuit breaker an instance waits for, if any: it waits to start (a new instance or
 * a retry) and its task's breaker has opened and not closed since. Past `until` the breaker
 * lets one probe through; until its result the others still wait.
 */
export function heldBy(s: RunState, i: InstanceState): { key: string; until: number } | undefined {
  if (i.kind !== 'task' || (i.status !== 'pending' && i.status !== 'retrying')) return undefined;
  const key = s.breakerOf.get(i.task);
  const b = key !== undefined ? s.breakers.get(key) : undefined;
  return key !== undefined && b?.openUntil !== undefined && b.probeSucceeded !== true ? { key, until: b.openUntil } : undefined;
}

function instanceView(i: InstanceState, s?: RunState): InstanceSnapshot {
  const held = s !== undefined ? heldBy(s, i) : undefined;
  return {
    ...(i.key !== i.task ? { key: i.key } : {}),
    status: i.status,
    attempts: i.attempts.length,
    ...(i.reusedFrom !== undefined ? { reusedFrom: i.reusedFrom } : {}),
    ...(i.item !== undefined ? { item: i.item } : {}),
    ...(Object.keys(i.outputs).length > 0 ? { outputs: i.outputs } : {}),
    ...(i.error !== undefined ? { error: i.error } : {}),
    ...(i.errorCode !== undefined ? { errorCode: i.errorCode } : {}),
    ...(i.pendingReason !== undefined ? { pendingReason: i.pendingReason } : {}),
    ...(held !== undefined ? { heldBy: { breaker: held.key, until: new Date(held.until).toISOString() } } : {}),
    ...(i.exitCode !== undefined ? { exitCode: i.exitCode } : {}),
    ...(i.startedAt !== undefined && i.finishedAt !== undefined ? { durationMs: i.finishedAt - i.startedAt } : {}),
  };
}
