import { Lexer, Parser, ExpressionError } from '@actions/expressions';
import {
  ContextAccess,
  FunctionCall,
  Grouping,
  IndexAccess,
  Literal,
  Logical,
  Unary,
  Binary,
  type Expr,
} from '@actions/expressions/ast';

/**
 * Caravan's `${{ }}` expressions use GitHub Actions' expression language, parsed and
 * evaluated by GitHub's own library: no eval, no Function, and only the named values below.
 * Hyphenated names work as in Actions (`tasks.fan-out.outputs.list`).
 */
export const EXPRESSION_CONTEXTS = ['params', 'tasks', 'item', 'run'] as const;
export type ExpressionContext = (typeof EXPRESSION_CONTEXTS)[number];

/** Properties of `tasks.<name>` and `run` that expressions may read. */
export const TASK_PROPERTIES = ['status', 'outputs', 'exitCode', 'attempts'] as const;
export const RUN_PROPERTIES = ['id', 'workflow', 'commit', 'trigger', 'startedAt', 'attempt', 'status', 'failures'] as const;
/** Properties of `run` known only once the main tasks are over: in onFailure and finally tasks. */
export const RUN_OUTCOME_PROPERTIES = ['status', 'failures'] as const;

/**
 * A `retry.when` is decided after an attempt failed, before the next one: it reads that
 * attempt, the params and the run, and nothing a task's commands read (tasks, item).
 */
export const RETRY_EXPRESSION_CONTEXTS = ['attempt', 'params', 'run'] as const;
/** Properties of `attempt` in a `retry.when`. */
export const ATTEMPT_PROPERTIES = ['number', 'exitCode', 'error', 'failure'] as const;

/**
 * GitHub Actions' status check functions. They say how the task's needs ended, so they mean
 * something only in a task's `when`, decided before the task starts; elsewhere validation
 * refuses them. The parser knows them everywhere so that the refusal can name the function.
 */
export const STATUS_FUNCTIONS = ['success', 'failure', 'always', 'cancelled'] as const;
export type StatusFunction = (typeof STATUS_FUNCTIONS)[number];
const STATUS_FUNCTION_INFO = STATUS_FUNCTIONS.map((name) => ({ name, minArgs: 0, maxArgs: 0 }));

export interface Template {
  /** The expression between `${{` and `}}`, untrimmed. */
  source: string;
  /** Offset of `${{` in the string. */
  start: number;
}

export type TemplateScan = { ok: true; templates: Template[] } | { ok: false; message: string; start: number };

/** Finds `${{ ... }}` templates in a string, honouring single-quoted strings inside them. */
export function findTemplates(s: string): TemplateScan {
  const templates: Template[] = [];
  let i = s.indexOf('${{');
  while (i !== -1) {
    let j = i + 3;
    let inString = false;
    let end = -1;
    while (j < s.length) {
      const ch = s[j];
      if (inString) {
        if (ch === "'") {
          if (s[j + 1] === "'") j++;
          else inString = false;
        }
      } else if (ch === "'") {
        inString = true;
      } else if (ch === '}' && s[j + 1] === '}') {
        end = j;
        break;
      }
      j++;
    }
    if (end === -1) return { ok: false, message: "unterminated '${{': missing '}}'", start: i };
    templates.push({ source: s.slice(i + 3, end), start: i });
    i = s.indexOf('${{', end + 2);
  }
  return { ok: true, templates };
}

export type ParsedExpression = { ok: true; expr: Expr } | { ok: false; message: string; column: number };

/** Parses one expression; `contexts` are the named values it may read (a task's, by default). */
export function parseExpression(source: string, contexts: readonly string[] = EXPRESSION_CONTEXTS): ParsedExpression {
  if (source.trim() === '') return { ok: false, message: 'empty expression', column: 0 };
  try {
    const { tokens } = new Lexer(source).lex();
    const expr = new Parser(tokens, [...contexts], STATUS_FUNCTION_INFO).parse();
    return { ok: true, expr };
  } catch (err) {
    if (err instanceof ExpressionError) {
      return { ok: false, message: lowerFirst(err.message), column: err.pos.column };
    }
    // The lexer throws plain Errors that embed a 1-based position and the whole input.
    const text = err instanceof Error ? err.message : String(err);
    const m = /^(.*?)\. Located at position (\d+) within expression/s.exec(text);
    if (m !== null) return { ok: false, message: lowerFirst(m[1]!), column: Number(m[2]) - 1 };
    return { ok: false, message: lowerFirst(text), column: 0 };
  }
}

/**
 * A read of a named value: `tasks.build.outputs.image` is context 'tasks' with segments
 * ['build', 'outputs', 'image']. A dynamic index (`tasks[params.t]`) ends the static path.
 */
export interface Reference {
  context: string;
  segments: string[];
  dynamic: boolean;
}

export function collectReferences(expr: Expr): Reference[] {
  const out: Reference[] = [];
  visit(expr, out);
  return out;
}

