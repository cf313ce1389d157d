import { describe, expect, it } from 'vitest';
import { buildDag } from '../../engine/graph/buildDag.js';

describe('buildDag', () => {
  it('groups tasks into topological generations', () => {
    const dag = buildDag([
      { name: 'ingest' },
      { name: 'a', needs: ['ingest'] },
      { name: 'b', needs: ['ingest'] },
      { name: 'merge', needs: ['a', 'b'] },
      { name: 'side' },
    ]);
    expect(dag.cycles).toEqual([]);
    expect(dag.generations).toEqual([['ingest', 'side'], ['a', 'b'], ['merge']]);
  });

  it('reports a cycle as a closed path in run order', () => {
    const dag = buildDag([
      { name: 'a', needs: ['c'] },
      { name: 'b', needs: ['a'] },
      { name: 'c', needs: ['b'] },
      { name: 'd', needs: ['a'] },
    ]);
    expect(dag.cycles).toEqual([['a', 'b', 'c', 'a']]);
    expect(dag.generations).toEqual([]);
  });

  it('reports separate cycles separately, once each', () => {
    const dag = buildDag([
      { name: 'a', needs: ['b'] },
      { name: 'b', needs: ['a'] },
      { name: 'x', needs: ['y'] },
      { name: 'y', needs: ['x'] },
    ]);
    expect(dag.cycles).toEqual([['a', 'b', 'a'], ['x', 'y', 'x']]);
  });

  it('ignores needs on unknown tasks (the validator reports them)', () => {
    const dag = buildDag([{ name: 'a', needs: ['ghost'] }]);
    expect(dag.generations).toEqual([['a']]);
  });

  it('answers upstream questions transitively', () => {
    const dag = buildDag([{ name: 'a' }, { name: 'b', needs: ['a'] }, { name: 'c', needs: ['b'] }, { name: 'z' }]);
    expect(dag.isUpstream('a', 'c')).toBe(true);
    expect(dag.isUpstream('c', 'a')).toBe(false);
    expect(dag.isUpstream('z', 'c')).toBe(false);
    expect(dag.isUpstream('a', 'a')).toBe(false);
  });

  it('handles a 20,000-task chain without recursion limits', () => {
    const n = 20_000;
    const nodes = Array.from({ length: n }, (_, i) => ({ name: `t${i}`, needs: i === 0 ? [] : [`t${i - 1}`] }));
    nodes[0]!.needs = [`t${n - 1}`];
    const dag = buildDag(nodes);
    expect(dag.cycles).toHaveLength(1);
    expect(dag.cycles[0]).toHaveLength(n + 1);
  });
});
