import { describe, expect, it } from 'vitest';
import { evaluateCondition, evaluateExpression } from '../../engine/run/evaluate.js';
import { collectReferences, findTemplates, inferKinds, parseExpression, statusFunctionsIn, type ValueKind } from '../../engine/spec/parseExpression.js';

function refs(src: string): string[] {
  const p = parseExpression(src);
  if (!p.ok) throw new Error(p.message);
  return collectReferences(p.expr).map((r) => `${r.context}${r.segments.map((s) => '.' + s).join('')}${r.dynamic ? '[*]' : ''}`);
}

function kinds(src: string, kindOf: ValueKind = 'unknown'): string[] {
  const p = parseExpression(src);
  if (!p.ok) throw new Error(p.message);
  return [...inferKinds(p.expr, () => kindOf)].sort();
}

describe('findTemplates', () => {
  it('finds every template with its offset', () => {
    const s = 'a ${{ params.x }} b ${{ item }}';
    const scan = findTemplates(s);
    expect(scan).toEqual({ ok: true, templates: [{ source: ' params.x ', start: 2 }, { source: ' item ', start: 20 }] });
  });

  it("does not end a template at '}}' inside a quoted string", () => {
    const scan = findTemplates("${{ format('{0}}}', params.x) }}");
    expect(scan.ok && scan.templates[0]?.source).toBe(" format('{0}}}', params.x) ");
  });

  it('reports an unterminated template with its offset', () => {
    expect(findTemplates('echo ${{ params.x')).toEqual({ ok: false, message: "unterminated '${{': missing '}}'", start: 5 });
  });

  it('returns nothing for plain strings', () => {
    expect(findTemplates('echo $HOME ${NOT_A_TEMPLATE}')).toEqual({ ok: true, templates: [] });
  });
});

describe('parseExpression', () => {
  it('reads hyphenated task names as GitHub Actions does', () => {
    expect(refs('tasks.fan-out.outputs.list')).toEqual(['tasks.fan-out.outputs.list']);
  });

  it('collects every reference, including inside function calls and comparisons', () => {
    expect(refs("contains(tasks.a.outputs.x, params.p) && run.id != ''")).toEqual(['tasks.a.outputs.x', 'params.p', 'run.id']);
  });

  it('marks a dynamic index and still collects the index expression', () => {
    expect(refs('tasks[params.t].status')).toEqual(['tasks[*]', 'params.t']);
  });

  it('rejects arithmetic, assignment and unknown names with a column', () => {
    expect(parseExpression('1 + 2')).toEqual({ ok: false, message: "unexpected symbol: '+'", column: 2 });
    expect(parseExpression('a = 1')).toMatchObject({ ok: false });
    expect(parseExpression('process.env.HOME')).toEqual({ ok: false, message: "unrecognized named-value: 'process'", column: 0 });
    expect(parseExpression('constructor')).toMatchObject({ ok: false });
  });

  it('rejects unknown functions and empty expressions', () => {
    expect(parseExpression('eval(params.x)')).toEqual({ ok: false, message: "unrecognized function: 'eval'", column: 0 });
    expect(parseExpression('   ')).toEqual({ ok: false, message: 'empty expression', column: 0 });
  });
});

describe('inferKinds', () => {
  it('knows literals, comparisons and functions', () => {
    expect(kinds("'a'")).toEqual(['string']);
    expect(kinds('1 == 1')).toEqual(['boolean']);
    expect(kinds('toJSON(params.x)')).toEqual(['string']);
    expect(kinds('fromJSON(params.x)')).toEqual(['unknown']);
  });

  it('asks about named values and merges both sides of || and &&', () => {
    expect(kinds('params.x', 'list')).toEqual(['list']);
    expect(kinds("params.x || 'none'", 'list')).toEqual(['boolean', 'list', 'string']);
  });
});

describe('status functions', () => {
  const ctx = { params: {}, tasks: {}, run: {} };

  it('parse (any case, no arguments) and are found wherever they stand', () => {
    const p = parseExpression("!Failure() && (always() || contains(format('{0}', cancelled()), 'x')) && !failure()");
    expect(p.ok && statusFunctionsIn(p.expr)).toEqual(['failure', 'always', 'cancelled']);
    expect(parseExpression('success(1)')).toMatchObject({ ok: false, message: "too many parameters supplied: 'success'" });
    expect(kinds('success()')).toEqual(['boolean']);
  });

  it('take the values the scheduler gives them in when, and fail anywhere else', () => {
    const status = { success: false, failure: false, cancelled: false };
    expect(evaluateCondition('${{ !failure() && !cancelled() }}', ctx, status)).toBe(true);
    expect(evaluateCondition('success()', ctx, status)).toBe(false);
    expect(evaluateCondition('always()', ctx, { success: false, failure: true, cancelled: true })).toBe(true);
    expect(() => evaluateExpression('success()', ctx)).toThrow("expression 'success()': success() can only be used in a task's when");
  });
});

describe('toJSON', () => {
  it('gives compact one-line JSON (Actions pretty-prints), newlines in strings escaped', () => {
    const ctx = { params: { a: [1, 'x', { b: null, c: true }], s: 'two\nlines' }, tasks: {}, run: {} };
    expect(evaluateExpression('toJSON(params.a)', ctx)).toBe('[1,"x",{"b":null,"c":true}]');
    expect(evaluateExpression('toJSON(params)', ctx)).toBe('{"a":[1,"x",{"b":null,"c":true}],"s":"two\\nlines"}');
    expect(evaluateExpression('ToJson(params.nothing)', ctx)).toBe('null');
  });
});
