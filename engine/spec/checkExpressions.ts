import { data } from '@actions/expressions';
import { Binary, Literal, type Expr } from '@actions/expressions/ast';
import type { TaskDag } from '../graph/buildDag.js';
import type { PendingDiagnostic } from './Diagnostic.js';
import { closest } from './describePath.js';
import {
  RUN_OUTCOME_PROPERTIES,
  RUN_PROPERTIES,
  TASK_PROPERTIES,
  collectReferences,
  findTemplates,
  inferKinds,
  parseExpression,
  staticReference,
  statusFunctionsIn,
  walkExpression,
  type Reference,
  type ValueKind,
} from './parseExpression.js';
import { asArray, asRecord, asString } from './shape.js';

export interface ExpressionScope {
  params: Record<string, unknown>;
  /** Declared outputs by task name, for every task that may be referenced. */
  outputs: Map<string, Set<string>>;
  mainDag: TaskDag;
  /**
   * `workflow:` tasks by name, with whether they wait for their child. The outputs of a child
   * that is waited for are declared in another file: reads of them are collected in
   * `childReads` for the check across files (validateWorkflows) instead of refused here.
   */
  children?: Map<string, { workflow: string; wait: boolean }>;
  childReads?: Array<{ task: string; output: string; path: Array<string | number> }>;
  /** onFailure task names: never run in a succeeded run, so spec.outputs cannot read them. */
  onFailureTasks?: Set<string>;
}

interface Site {
  task: Record<string, unknown>;
  taskName: string;
  path: Array<string | number>;
  /** onFailure and finally tasks may read every task and the run's outcome; main tasks only their upstream. */
  afterMain: boolean;
  /** Inside `compensate`, which runs after the task itself succeeded. */
  inCompensate: boolean;
  /** The task's `when`: the one place status functions mean something. */
  inWhen?: boolean;
  /** One of the workflow's spec.outputs, evaluated once the run has succeeded. */
  runOutput?: boolean;
}

/** Fields that hold names or fixed values, never templates. */
const NOT_TEMPLATED = new Set(['name', 'needs', 'pool', 'outputs', 'when', 'forEach', 'driver', 'agent', 'description']);

/**
 * Checks every `${{ }}` in a task: syntax, and that each named value exists and is readable
 * from where it is used (a task can only read outputs of tasks it needs, directly or not).
 */
export function checkTaskExpressions(
  task: Record<string, unknown>,
  taskPath: Array<string | number>,
  afterMain: boolean,
  scope: ExpressionScope,
): PendingDiagnostic[] {
  const out: PendingDiagnostic[] = [];
  const taskName = asString(task['name']) ?? '?';
  const site = (path: Array<string | number>, inCompensate: boolean): Site => ({ task, taskName, path, afterMain, inCompensate });

  for (const [key, value] of Object.entries(task)) {
    if (NOT_TEMPLATED.has(key)) continue;
    walkStrings(value, [...taskPath, key], (s, path) => {
      // A retry's when reads the failed attempt, not the task's inputs: checkRetryPolicy checks it.
      if (path[path.length - 1] === 'when' && path[path.length - 2] === 'retry') return;
      checkTemplatedString(s, site(path, key === 'compensate'), scope, out);
    });
  }

  const when = asString(task['when']);
  if (when !== undefined) {
    const parsed = singleExpression(when);
    if (parsed.kind === 'mixed') {
      out.push(err('WHEN_NOT_SINGLE_EXPRESSION', `when must be one expression, such as "\${{ tasks.build.status == 'succeeded' }}"; text around \${{ }} would make it always true`, [...taskPath, 'when']));
    } else {
      const path = [...taskPath, 'when'];
      const expr = checkExpressionSource(parsed.source, { ...site(path, false), inWhen: true }, scope, out, anchorOf(parsed));
      if (expr !== undefined && !afterMain && statusFunctionsIn(expr).length === 0) {
        for (const c of neverTrueComparisons(expr, taskName, scope)) {
          const anchor = anchorOf(parsed);
          out.push({
            severity: 'warning',
            code: 'WHEN_NEEDS_STATUS_FUNCTION',
            message: `in '${parsed.source.trim()}': ${c} is never true here: a when without a status function means success() && (...), so the task is skipped as soon as a task it needs does not succeed; add one, as in "\${{ !cancelled() && ${c} }}"`,
            path,
            ...(anchor !== undefined ? { offsetInValue: anchor } : {}),
          });
        }
      }
    }
  }

  const forEach = task['forEach'];
  if (typeof forEach === 'string') {
    const parsed = singleExpression(forEach);
    const path = [...taskPath, 'forEach'];
    if (parsed.kind !== 'template') {
      out.push(err('FOREACH_NOT_LIST', `forEach must be a list or a single \${{ }} expression that yields one, not the string '${forEach}'`, path));
    } else {
      const expr = checkExpressionSource(parsed.source, { ...site(path, false), task: { ...task, forEach: undefined } }, scope, out, anchorOf(parsed));
      if (expr !== undefined) {
        const kinds = inferKinds(expr, (ref) => kindOf(ref, scope));
        if (!kinds.has('list') && !kinds.has('unknown')) {
          out.push(err('FOREACH_NOT_LIST', `forEach expression '${parsed.source.trim()}' yields ${[...kinds].map(word).join(' or ')}, not a list`, path));
        }
      }
    }
  }
  return out;
}

