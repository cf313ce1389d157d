import { describe, expect, it } from 'vitest';
import { parseParams } from '../../engine/run/parseParams.js';
import { compilePattern } from '../../engine/spec/compilePattern.js';
import { validateText } from '../../engine/spec/validateWorkflows.js';
import { workflow } from '../harness/gitRepo.js';

/**
 * Param patterns are user input: a pattern with catastrophic backtracking hung `validate` and
 * `caravan run` at 100% CPU. With RE2 they answer at once; the test would time out (30 s)
 * with the backtracking engine, which takes minutes on this input.
 */
const EVIL = '^(a+)+$';
const INPUT = `${'a'.repeat(40)}!`;

describe('param patterns are matched in linear time', () => {
  it('a catastrophic pattern answers at once in validation (a default) and at run time (--param)', () => {
    const text = workflow('evil', `  params:\n    p: { type: string, pattern: "${EVIL}", default: "${INPUT}" }\n  tasks:\n    - { name: a, run: echo }\n`);
    const r = validateText('evil.yaml', text);
    expect(r.diagnostics.map((d) => d.code)).toEqual(['PARAM_DEFAULT_INVALID']);
    const wf = validateText('evil.yaml', text.replace(`, default: "${INPUT}"`, '')).workflow!;
    expect(() => parseParams(wf, { p: INPUT })).toThrow(`param 'p' '${INPUT}' does not match the pattern ${EVIL}`);
    expect(parseParams(wf, { p: 'aaaa' })).toEqual({ p: 'aaaa' });
  });

  it('keeps JSON Schema semantics (a search unless anchored) and refuses what RE2 cannot do', () => {
    const q = compilePattern('^Q[1-4]$');
    const b = compilePattern('b');
    expect(q.ok && b.ok && [q.test('Q3'), q.test('Q5'), b.test('abc'), b.test('xyz')]).toEqual([true, false, true, false]);
    const look = compilePattern('^(?=a)a$');
    expect(look.ok ? 'compiled' : look.message).toMatch(/invalid or unsupported Perl syntax.*no lookaround/);
    const unicode = compilePattern('^\\p{L}+$');
    expect(unicode.ok && unicode.test('ünïcödé')).toBe(true);
  });
});