function staticPath(e: Expr): Reference | undefined {
  if (e instanceof ContextAccess) return { context: e.name.lexeme.toLowerCase(), segments: [], dynamic: false };
  if (e instanceof IndexAccess) {
    const base = staticPath(e.expr);
    if (base === undefined || base.dynamic) return base;
    if (e.index instanceof Literal && e.index.literal.primitive) {
      return { ...base, segments: [...base.segments, e.index.literal.coerceString()] };
    }
    return { ...base, dynamic: true };
  }
  return undefined;
}

function visit(e: Expr, out: Reference[]): void {
  if (e instanceof ContextAccess || e instanceof IndexAccess) {
    const ref = staticPath(e);
    if (ref !== undefined) out.push(ref);
    if (e instanceof IndexAccess) {
      visitInner(e.expr, out);
      visit(e.index, out);
    }
    return;
  }
  if (e instanceof Unary) visit(e.expr, out);
  else if (e instanceof Binary) {
    visit(e.left, out);
    visit(e.right, out);
  } else if (e instanceof Logical) e.args.forEach((a) => visit(a, out));
  else if (e instanceof Grouping) visit(e.group, out);
  else if (e instanceof FunctionCall) e.args.forEach((a) => visit(a, out));
}

/** Calls `visit` on every node of an expression, parents before children. */
export function walkExpression(e: Expr, visit: (e: Expr) => void): void {
  visit(e);
  if (e instanceof FunctionCall || e instanceof Logical) e.args.forEach((a) => walkExpression(a, visit));
  else if (e instanceof Unary) walkExpression(e.expr, visit);
  else if (e instanceof Grouping) walkExpression(e.group, visit);
  else if (e instanceof Binary) {
    walkExpression(e.left, visit);
    walkExpression(e.right, visit);
  } else if (e instanceof IndexAccess) {
    walkExpression(e.expr, visit);
    walkExpression(e.index, visit);
  }
}

/** The status functions an expression calls (lower case, each once, in order of appearance). */
export function statusFunctionsIn(expr: Expr): StatusFunction[] {
  const found = new Set<StatusFunction>();
  walkExpression(expr, (e) => {
    if (!(e instanceof FunctionCall)) return;
    const name = e.functionName.lexeme.toLowerCase();
    if ((STATUS_FUNCTIONS as readonly string[]).includes(name)) found.add(name as StatusFunction);
  });
  return [...found];
}

/** The named value an access chain reads (`tasks.a.status`), or undefined for anything else. */
export function staticReference(e: Expr): Reference | undefined {
  return staticPath(e);
}

/** Sub-expressions of an index chain other than the chain itself (e.g. a dynamic index). */
function visitInner(e: Expr, out: Reference[]): void {
  if (e instanceof IndexAccess) {
    visitInner(e.expr, out);
    visit(e.index, out);
  } else if (!(e instanceof ContextAccess)) {
    visit(e, out);
  }
}

export type ValueKind = 'list' | 'string' | 'number' | 'boolean' | 'null' | 'object' | 'unknown';

/**
 * What an expression can evaluate to, as far as is known before the run. Used to reject a
 * `forEach` over something that can never be a list.
 */
export function inferKinds(e: Expr, kindOf: (ref: Reference) => ValueKind): Set<ValueKind> {
  if (e instanceof Literal) {
    const k = e.literal.kind as number;
    // Kind enum of @actions/expressions: String 0, Array 1, Dictionary 2, Boolean 3, Number 4, Null 6.
    const map: Record<number, ValueKind> = { 0: 'string', 1: 'list', 2: 'object', 3: 'boolean', 4: 'number', 5: 'object', 6: 'null' };
    return new Set([map[k] ?? 'unknown']);
  }
  if (e instanceof Grouping) return inferKinds(e.group, kindOf);
  if (e instanceof Unary || e instanceof Binary) return new Set(['boolean']);
  if (e instanceof Logical) {
    // `a && b` and `a || b` yield one of their operands, as in Actions.
    const s = new Set<ValueKind>(['boolean']);
    for (const a of e.args) for (const k of inferKinds(a, kindOf)) s.add(k);
    return s;
  }
  if (e instanceof FunctionCall) {
    const name = e.functionName.lexeme.toLowerCase();
    if (name === 'fromjson' || name === 'case') return new Set(['unknown']);
    if (name === 'contains' || name === 'startswith' || name === 'endswith') return new Set(['boolean']);
    if ((STATUS_FUNCTIONS as readonly string[]).includes(name)) return new Set(['boolean']);
    return new Set(['string']);
  }
  if (e instanceof ContextAccess || e instanceof IndexAccess) {
    const ref = staticPath(e);
    return new Set([ref === undefined || ref.dynamic ? 'unknown' : kindOf(ref)]);
  }
  return new Set(['unknown']);
}

function lowerFirst(s: string): string {
  return s.length > 0 ? s[0]!.toLowerCase() + s.slice(1) : s;
}
