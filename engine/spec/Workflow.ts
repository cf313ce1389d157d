/**
 * The typed form of a `caravan/v1` workflow, mirroring schemas/workflow.v1.json. A value of
 * this type has passed schema validation; semantic checks have not necessarily run.
 */

export type Duration = string;
export type DriverName = 'raw_exec' | 'exec' | 'docker' | 'podman' | 'java';
export type ParamType = 'string' | 'number' | 'integer' | 'boolean' | 'array' | 'object';

export interface Resources {
  cpu?: number;
  cores?: number;
  memoryMB?: number;
  memoryMaxMB?: number;
  diskMB?: number;
}

/**
 * What a failed attempt was, for `retry.on`: the task's own failure (a non-zero exit, an HTTP
 * error status), its timeout, or the infrastructure under it (allocation lost, OOM killed,
 * node gone, failed to start, killed by a signal, connection refused).
 */
export type FailureKind = 'exit' | 'timeout' | 'infrastructure';

export interface RetryPolicy {
  attempts?: number;
  backoff?: 'fixed' | 'linear' | 'exponential';
  delay?: Duration;
  maxDelay?: Duration;
  /** Growth of an exponential backoff: delay x factor^(n-1) before retry n (default 2). */
  factor?: number;
  jitter?: boolean;
  /** Which failures are retried: `any` (default), one kind, or a list of kinds. */
  on?: 'any' | FailureKind | FailureKind[];
  /** Retry only while this expression over `attempt` (and params, run) holds (Argo's retryStrategy.expression). */
  when?: string;
  /** No retry starts once this long has passed since the first attempt was queued (Argo's maxDuration). */
  maxDuration?: Duration;
}

export type BreakerScope = 'agent' | 'pool' | 'host';

/** A circuit breaker: after `failures` consecutive failures in its scope, starts wait `cooldown`. */
export interface CircuitBreakerSpec {
  failures?: number;
  cooldown?: Duration;
  scope?: BreakerScope;
}

export interface SecretRef {
  path: string;
  key: string;
}

export type EnvValue = string | { secret: SecretRef } | { fromHost: string };
export type EnvMap = Record<string, EnvValue>;

export interface ParamSpec {
  type: ParamType;
  description?: string;
  default?: unknown;
  required?: boolean;
  pattern?: string;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  items?: { type: Exclude<ParamType, 'array'> };
  secret?: boolean;
}

/** Temporal's names: what happens when a scheduled time comes while an earlier run is active. */
export type ScheduleOverlap = 'skip' | 'buffer-one' | 'allow' | 'cancel-running';
/** Which missed scheduled times still run once the controller is back. */
export type ScheduleCatchup = 'none' | 'last' | 'all';

export interface ScheduleTriggerSpec {
  cron: string;
  timezone?: string;
  params?: Record<string, unknown>;
  overlap?: ScheduleOverlap;
  catchup?: ScheduleCatchup;
  catchupWindow?: Duration;
}

export interface Trigger {
  push?: { branches?: string[]; paths?: string[] };
  schedule?: ScheduleTriggerSpec;
  event?: { subject: string; params?: Record<string, unknown> };
  manual?: { description?: string };
}

export interface PoolSpec {
  description?: string;
  agent?: string;
  count: number;
  concurrency?: number;
  driver?: DriverName;
  image?: string;
  resources?: Resources;
  env?: EnvMap;
}

export interface HttpSpec {
  url: string;
  method?: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'OPTIONS';
  headers?: Record<string, string | { secret: SecretRef }>;
  body?: unknown;
}

export interface ApprovalSpec {
  timeout?: Duration;
  onTimeout?: 'reject' | 'approve';
  approvers?: string[];
  message?: string;
}

export interface CompensateSpec {
  run?: string;
  args?: string[];
  env?: EnvMap;
  timeout?: Duration;
  retry?: RetryPolicy;
}

export interface SubWorkflowSpec {
  name: string;
  params?: Record<string, unknown>;
  wait?: boolean;
}

/**
 * An output taken from the task's standard output (Argo's `outputs.result`) rather than from
 * $CARAVAN_OUTPUTS: the whole stdout, trailing newlines removed, at most `maxBytes` bytes.
 */
export interface StdoutOutputSpec {
  name: string;
  from: 'stdout';
  /** Default STDOUT_OUTPUT_DEFAULT_BYTES, at most STDOUT_OUTPUT_MAX_BYTES. */
  maxBytes?: number;
}

/** A declared output: a name written to $CARAVAN_OUTPUTS, or the task's stdout. */
export type OutputSpec = string | StdoutOutputSpec;

/** What stdout capture keeps by default: Argo's limit for `outputs.result`, which its users know. */
export const STDOUT_OUTPUT_DEFAULT_BYTES = 256 * 1024;
/** The most `maxBytes` may ask for: the limit of the outputs file too (agents/readOutputs.ts). */
export const STDOUT_OUTPUT_MAX_BYTES = 1024 * 1024;

export interface TaskSpec {
  name: string;
  description?: string;
  needs?: string[];
  agent?: string;
  run?: string;
  args?: string[];
  http?: HttpSpec;
  sleep?: Duration;
  with?: Record<string, unknown>;
  workflow?: SubWorkflowSpec;
  approval?: ApprovalSpec;
  workingDir?: string;
  env?: EnvMap;
  pool?: string;
  driver?: DriverName;
  image?: string;
  resources?: Resources;
  timeout?: Duration;
  retry?: RetryPolicy;
  /** true (defaults), false (off) or settings; see docs/workflow-spec.md for the defaults by kind. */
  circuitBreaker?: boolean | CircuitBreakerSpec;
  when?: string;
  forEach?: unknown[] | string;
  parallelism?: number;
  outputs?: OutputSpec[];
  compensate?: CompensateSpec;
}

export interface WorkflowSpec {
  params?: Record<string, ParamSpec>;
  triggers?: Trigger[];
  defaults?: {
    timeout?: Duration;
    retry?: RetryPolicy;
    circuitBreaker?: boolean | CircuitBreakerSpec;
    resources?: Resources;
    driver?: DriverName;
    env?: EnvMap;
  };
  pools?: Record<string, PoolSpec>;
  concurrency?: {
    limit?: number;
    policy?: 'queue' | 'cancel-running' | 'skip';
    maxParallelTasks?: number;
  };
  timeout?: Duration;
  failFast?: boolean;
  tasks: TaskSpec[];
  onFailure?: TaskSpec[];
  /** Run last whatever the outcome, cancellation and deadline included (Tekton's finally). */
  finally?: TaskSpec[];
  /**
   * The run's own outputs, each a string with `${{ }}` over its tasks, evaluated when the run
   * succeeds: a parent's `workflow:` task reads them as its outputs.
   */
  outputs?: Record<string, string>;
}

export interface Workflow {
  apiVersion: 'caravan/v1';
  kind: 'Workflow';
  metadata: {
    name: string;
    description?: string;
    labels?: Record<string, string>;
  };
  spec: WorkflowSpec;
}

export const API_VERSION = 'caravan/v1';
export const KIND = 'Workflow';

/** The names a task's outputs are read by, stdout capture included. */
export function outputNames(outputs: readonly OutputSpec[] | undefined): string[] {
  return (outputs ?? []).map((o) => (typeof o === 'string' ? o : o.name));
}

/** The task's stdout capture, if it declares one. */
export function stdoutOutput(outputs: readonly OutputSpec[] | undefined): StdoutOutputSpec | undefined {
  return outputs?.find((o): o is StdoutOutputSpec => typeof o !== 'string');
}