function word(k: ValueKind): string {
  return k === 'object' ? 'a mapping' : k === 'null' ? 'null' : k === 'boolean' ? 'a boolean' : `a ${k}`;
}

function kindOf(ref: Reference, scope: ExpressionScope): ValueKind {
  const [first, second, third] = ref.segments;
  if (ref.context === 'params') {
    if (first === undefined) return 'object';
    if (second !== undefined) return 'unknown';
    const type = asString(asRecord(scope.params[first])?.['type']);
    const map: Record<string, ValueKind> = { string: 'string', number: 'number', integer: 'number', boolean: 'boolean', array: 'list', object: 'object' };
    return type !== undefined ? (map[type] ?? 'unknown') : 'unknown';
  }
  if (ref.context === 'tasks') {
    if (second === 'status') return 'string';
    if (second === 'exitCode' || second === 'attempts') return 'number';
    if (second === 'outputs' && third === undefined) return 'object';
    return 'unknown';
  }
  if (ref.context === 'run') return first === 'attempt' ? 'number' : first === 'failures' ? (ref.segments.length === 1 ? 'list' : 'unknown') : first === undefined ? 'object' : 'string';
  return 'unknown';
}

type Single = { kind: 'template'; source: string } | { kind: 'bare'; source: string } | { kind: 'mixed' };

/** `${{ x }}` alone (whitespace allowed around it), or a bare expression without braces. */
function singleExpression(s: string): Single {
  const scan = findTemplates(s);
  if (!scan.ok) return { kind: 'template', source: s.slice(s.indexOf('${{') + 3) };
  if (scan.templates.length === 0) return { kind: 'bare', source: s };
  const t = scan.templates[0]!;
  const whole = scan.templates.length === 1 && s.slice(0, t.start).trim() === '' && s.slice(t.start + 3 + t.source.length + 2).trim() === '';
  return whole ? { kind: 'template', source: t.source } : { kind: 'mixed' };
}

function anchorOf(single: Single): { needle: string; index: number; extra: number } | undefined {
  if (single.kind === 'template') return { needle: '${{', index: 0, extra: 3 };
  if (single.kind === 'bare') return { needle: single.source, index: 0, extra: 0 };
  return undefined;
}

function walkStrings(v: unknown, path: Array<string | number>, visit: (s: string, path: Array<string | number>) => void): void {
  if (typeof v === 'string') {
    if (v.includes('${{')) visit(v, path);
  } else if (Array.isArray(v)) {
    v.forEach((x, i) => walkStrings(x, [...path, i], visit));
  } else if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) walkStrings(x, [...path, k], visit);
  }
}

function checkTemplatedString(s: string, site: Site, scope: ExpressionScope, out: PendingDiagnostic[]): void {
  const scan = findTemplates(s);
  if (!scan.ok) {
    out.push({ ...err('EXPR_SYNTAX', scan.message, site.path), offsetInValue: { needle: '${{', index: countBefore(s, scan.start), extra: 0 } });
    return;
  }
  scan.templates.forEach((t) => {
    checkExpressionSource(t.source, site, scope, out, { needle: '${{', index: countBefore(s, t.start), extra: 3 });
  });
}

function countBefore(s: string, start: number): number {
  let n = 0;
  for (let i = s.indexOf('${{'); i !== -1 && i < start; i = s.indexOf('${{', i + 3)) n++;
  return n;
}

