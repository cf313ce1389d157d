import { parseDuration } from './parseDuration.js';
import { asRecord, asString } from './shape.js';
import type { BreakerScope } from './Workflow.js';

/** Consecutive failed attempts that open a breaker when its settings do not say. */
export const DEFAULT_BREAKER_FAILURES = 5;
/** How long an open breaker holds starts when its settings do not say. */
export const DEFAULT_BREAKER_COOLDOWN_MS = 30_000;

/** A task's circuit breaker once defaults are applied: tasks with the same key share one. */
export interface ResolvedBreaker {
  /** `host:<host[:port]>`, `pool:<name>` or `agent:<type>`. */
  key: string;
  scope: BreakerScope;
  failures: number;
  cooldownMs: number;
}

export type BreakerResolution =
  | { ok: true; breaker: ResolvedBreaker | undefined }
  /** The task's own `scope` does not fit it (pool without a pool, host without a fixed URL host). */
  | { ok: false; message: string };

/**
 * The host an http task's breaker protects: the URL's host and port, lower case and without
 * credentials (the key shows in progress lines, run.json and logs), or undefined when the
 * host is written as an expression and so only known at run time.
 */
export function breakerHost(url: string): string | undefined {
  const template = url.indexOf('${{');
  const fixed = template === -1 ? url : url.slice(0, template);
  const m = /^https?:\/\/([^/?#]*)([/?#]|$)/i.exec(fixed);
  if (m === null || (template !== -1 && m[2] === '')) return undefined;
  const host = m[1]!.slice(m[1]!.lastIndexOf('@') + 1).toLowerCase();
  return host === '' ? undefined : host;
}

function agentTypeOf(task: Record<string, unknown>): string {
  return asString(task['agent']) ?? (task['http'] !== undefined ? 'http' : task['sleep'] !== undefined ? 'sleep' : 'shell');
}

/**
 * Works out a task's circuit breaker from its own `circuitBreaker`, then
 * `spec.defaults.circuitBreaker`, then the built-in default: on for http tasks (a failing
 * remote service is the case a breaker is for: hammering it with retries slows its
 * recovery), off for every other task (a command failing again says nothing about the
 * machine it runs on, and a hidden pause would only slow its retries). Approval gates and
 * sub-workflows run nothing themselves and have none. Takes the document loosely so that
 * validation can call it before the schema has been satisfied.
 */
export function resolveCircuitBreaker(taskValue: unknown, defaultsValue: unknown): BreakerResolution {
  const task = asRecord(taskValue) ?? {};
  if (task['approval'] !== undefined || task['workflow'] !== undefined) return { ok: true, breaker: undefined };
  const own = task['circuitBreaker'];
  const inherited = asRecord(defaultsValue)?.['circuitBreaker'];
  const agent = agentTypeOf(task);
  const enabled = own === false ? false : own !== undefined ? true : inherited === false ? false : inherited !== undefined ? true : agent === 'http';
  if (!enabled) return { ok: true, breaker: undefined };
  const mine = asRecord(own) ?? {};
  const base = asRecord(inherited) ?? {};
  const pick = <T>(k: string, as: (v: unknown) => T | undefined): T | undefined => as(mine[k]) ?? as(base[k]);
  const failures = pick('failures', (v) => (typeof v === 'number' ? v : undefined)) ?? DEFAULT_BREAKER_FAILURES;
  const cooldownMs = pick('cooldown', (v) => (typeof v === 'string' ? parseDuration(v) : undefined)) ?? DEFAULT_BREAKER_COOLDOWN_MS;

  const pool = asString(task['pool']);
  const url = asString(asRecord(task['http'])?.['url']);
  const host = url !== undefined ? breakerHost(url) : undefined;
  const keyFor = (scope: BreakerScope): string | undefined =>
    scope === 'pool' ? (pool !== undefined ? `pool:${pool}` : undefined) : scope === 'host' ? (host !== undefined ? `host:${host}` : undefined) : `agent:${agent}`;
  const natural: BreakerScope = pool !== undefined ? 'pool' : host !== undefined ? 'host' : 'agent';

  const explicit = asString(mine['scope']) as BreakerScope | undefined;
  if (explicit !== undefined) {
    const key = keyFor(explicit);
    if (key === undefined) {
      const why = explicit === 'pool' ? 'the task runs in no pool' : url === undefined ? 'the task makes no http request' : `the host of '${url}' is only known at run time`;
      return { ok: false, message: `circuit breaker scope ${explicit} does not fit task '${asString(task['name']) ?? '?'}': ${why}; use ${natural}` };
    }
    return { ok: true, breaker: { key, scope: explicit, failures, cooldownMs } };
  }
  // A scope from spec.defaults is a preference: where it does not fit a task, the task's own
  // natural scope applies (a pool for pool tasks, a host for http tasks, else the agent type).
  const preferred = asString(base['scope']) as BreakerScope | undefined;
  const scope = preferred !== undefined && keyFor(preferred) !== undefined ? preferred : natural;
  return { ok: true, breaker: { key: keyFor(scope)!, scope, failures, cooldownMs } };
}
