import { Evaluator, data } from '@actions/expressions';
import type { FunctionDefinition } from '@actions/expressions/funcs/info';
import { CaravanError } from '../errors/CaravanError.js';
import { RETRY_EXPRESSION_CONTEXTS, STATUS_FUNCTIONS, findTemplates, parseExpression, type StatusFunction } from '../spec/parseExpression.js';

/** What an expression may read at run time: nothing else exists for it. */
export interface ExpressionContext {
  params: Record<string, unknown>;
  tasks: Record<string, { status: string; outputs: Record<string, unknown>; exitCode?: number; attempts: number }>;
  item?: unknown;
  run: Record<string, unknown>;
  /** Only in a `retry.when`: the attempt that just failed. */
  attempt?: { number: number; exitCode: number | null; error: string; failure: string };
  /** Values of secret params the attempt can read: the runner masks them wherever it reports. */
  secrets?: string[];
}

/** An expression that cannot be evaluated at run time; the task it belongs to fails with it. */
export class ExpressionEvaluationError extends CaravanError {
  constructor(readonly expression: string, message: string, cause?: unknown) {
    super('EXPRESSION_FAILED', `expression '${expression.trim()}': ${message}`, { data: { expression }, cause });
    this.name = 'ExpressionEvaluationError';
  }
}

/**
 * What the status functions return for one task's `when` (see docs/expressions.md): the
 * scheduler works them out from how the task's needs ended and how the run stands.
 */
export type StatusValues = Record<Exclude<StatusFunction, 'always'>, boolean>;

function statusFunction(name: StatusFunction, status: StatusValues | undefined): FunctionDefinition {
  return {
    name,
    minArgs: 0,
    maxArgs: 0,
    call: () => {
      // Validation refuses them outside `when`; an expression that got here anyway fails its task.
      if (status === undefined) throw new Error(`${name}() can only be used in a task's when`);
      return new data.BooleanData(name === 'always' ? true : status[name]);
    },
  };
}

/**
 * toJSON as compact one-line JSON, where Actions pretty-prints: a value lands in an env var, an
 * argument, a request body or a `key=value` line of $CARAVAN_OUTPUTS, where a newline would
 * split it, and in a log line.
 */
const TO_JSON: FunctionDefinition = {
  name: 'toJSON',
  minArgs: 1,
  maxArgs: 1,
  call: (value) => new data.StringData(JSON.stringify(value, data.replacer)),
};

function functionsFor(status: StatusValues | undefined): Map<string, FunctionDefinition> {
  const m = new Map<string, FunctionDefinition>([['tojson', TO_JSON]]);
  for (const name of STATUS_FUNCTIONS) m.set(name, statusFunction(name, status));
  return m;
}

const OUTSIDE_WHEN = functionsFor(undefined);

function toData(value: unknown): data.ExpressionData {
  return JSON.parse(JSON.stringify(value ?? null), data.reviver) as data.ExpressionData;
}

function fromData(d: data.ExpressionData): unknown {
  return JSON.parse(JSON.stringify(d, data.replacer)) as unknown;
}

function contextData(ctx: ExpressionContext): data.Dictionary {
  const dict = new data.Dictionary();
  dict.add('params', toData(ctx.params));
  dict.add('tasks', toData(ctx.tasks));
  dict.add('item', toData(ctx.item));
  dict.add('run', toData(ctx.run));
  if (ctx.attempt !== undefined) dict.add('attempt', toData(ctx.attempt));
  return dict;
}

/**
 * Evaluates one expression (the text inside `${{ }}`) to a plain value. `status` gives the
 * status functions their values; without it (anywhere but `when`) calling one fails.
 */
export function evaluateExpression(source: string, ctx: ExpressionContext, status?: StatusValues): unknown {
  const parsed = ctx.attempt !== undefined ? parseExpression(source, RETRY_EXPRESSION_CONTEXTS) : parseExpression(source);
  if (!parsed.ok) throw new ExpressionEvaluationError(source, parsed.message);
  try {
    return fromData(new Evaluator(parsed.expr, contextData(ctx), status === undefined ? OUTSIDE_WHEN : functionsFor(status)).evaluate());
  } catch (e) {
    throw new ExpressionEvaluationError(source, e instanceof Error ? e.message : String(e), e);
  }
}

/** Actions truthiness: false, 0, '', null and undefined are false. */
export function truthy(v: unknown): boolean {
  return !(v === false || v === 0 || v === '' || v === null || v === undefined || (typeof v === 'number' && Number.isNaN(v)));
}

/**
 * A `when` condition, with or without `${{ }}`, as written: the implied `success() &&` of a
 * condition without a status function is the scheduler's business, not this function's.
 */
export function evaluateCondition(when: string, ctx: ExpressionContext, status: StatusValues = { success: true, failure: false, cancelled: false }): boolean {
  const scan = findTemplates(when);
  if (scan.ok && scan.templates.length === 1) return truthy(evaluateExpression(scan.templates[0]!.source, ctx, status));
  return truthy(evaluateExpression(when, ctx, status));
}

/** A value that is exactly one `${{ }}` keeps its type (lists for forEach); otherwise undefined. */
export function evaluateSingle(s: string, ctx: ExpressionContext): unknown {
  const scan = findTemplates(s);
  if (!scan.ok) throw new ExpressionEvaluationError(s, scan.message);
  const t = scan.templates[0];
  if (scan.templates.length !== 1 || t === undefined) throw new ExpressionEvaluationError(s, 'expected a single ${{ }} expression');
  return evaluateExpression(t.source, ctx);
}

/** Replaces every `${{ }}` in a string by its value: scalars as text, lists and maps as JSON. */
export function interpolate(s: string, ctx: ExpressionContext): string {
  if (!s.includes('${{')) return s;
  const scan = findTemplates(s);
  if (!scan.ok) throw new ExpressionEvaluationError(s, scan.message);
  let out = '';
  let last = 0;
  for (const t of scan.templates) {
    out += s.slice(last, t.start);
    const v = evaluateExpression(t.source, ctx);
    out += v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v);
    last = t.start + 3 + t.source.length + 2;
  }
  return out + s.slice(last);
}

/** Interpolates every string inside a value (args lists, env maps, request bodies). */
export function interpolateDeep<T>(value: T, ctx: ExpressionContext): T {
  if (typeof value === 'string') return interpolate(value, ctx) as T;
  if (Array.isArray(value)) return value.map((v: unknown) => interpolateDeep(v, ctx)) as T;
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = interpolateDeep(v, ctx);
    return out as T;
  }
  return value;
}