function checkExpressionSource(
  source: string,
  site: Site,
  scope: ExpressionScope,
  out: PendingDiagnostic[],
  anchor?: { needle: string; index: number; extra: number },
): Expr | undefined {
  const parsed = parseExpression(source);
  const shown = source.trim();
  if (!parsed.ok) {
    const at = anchor !== undefined ? { ...anchor, extra: anchor.extra + parsed.column } : { needle: source, index: 0, extra: parsed.column };
    // @actions/expressions keeps its error kind private: the message it builds from that kind
    // ("Unrecognized named-value: 'x'") is the one public trace of it.
    const code = /unrecognized named-value/i.test(parsed.message) ? 'EXPR_UNKNOWN_NAME' : 'EXPR_SYNTAX';
    const msg = code === 'EXPR_UNKNOWN_NAME'
      ? `in '${shown}': ${parsed.message}; expressions can read params, tasks, item and run`
      : `in '${shown}': ${parsed.message}`;
    out.push({ ...err(code, msg, site.path), offsetInValue: at });
    return undefined;
  }
  const lead = source.length - source.trimStart().length;
  const at = anchor !== undefined ? { ...anchor, extra: anchor.extra + lead } : { needle: source, index: 0, extra: lead };
  if (site.inWhen !== true) {
    for (const f of statusFunctionsIn(parsed.expr)) {
      out.push({ ...err('EXPR_STATUS_FUNCTION_OUTSIDE_WHEN', `in '${shown}': ${f}() can only be used in a task's when, where it says how the tasks it needs ended`, site.path), offsetInValue: at });
    }
  }
  for (const ref of collectReferences(parsed.expr)) {
    const problem = referenceProblem(ref, site, scope);
    if (problem !== undefined) out.push({ ...err(problem.code, `in '${shown}': ${problem.message}`, site.path), offsetInValue: at });
  }
  return parsed.expr;
}

function referenceProblem(ref: Reference, site: Site, scope: ExpressionScope): { code: PendingDiagnostic['code']; message: string } | undefined {
  const [first, second, third] = ref.segments;
  switch (ref.context) {
    case 'params': {
      if (first === undefined) return undefined;
      if (!(first in scope.params)) {
        const hint = closest(first, Object.keys(scope.params));
        return { code: 'EXPR_UNKNOWN_PARAM', message: `unknown param '${first}'${hint !== undefined ? `; did you mean '${hint}'?` : Object.keys(scope.params).length === 0 ? '; the workflow declares no params' : ''}` };
      }
      return undefined;
    }
    case 'tasks': {
      if (first === undefined) return undefined;
      if (!scope.outputs.has(first)) {
        const hint = closest(first, scope.outputs.keys());
        return { code: 'EXPR_UNKNOWN_TASK', message: `unknown task '${first}'${hint !== undefined ? `; did you mean '${hint}'?` : ''}` };
      }
      if (second !== undefined && !(TASK_PROPERTIES as readonly string[]).includes(second)) {
        return { code: 'EXPR_UNKNOWN_PROPERTY', message: `tasks.${first} has no property '${second}'; use ${TASK_PROPERTIES.join(', ')}` };
      }
      if (site.runOutput === true && scope.onFailureTasks?.has(first) === true) {
        return { code: 'RUN_OUTPUT_READS_ONFAILURE', message: `'${first}' is an onFailure task, which never runs in a run that succeeds, and outputs are only evaluated then` };
      }
      if (second === 'outputs' && third !== undefined) {
        const declared = scope.outputs.get(first) ?? new Set<string>();
        const child = scope.children?.get(first);
        if (child !== undefined && !declared.has(third)) {
          if (child.wait) scope.childReads?.push({ task: first, output: third, path: site.path });
          else return { code: 'EXPR_CHILD_NOT_WAITED', message: `task '${first}' runs workflow '${child.workflow}' with wait: false, so it succeeds as soon as the child has started: only runId and status are known then, not the child's output '${third}'; remove wait: false to read it` };
        } else if (!declared.has(third)) {
          const list = [...declared];
          return { code: 'EXPR_UNKNOWN_OUTPUT', message: `task '${first}' declares no output '${third}'${list.length > 0 ? ` (it declares ${list.join(', ')})` : '; list it under the task\'s outputs'}` };
        }
      }
      // In a cyclic graph "upstream" means nothing; the cycle itself is reported.
      if (!site.afterMain && scope.mainDag.cycles.length === 0) {
        const self = first === site.taskName;
        const readable = (self && site.inCompensate) || scope.mainDag.isUpstream(first, site.taskName);
        if (!readable) {
          const why = self ? 'a task cannot read its own status or outputs' : `task '${site.taskName}' does not need '${first}', directly or indirectly; add it to needs`;
          return { code: 'EXPR_NOT_UPSTREAM', message: `tasks.${first} is not available here: ${why}` };
        }
      }
      return undefined;
    }
    case 'item':
      if (site.task['forEach'] === undefined) {
        return { code: 'EXPR_ITEM_OUTSIDE_FOREACH', message: `'item' is only defined in a task with forEach` };
      }
      return undefined;
    case 'run':
      if (first !== undefined && !(RUN_PROPERTIES as readonly string[]).includes(first)) {
        const readable = RUN_PROPERTIES.filter((p) => site.afterMain || !(RUN_OUTCOME_PROPERTIES as readonly string[]).includes(p));
        return { code: 'EXPR_UNKNOWN_PROPERTY', message: `run has no property '${first}'; use ${readable.join(', ')}` };
      }
      if (first !== undefined && (RUN_OUTCOME_PROPERTIES as readonly string[]).includes(first) && site.runOutput === true) {
        return { code: 'EXPR_RUN_OUTCOME_TOO_EARLY', message: `run.${first} cannot be read in spec.outputs: they are evaluated only when the run succeeds, before its record is final` };
      }
      if (first !== undefined && (RUN_OUTCOME_PROPERTIES as readonly string[]).includes(first) && !site.afterMain) {
        return { code: 'EXPR_RUN_OUTCOME_TOO_EARLY', message: `run.${first} is only known once the main tasks are over: read it in onFailure or finally tasks` };
      }
      return undefined;
    default:
      return undefined;
  }
}

