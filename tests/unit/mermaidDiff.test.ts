import { describe, expect, it } from 'vitest';
import { mermaidDiff } from '../../engine/compile/mermaidDiff.js';
import type { TaskSpec, Workflow } from '../../engine/spec/Workflow.js';

function wf(tasks: TaskSpec[], onFailure?: TaskSpec[]): Workflow {
  return { apiVersion: 'caravan/v1', kind: 'Workflow', metadata: { name: 'w' }, spec: { tasks, ...(onFailure !== undefined ? { onFailure } : {}) } };
}

describe('mermaidDiff', () => {
  it('an unchanged workflow: nodes and edges, no highlight classes', () => {
    const w = wf([{ name: 'a', run: 'x' }, { name: 'b', needs: ['a'], run: 'y' }]);
    expect(mermaidDiff(w, w)).toBe('flowchart LR\n  t0["a"]\n  t1["b"]\n  t0 --> t1\n');
  });

  it('marks tasks added, changed and removed, and draws edges only the base had as dotted', () => {
    const base = wf([{ name: 'a', run: 'x' }, { name: 'b', needs: ['a'], run: 'y' }, { name: 'c', needs: ['b'], run: 'z' }]);
    const head = wf([{ name: 'a', run: 'x' }, { name: 'b', run: 'y2' }, { name: 'd', needs: ['a', 'b'], run: 'w' }], [{ name: 'alert', run: 'page' }]);
    const lines = mermaidDiff(base, head).trimEnd().split('\n');
    expect(lines.slice(0, 10)).toEqual([
      'flowchart LR',
      '  t0["a"]',
      '  t1["b"]:::changed',
      '  t2["d"]:::added',
      '  t3["alert"]:::added',
      '  t4["c"]:::removed',
      '  t0 --> t2',
      '  t1 --> t2',
      '  t0 -.-> t1',
      '  t1 -.-> t4',
    ]);
    expect(lines.slice(10).map((l) => l.trim().split(' ').slice(0, 2).join(' '))).toEqual(['classDef added', 'classDef changed', 'classDef removed']);
  });

  it('an added or a removed workflow: every task carries that mark', () => {
    const w = wf([{ name: 'a', run: 'x' }, { name: 'b', needs: ['a'], run: 'y' }]);
    expect(mermaidDiff(undefined, w)).toContain('  t0["a"]:::added\n  t1["b"]:::added\n  t0 --> t1\n');
    expect(mermaidDiff(w, undefined)).toContain('  t0["a"]:::removed\n  t1["b"]:::removed\n  t0 -.-> t1\n');
  });

  it('a name cannot break out of its label or inject diagram lines', () => {
    const out = mermaidDiff(undefined, wf([{ name: 'x"]\nclick t0 call evil()\n%%', run: 'x' }]));
    expect(out.split('\n')[1]).toBe('  t0["x#34;#93;#10;click t0 call evil#40;#41;#10;#37;#37;"]:::added');
    expect(out).not.toContain('\nclick');
  });
});
