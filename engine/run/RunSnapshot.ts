import type { RunStatus, TaskStatus } from './RunEvent.js';

/**
 * One execution unit as operators see it (run.json, `caravan status`, the coming API). The
 * JSON Schema is schemas/run-snapshot.v1.json; a test keeps the two in step.
 */
export interface InstanceSnapshot {
  /** Set when it differs from the task name: `name[i]` for a forEach item, `name.compensate`. */
  key?: string;
  status: TaskStatus;
  attempts: number;
  /** Carried over by a retry from this earlier run, with its outputs: it did not run in this one. */
  reusedFrom?: string;
  item?: unknown;
  outputs?: Record<string, string>;
  error?: string;
  /** The stable code of the failure, when it has one (OUTPUT_TOO_LARGE). */
  errorCode?: string;
  /** Why the executor has not started the queued attempt yet (Nomad cannot place it). */
  pendingReason?: string;
  /** It waits for this open circuit breaker before it may start (again). */
  heldBy?: { breaker: string; until: string };
  exitCode?: number;
  durationMs?: number;
}

/** A task of the workflow: its own instance's fields, or every instance when it fanned out. */
export interface TaskSnapshot extends Partial<InstanceSnapshot> {
  status: TaskStatus;
  /** Why it was skipped or cancelled. */
  reason?: string;
  instances?: InstanceSnapshot[];
}

/** A run's state at one moment, in a form that survives JSON: what run.json holds. */
export interface RunSnapshot {
  runId: string;
  workflow: string;
  status: RunStatus;
  trigger: string;
  /** The run this one retries (`caravan retry`); its audit commits carry `Retry-Of:`. */
  retryOf?: string;
  workflowCommit?: string;
  /** The workflow file as run differed from its version at workflowCommit (an uncommitted edit). */
  workflowDirty?: boolean;
  /** SHA-256 of the workflow file as run, when it was dirty. */
  workflowSha256?: string;
  params: Record<string, unknown>;
  startedAt: string;
  finishedAt?: string;
  durationMs?: number;
  failureReason?: string;
  cancelReason?: string;
  /** The workflow's spec.outputs, evaluated when the run succeeded: a parent's workflow: task reads them. */
  outputs?: Record<string, string>;
  tasks: Record<string, TaskSnapshot>;
  compensations?: InstanceSnapshot[];
  /** Circuit breakers that opened and have not closed since: what they hold waits until openUntil. */
  breakers?: Array<{ key: string; failures: number; openUntil: string }>;
  /** Number of events applied to reach this state. */
  events: number;
}
