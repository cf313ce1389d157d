import type { EnvMap, TaskSpec } from '../spec/Workflow.js';
import type { ExpressionContext } from './evaluate.js';

/**
 * The wire protocol: everything that crosses a process boundary between the engine and the
 * runners (a Nomad dispatch payload, a pool's work item and cancel, a stored context) and
 * the NATS subjects they travel on. Changing a shape or a subject here changes what a
 * running cluster stores and exchanges: keep old readers in mind.
 */

/**
 * One attempt's key, `<run>:<instance>:<attempt>`: how the engine, the executors and the
 * runners name an attempt (its work item's message id, its cancels, its stored context, its
 * Nomad idempotency token once escaped).
 */
export function attemptKey(runId: string, instance: string, attempt: number): string {
  return `${runId}:${instance}:${attempt}`;
}

/** Which attempt a pool control message (a cancel) is about. */
export interface WorkRef {
  runId: string;
  /** Instance key: the task name, `name[i]` for a forEach item, `<either>:compensate`. */
  instance: string;
  attempt: number;
}

/** A unit of work for an agent pool: one attempt of one task, with everything to run it. */
export interface WorkItem extends WorkRef {
  workflow: string;
  /** The task as the runner runs it (for a compensation: the compensation as a task). */
  task: TaskSpec;
  /** What the task's expressions see: params, upstream outputs, the run, the item. */
  context: ExpressionContext;
  timeoutMs?: number;
  /** The workflow's `defaults.env`, under the task's own env. */
  defaultsEnv?: EnvMap;
}

/** What the engine sends with each dispatch (the Nomad dispatch payload). */
export interface DispatchPayload {
  runId: string;
  workflow: string;
  /** Instance key: the task name, or `name[i]` for a forEach item. */
  instance: string;
  attempt: number;
  kind: 'task' | 'compensate';
  /** The attempt's context; absent when it was too large for Nomad's payload (see contextRef). */
  context?: ExpressionContext;
  /** Key of the context in the context store, when it did not fit the payload. */
  contextRef?: string;
  /** NATS servers to report to (credentials come from the allocation's environment). */
  nats: string[];
}

const UNSAFE = /[^A-Za-z0-9_-]/;
const UNSAFE_ALL = /[^A-Za-z0-9_-]/g;

/**
 * One NATS subject token (also what a Nomad idempotency token may hold): task names may
 * contain characters that are not subject tokens, and forEach and compensation keys add
 * `[`, `]` and `:`; each is written `_<hex>`. Event subjects stored on existing streams
 * were written with exactly this escaping: do not change its output.
 */
export function subjectToken(s: string): string {
  // Most names need no escaping: testing first skips the replace and its callback.
  return UNSAFE.test(s) ? s.replace(UNSAFE_ALL, (c) => `_${c.charCodeAt(0).toString(16)}`) : s;
}

/** The subject of one task's events (`_run` for the run's own), `caravan.ev.<workflow>.<run>.<task>`. */
export function eventSubject(workflow: string, runId: string, task: string | undefined): string {
  return `caravan.ev.${subjectToken(workflow)}.${subjectToken(runId)}.${task === undefined ? '_run' : subjectToken(task)}`;
}

/** Every event of one run. */
export function runSubjects(workflow: string, runId: string): string {
  return `caravan.ev.${subjectToken(workflow)}.${subjectToken(runId)}.>`;
}

/** A pool's work items, `caravan.work.<workflow>.<pool>`. */
export function workSubject(workflow: string, pool: string): string {
  return `caravan.work.${subjectToken(workflow)}.${subjectToken(pool)}`;
}

/** A pool's control messages (cancels, a WorkRef each), `caravan.control.<workflow>.<pool>`. */
export function workControlSubject(workflow: string, pool: string): string {
  return `caravan.control.${subjectToken(workflow)}.${subjectToken(pool)}`;
}

/** A stored context, `caravan.ctx.<key>`. */
export function contextSubject(key: string): string {
  return `caravan.ctx.${subjectToken(key)}`;
}

/**
 * A Nomad idempotency token for an attempt: its key with each part escaped, so `[i]` and
 * `:compensate` in an instance cannot be mistaken for the key's own separators.
 */
export function attemptToken(runId: string, instance: string, attempt: number): string {
  return attemptKey(subjectToken(runId), subjectToken(instance), attempt);
}
