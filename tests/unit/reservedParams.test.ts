import { describe, expect, it } from 'vitest';
import { parseParamFlags } from '../../engine/cli/runCommands.js';
import { parseParams } from '../../engine/run/parseParams.js';
import { validateText } from '../../engine/spec/validateWorkflows.js';
import { workflow } from '../harness/gitRepo.js';

describe('param names that every object already has', () => {
  it('are refused by validation, each at its key', () => {
    const r = validateText('w.yaml', workflow('w', '  params:\n    __proto__: { type: string }\n    constructor: { type: string }\n    toString: { type: string }\n    ok: { type: string }\n  tasks:\n    - { name: a, run: echo }\n'));
    expect(r.diagnostics.filter((d) => d.code === 'PARAM_NAME_RESERVED').map((d) => [d.line, d.message])).toEqual([
      [7, "param name '__proto__' is reserved (every object has it); choose another name"],
      [8, "param name 'constructor' is reserved (every object has it); choose another name"],
      [9, "param name 'toString' is reserved (every object has it); choose another name"],
    ]);
  });

  it('are unknown params when given with --param, not silently accepted', () => {
    const wf = validateText('w.yaml', workflow('w', '  params:\n    q: { type: string, default: x }\n  tasks:\n    - { name: a, run: echo }\n')).workflow!;
    const given = parseParamFlags(['toString=1', '__proto__=2', 'constructor=3', 'q=fine']);
    expect(Object.getPrototypeOf(given)).toBe(Object.prototype);
    expect(() => parseParams(wf, given)).toThrow("unknown param 'toString' (declared: q); unknown param '__proto__' (declared: q); unknown param 'constructor' (declared: q)");
    expect(parseParams(wf, parseParamFlags(['q=fine']))).toEqual({ q: 'fine' });
  });
});