/**
 * Comparisons of an upstream task's status with anything but 'succeeded' in a main task's
 * `when` without a status function. Such a task only runs once everything upstream succeeded,
 * so the comparison is false whenever it is evaluated (GitHub Actions' classic trap with
 * `needs.x.result == 'failure'`). Strings compare case-insensitively, as in Actions.
 */
function neverTrueComparisons(expr: Expr, taskName: string, scope: ExpressionScope): string[] {
  const out: string[] = [];
  walkExpression(expr, (e) => {
    if (!(e instanceof Binary)) return;
    const op = e.operator.lexeme;
    for (const [ref, lit] of [[e.left, e.right], [e.right, e.left]] as const) {
      const r = staticReference(ref);
      if (r === undefined || r.context !== 'tasks' || r.dynamic || r.segments.length !== 2 || r.segments[1] !== 'status') continue;
      if (!(lit instanceof Literal) || !(lit.literal instanceof data.StringData)) continue;
      const value = lit.literal.value;
      const isSucceeded = value.toLowerCase() === 'succeeded';
      const upstream = scope.mainDag.cycles.length === 0 && scope.mainDag.isUpstream(r.segments[0]!, taskName);
      if (upstream && ((op === '==' && !isSucceeded) || (op === '!=' && isSucceeded))) out.push(`tasks.${r.segments[0]!}.status ${op} '${value}'`);
    }
  });
  return out;
}

function err(code: PendingDiagnostic['code'], message: string, path: Array<string | number>): PendingDiagnostic {
  return { severity: 'error', code, message, path };
}

/**
 * Checks the workflow's own `spec.outputs`: each value's `${{ }}` may read params, run
 * (not its outcome) and any main or finally task, since they are evaluated once the run succeeded.
 */
export function checkRunOutputs(outputs: Record<string, unknown>, scope: ExpressionScope): PendingDiagnostic[] {
  const out: PendingDiagnostic[] = [];
  for (const [name, value] of Object.entries(outputs)) {
    if (typeof value !== 'string') continue;
    const path = ['spec', 'outputs', name];
    checkTemplatedString(value, { task: {}, taskName: '', path, afterMain: true, inCompensate: false, runOutput: true }, scope, out);
  }
  return out;
}

/** Outputs a task may be read for: its declared ones (stdout capture too), plus runId and status of a child workflow. */
export function declaredOutputs(task: Record<string, unknown>): Set<string> {
  const out = new Set(asArray(task['outputs']).map((o) => (typeof o === 'string' ? o : asString(asRecord(o)?.['name']))).filter((n): n is string => n !== undefined));
  if (task['workflow'] !== undefined) {
    out.add('runId');
    out.add('status');
  }
  return out;
}
