import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as YAML from 'yaml';
import { validateSource, validateText, type FileResult } from '../../engine/spec/validateWorkflows.js';

function wellFormed(r: FileResult): void {
  for (const d of r.diagnostics) {
    expect(d.line).toBeGreaterThanOrEqual(1);
    expect(d.col).toBeGreaterThanOrEqual(1);
    expect(d.code).toMatch(/^[A-Z][A-Z_]+$/);
    expect(d.message.length).toBeGreaterThan(0);
  }
  // A result either carries a workflow or explains why not.
  expect(r.workflow !== undefined || r.diagnostics.some((d) => d.severity === 'error')).toBe(true);
}

const example = readFileSync(fileURLToPath(new URL('../../workflows/quarterly-report.yaml', import.meta.url)), 'utf8');

describe('validate never throws', () => {
  it('on random bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) => wellFormed(validateSource('r.yaml', bytes))), { numRuns: 300 });
  });

  it('on random YAML documents', () => {
    fc.assert(fc.property(fc.jsonValue({ maxDepth: 6 }), (v) => wellFormed(validateText('r.yaml', YAML.stringify(v)))), { numRuns: 300 });
  });

  it('on random workflow-shaped documents', () => {
    const task = fc.record({
      name: fc.oneof(fc.constantFrom('a', 'b', 'c', 'a/b', '..', ''), fc.string()),
      needs: fc.option(fc.array(fc.oneof(fc.constantFrom('a', 'b', 'c'), fc.anything()), { maxLength: 3 })),
      run: fc.option(fc.oneof(fc.constantFrom('${{ tasks.a.outputs.x }}', '${{', '${{ item }}', '${{ params.p || }}'), fc.string())),
      forEach: fc.option(fc.oneof(fc.string(), fc.array(fc.integer()), fc.anything())),
      when: fc.option(fc.oneof(fc.constantFrom("tasks.b.status == 'x'", '${{ }}'), fc.anything())),
      pool: fc.option(fc.oneof(fc.constant('p'), fc.anything())),
    }, { requiredKeys: [] });
    const doc = fc.record({
      apiVersion: fc.oneof(fc.constant('caravan/v1'), fc.anything()),
      kind: fc.constant('Workflow'),
      metadata: fc.oneof(fc.record({ name: fc.string() }), fc.anything()),
      spec: fc.oneof(
        fc.record({
          tasks: fc.oneof(fc.array(task, { maxLength: 6 }), fc.anything()),
          onFailure: fc.option(fc.array(task, { maxLength: 2 })),
          pools: fc.option(fc.dictionary(fc.string(), fc.anything())),
          params: fc.option(fc.dictionary(fc.string(), fc.record({ type: fc.string(), default: fc.anything() }))),
          triggers: fc.option(fc.array(fc.anything(), { maxLength: 2 })),
        }, { requiredKeys: [] }),
        fc.anything(),
      ),
    }, { requiredKeys: [] });
    fc.assert(fc.property(doc, (d) => wellFormed(validateText('r.yaml', YAML.stringify(d)))), { numRuns: 300 });
  });

  it('on random edits of a valid workflow', () => {
    const edit = fc.tuple(fc.nat(example.length), fc.nat(20), fc.string({ maxLength: 10 }));
    fc.assert(
      fc.property(fc.array(edit, { minLength: 1, maxLength: 4 }), (edits) => {
        let text = example;
        for (const [at, del, ins] of edits) text = text.slice(0, at) + ins + text.slice(at + del);
        wellFormed(validateText('r.yaml', text));
      }),
      { numRuns: 300 },
    );
  });
});

describe('random DAG shapes', () => {
  /** needs[i] lists earlier tasks only, so the graph is acyclic by construction. */
  const acyclic = fc.integer({ min: 1, max: 40 }).chain((n) =>
    fc.tuple(...Array.from({ length: n }, (_, i) => fc.uniqueArray(fc.nat(Math.max(0, i - 1)), { maxLength: i === 0 ? 0 : 3 }))),
  );

  function render(needs: number[][], extraEdge?: [number, number]): string {
    const tasks = needs.map((ns, i) => {
      const all = extraEdge !== undefined && extraEdge[0] === i ? [...ns, extraEdge[1]] : ns;
      const reads = ns.length > 0 ? ` \${{ tasks.t${ns[0]}.outputs.out }}` : '';
      return `    - name: t${i}\n      run: echo${reads}\n      outputs: [out]\n` + (all.length > 0 ? `      needs: [${[...new Set(all)].map((j) => `t${j}`).join(', ')}]\n` : '');
    });
    return `apiVersion: caravan/v1\nkind: Workflow\nmetadata:\n  name: g\nspec:\n  tasks:\n${tasks.join('')}`;
  }

  it('an acyclic DAG validates clean and every task lands in a generation after its needs', () => {
    fc.assert(
      fc.property(acyclic, (needs) => {
        const r = validateText('g.yaml', render(needs));
        expect(r.diagnostics).toEqual([]);
        const gen = new Map<string, number>();
        r.dag!.generations.forEach((g, i) => g.forEach((n) => gen.set(n, i)));
        expect(gen.size).toBe(needs.length);
        needs.forEach((ns, i) => ns.forEach((j) => expect(gen.get(`t${j}`)!).toBeLessThan(gen.get(`t${i}`)!)));
      }),
      { numRuns: 200 },
    );
  });

  it('a back edge always yields a DAG_CYCLE naming a closed path', () => {
    fc.assert(
      fc.property(acyclic.filter((n) => n.length >= 2), fc.nat(), (needs, seed) => {
        // Make the first task need the last one, closing a cycle through any path between them.
        const last = needs.length - 1;
        const chain = needs.map((ns, i) => (i === 0 ? ns : [...new Set([...ns, i - 1])]));
        const r = validateText('g.yaml', render(chain, [0, last]));
        const cycles = r.diagnostics.filter((d) => d.code === 'DAG_CYCLE');
        expect(cycles.length, String(seed)).toBeGreaterThanOrEqual(1);
        for (const c of cycles) {
          const path = c.message.replace('dependency cycle: ', '').split(' -> ');
          expect(path[0]).toBe(path[path.length - 1]);
        }
      }),
      { numRuns: 100 },
    );
  });
});
