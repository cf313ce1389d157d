import type { PendingDiagnostic } from './Diagnostic.js';
import { closest } from './describePath.js';
import {
  ATTEMPT_PROPERTIES,
  RETRY_EXPRESSION_CONTEXTS,
  RUN_OUTCOME_PROPERTIES,
  RUN_PROPERTIES,
  collectReferences,
  findTemplates,
  parseExpression,
  statusFunctionsIn,
} from './parseExpression.js';
import { parseDuration } from './parseDuration.js';
import { resolveCircuitBreaker } from './resolveCircuitBreaker.js';
import { asRecord, asString } from './shape.js';

/** A task as checkSemantics lists it. */
export interface RetrySite {
  task: Record<string, unknown>;
  name: string;
  path: Array<string | number>;
}

/** `run` properties a `retry.when` may read: the run's outcome is not known while its tasks retry. */
const RUN_READABLE = RUN_PROPERTIES.filter((p) => !(RUN_OUTCOME_PROPERTIES as readonly string[]).includes(p));

/**
 * Checks retry policies and circuit breakers beyond the schema: delays in order, a factor
 * only where it means something, a `retry.when` that parses and reads only what exists when
 * it is decided, a breaker scope that fits its task, and tasks that share a breaker agreeing
 * on its settings.
 */
export function checkRetryPolicy(spec: Record<string, unknown>, tasks: RetrySite[]): PendingDiagnostic[] {
  const out: PendingDiagnostic[] = [];
  const params = asRecord(spec['params']) ?? {};
  const defaults = asRecord(spec['defaults']);
  const sites: Array<{ retry: unknown; path: Array<string | number> }> = [
    { retry: defaults?.['retry'], path: ['spec', 'defaults', 'retry'] },
    ...tasks.map((e) => ({ retry: e.task['retry'], path: [...e.path, 'retry'] })),
    ...tasks.map((e) => ({ retry: asRecord(e.task['compensate'])?.['retry'], path: [...e.path, 'compensate', 'retry'] })),
  ];
  for (const s of sites) {
    const r = asRecord(s.retry);
    if (r === undefined) continue;
    const delay = parseDuration(asString(r['delay']) ?? '');
    const max = parseDuration(asString(r['maxDelay']) ?? '');
    if (delay !== undefined && max !== undefined && max < delay) {
      out.push(err('RETRY_DELAY_ORDER', `maxDelay ${String(r['maxDelay'])} is shorter than delay ${String(r['delay'])}`, [...s.path, 'maxDelay']));
    }
    const backoff = asString(r['backoff']);
    if (r['factor'] !== undefined && (backoff === 'fixed' || backoff === 'linear')) {
      out.push(err('RETRY_FACTOR_UNUSED', `factor only shapes an exponential backoff, and this one is ${backoff}; remove factor or use backoff: exponential`, [...s.path, 'factor'], 'key'));
    }
    const when = asString(r['when']);
    if (when !== undefined) checkRetryWhen(when, [...s.path, 'when'], params, out);
  }

  const byKey = new Map<string, { name: string; failures: number; cooldownMs: number }>();
  for (const e of tasks) {
    const r = resolveCircuitBreaker(e.task, defaults);
    const own = asRecord(e.task['circuitBreaker']);
    if (!r.ok) {
      out.push(err('BREAKER_SCOPE_INVALID', r.message, [...e.path, 'circuitBreaker', 'scope']));
      continue;
    }
    if (r.breaker === undefined) continue;
    const first = byKey.get(r.breaker.key);
    if (first === undefined) {
      byKey.set(r.breaker.key, { name: e.name, failures: r.breaker.failures, cooldownMs: r.breaker.cooldownMs });
    } else if (first.failures !== r.breaker.failures || first.cooldownMs !== r.breaker.cooldownMs) {
      out.push(err('BREAKER_SETTINGS_CONFLICT', `task '${e.name}' shares circuit breaker ${r.breaker.key} with task '${first.name}' but sets other failures or cooldown; tasks sharing a breaker must agree (or give one another scope)`, own !== undefined ? [...e.path, 'circuitBreaker'] : [...e.path, 'name']));
    }
  }
  return out;
}

/** A `retry.when`: one expression, over attempt, params and run only. */
function checkRetryWhen(when: string, path: Array<string | number>, params: Record<string, unknown>, out: PendingDiagnostic[]): void {
  const scan = findTemplates(when);
  let source = when;
  if (scan.ok && scan.templates.length > 0) {
    const t = scan.templates[0]!;
    const whole = scan.templates.length === 1 && when.slice(0, t.start).trim() === '' && when.slice(t.start + t.source.length + 5).trim() === '';
    if (!whole) {
      out.push(err('WHEN_NOT_SINGLE_EXPRESSION', `retry.when must be one expression, such as "\${{ attempt.exitCode == 75 }}"; text around \${{ }} would make it always true`, path));
      return;
    }
    source = t.source;
  } else if (!scan.ok) {
    out.push(err('EXPR_SYNTAX', scan.message, path));
    return;
  }
  const shown = source.trim();
  const parsed = parseExpression(source, RETRY_EXPRESSION_CONTEXTS);
  if (!parsed.ok) {
    const unknownName = /unrecognized named-value/i.test(parsed.message);
    out.push(err(unknownName ? 'EXPR_UNKNOWN_NAME' : 'EXPR_SYNTAX', `in '${shown}': ${parsed.message}${unknownName ? '; a retry.when can read attempt, params and run' : ''}`, path));
    return;
  }
  for (const f of statusFunctionsIn(parsed.expr)) {
    out.push(err('EXPR_STATUS_FUNCTION_OUTSIDE_WHEN', `in '${shown}': ${f}() can only be used in a task's when, where it says how the tasks it needs ended`, path));
  }
  for (const ref of collectReferences(parsed.expr)) {
    const [first] = ref.segments;
    if (first === undefined) continue;
    if (ref.context === 'attempt' && !(ATTEMPT_PROPERTIES as readonly string[]).includes(first)) {
      const hint = closest(first, ATTEMPT_PROPERTIES);
      out.push(err('EXPR_UNKNOWN_PROPERTY', `in '${shown}': attempt has no property '${first}'${hint !== undefined ? `; did you mean '${hint}'?` : `; use ${ATTEMPT_PROPERTIES.join(', ')}`}`, path));
    } else if (ref.context === 'params' && !(first in params)) {
      const hint = closest(first, Object.keys(params));
      out.push(err('EXPR_UNKNOWN_PARAM', `in '${shown}': unknown param '${first}'${hint !== undefined ? `; did you mean '${hint}'?` : ''}`, path));
    } else if (ref.context === 'run' && !(RUN_READABLE as readonly string[]).includes(first)) {
      out.push(err('EXPR_UNKNOWN_PROPERTY', `in '${shown}': a retry.when cannot read run.${first}; use ${RUN_READABLE.join(', ')}`, path));
    }
  }
}

function err(code: PendingDiagnostic['code'], message: string, path: Array<string | number>, at: 'key' | 'value' = 'value'): PendingDiagnostic {
  return { severity: 'error', code, message, path, at };
}
