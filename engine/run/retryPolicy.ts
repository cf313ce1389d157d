import { findTemplates } from '../spec/parseExpression.js';
import { parseDuration } from '../spec/parseDuration.js';
import type { FailureKind, RetryPolicy } from '../spec/Workflow.js';
import { evaluateExpression, truthy, type ExpressionContext } from './evaluate.js';
import type { RunEvent } from './RunEvent.js';

/** A retry policy with every default applied. */
export interface ResolvedRetry {
  attempts: number;
  backoff: 'fixed' | 'linear' | 'exponential';
  delayMs: number;
  maxDelayMs: number;
  /** Growth of an exponential backoff (Argo's backoff.factor). */
  factor: number;
  jitter: boolean;
  /** The failure kinds retried; all three unless `retry.on` narrows them. */
  on: FailureKind[];
  /** `retry.when`, as written. */
  when?: string;
  /** No retry once this long has passed since the first attempt was queued. */
  maxDurationMs?: number;
}

export const ALL_FAILURES: FailureKind[] = ['exit', 'timeout', 'infrastructure'];

export const DEFAULT_RETRY: ResolvedRetry = { attempts: 1, backoff: 'exponential', delayMs: 1000, maxDelayMs: 300_000, factor: 2, jitter: true, on: ALL_FAILURES };

/** Applies a written policy over `base` (the workflow's defaults, or the built-in ones). */
export function resolveRetry(r: RetryPolicy | undefined, base: ResolvedRetry): ResolvedRetry {
  if (r === undefined) return base;
  const out: ResolvedRetry = {
    attempts: r.attempts ?? base.attempts,
    backoff: r.backoff ?? base.backoff,
    delayMs: r.delay !== undefined ? (parseDuration(r.delay) ?? base.delayMs) : base.delayMs,
    maxDelayMs: r.maxDelay !== undefined ? (parseDuration(r.maxDelay) ?? base.maxDelayMs) : base.maxDelayMs,
    factor: r.factor ?? base.factor,
    jitter: r.jitter ?? base.jitter,
    on: r.on === undefined ? base.on : r.on === 'any' ? ALL_FAILURES : Array.isArray(r.on) ? [...r.on] : [r.on],
  };
  const when = r.when ?? base.when;
  if (when !== undefined) out.when = when;
  const maxDurationMs = r.maxDuration !== undefined ? parseDuration(r.maxDuration) : base.maxDurationMs;
  if (maxDurationMs !== undefined) out.maxDurationMs = maxDurationMs;
  return out;
}

type Failed = Extract<RunEvent, { type: 'task.failed' }>;

/**
 * What a failure was. Reports that say (every built-in agent and executor does) are taken at
 * their word; an older journal's or a plugin's report that does not is an infrastructure
 * failure when the attempt was lost, and the task's own failure otherwise.
 */
export function failureKindOf(e: Failed): FailureKind {
  if (e.failure !== undefined) return e.failure;
  return e.lost === true ? 'infrastructure' : 'exit';
}

/**
 * Why the policy declines to retry a retryable failure that is within its attempt budget, or
 * undefined when it allows the retry. Pure, so that replaying the journal decides the same:
 * `retry.when` sees only the failed attempt, the params and the run's fixed facts.
 */
export function retryRefusal(r: ResolvedRetry, e: Failed, firstQueuedAt: number, ctx: () => ExpressionContext): string | undefined {
  const kind = failureKindOf(e);
  if (!r.on.includes(kind)) return `retry.on is ${r.on.join(', ')} and this was ${kind === 'infrastructure' ? 'an infrastructure' : kind === 'exit' ? 'an exit' : 'a timeout'} failure`;
  if (r.maxDurationMs !== undefined && e.at - firstQueuedAt >= r.maxDurationMs) return `retry.maxDuration ${formatMs(r.maxDurationMs)} has passed since the first attempt`;
  if (r.when !== undefined) {
    const attempt = { number: e.attempt, exitCode: e.exitCode ?? null, error: e.error, failure: kind };
    const scan = findTemplates(r.when);
    const source = scan.ok && scan.templates.length === 1 ? scan.templates[0]!.source : r.when;
    try {
      if (!truthy(evaluateExpression(source, { ...ctx(), attempt }))) return `retry.when '${source.trim()}' is false`;
    } catch (err) {
      return `retry.when could not be evaluated: ${err instanceof Error ? err.message : String(err)}`;
    }
  }
  return undefined;
}

/**
 * The delay before the retry that follows failed attempt `failedAttempt`: fixed, linear or
 * exponential (delay x factor^(n-1)), capped at maxDelay, then spread by a deterministic
 * jitter over -20%..+20% that never goes past maxDelay.
 */
export function backoffDelay(r: ResolvedRetry, runId: string, key: string, failedAttempt: number): number {
  const raw = r.backoff === 'fixed' ? r.delayMs : r.backoff === 'linear' ? r.delayMs * failedAttempt : r.delayMs * r.factor ** (failedAttempt - 1);
  // A zero delay times an overflowing power is NaN; either way the cap is the answer.
  const capped = Number.isFinite(raw) ? Math.min(raw, r.maxDelayMs) : r.maxDelayMs;
  if (!r.jitter) return Math.round(capped);
  // Jitter from a hash, not Math.random: replaying a run must schedule the same retries.
  let h = 2166136261;
  for (const ch of `${runId}:${key}:${failedAttempt}`) h = Math.imul(h ^ ch.charCodeAt(0), 16777619);
  const unit = ((h >>> 0) % 10_000) / 10_000;
  const low = capped * 0.8;
  const high = Math.min(capped * 1.2, r.maxDelayMs);
  return Math.round(low + (high - low) * unit);
}

function formatMs(ms: number): string {
  return ms % 60_000 === 0 ? `${ms / 60_000}m` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
