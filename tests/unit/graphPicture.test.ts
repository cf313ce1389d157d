import { execFileSync, spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { runMarks } from '../../engine/cli/graphCommand.js';
import { diffGraphPicture, renderWorkflowDiff, summarizePictureDiff } from '../../engine/compile/diffGraphPicture.js';
import { buildGraphPicture, pictureStatus, type GraphPicture, type RunMark } from '../../engine/compile/GraphPicture.js';
import { renderDot } from '../../engine/compile/renderDot.js';
import { renderGraphText } from '../../engine/compile/renderGraphText.js';
import { mermaidText, renderMermaid } from '../../engine/compile/renderMermaid.js';
import { buildRunPlan } from '../../engine/run/RunPlan.js';
import type { RunSnapshot } from '../../engine/run/RunSnapshot.js';
import { validateText } from '../../engine/spec/validateWorkflows.js';
import type { Workflow } from '../../engine/spec/Workflow.js';

/**
 * Golden files: tests/fixtures/graph/<workflow>.{mmd,dot,txt} are what `caravan graph` prints
 * for the examples and the Argo ports. After an intended change, regenerate them with
 * `node bin/caravan.js graph <file> -f <format> > tests/fixtures/graph/<name>.<ext>` and
 * review the diff: it is the change a reader of the pictures sees.
 */

const root = fileURLToPath(new URL('../../', import.meta.url));
const SOURCES = ['workflows/order-saga.yaml', 'workflows/quarterly-report.yaml', 'workflows/release-approval.yaml', 'workflows/research-supervisor.yaml', 'workflows/thumbnail-swarm.yaml', 'workflows/nightly-rollup.yaml', 'tests/fixtures/argo/coinflip.yaml', 'tests/fixtures/argo/exit-handlers.yaml', 'tests/fixtures/argo/loops-param-result.yaml'];

async function load(file: string): Promise<Workflow> {
  const r = validateText(file, await readFile(`${root}${file}`, 'utf8'));
  expect(r.diagnostics.filter((d) => d.severity === 'error')).toEqual([]);
  return r.workflow!;
}

const wf = (tasks: string, rest = ''): Workflow => {
  const r = validateText('t.yaml', `apiVersion: caravan/v1\nkind: Workflow\nmetadata:\n  name: demo\nspec:\n${rest}  tasks:\n${tasks}`);
  expect(r.diagnostics.filter((d) => d.severity === 'error')).toEqual([]);
  return r.workflow!;
};

// Graphviz checks the DOT output; .ci/run installs it, so under CI its absence fails the tests.
const hasDot = spawnSync('dot', ['-V']).status === 0 || process.env['CI'] === 'true';

/** Graphviz's own reading of a DOT text: its nodes' labels (as written, escapes undone by its parser) and its edges. */
function graphviz(dot: string): { labels: Record<string, string>; edges: Array<[string, string]>; clusters: string[] } {
  const out = execFileSync('dot', ['-Tjson'], { input: dot, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
  const g = JSON.parse(out) as { objects?: Array<{ _gvid: number; name: string; label?: string; nodes?: number[] }>; edges?: Array<{ tail: number; head: number }> };
  const objects = g.objects ?? [];
  const byId = new Map(objects.map((o) => [o._gvid, o.name]));
  return {
    labels: Object.fromEntries(objects.filter((o) => o.nodes === undefined).map((o) => [o.name, o.label ?? ''])),
    edges: (g.edges ?? []).map((e) => [byId.get(e.tail)!, byId.get(e.head)!]),
    clusters: objects.filter((o) => o.nodes !== undefined).map((o) => o.name),
  };
}

/** The lines a Mermaid flowchart of ours may hold; anything else means text escaped its label. */
const MERMAID_LINE = [
  /^flowchart TD$/,
  /^ {2,4}n\d+(\("[^"]*"\)|\[\["[^"]*"\]\]|\{\{"[^"]*"\}\}|\(\["[^"]*"\]\)|\[\/"[^"]*"\/\])$/,
  /^ {2}subgraph (onFailure|finally)_group\["(onFailure|finally)"\]$/,
  /^ {2}end$/,
  /^ {2}n\d+ (-->|-\. undo \.->|-\.->) n\d+$/,
  /^ {2}classDef [a-z]+ [a-z:#0-9,-]+( [0-9]+)?$/,
  /^ {2}class n\d+(,n\d+)* [a-z]+$/,
];

/** The labels of a Mermaid text, entity codes decoded: what a reader sees, line by line. */
function mermaidLabels(text: string): string[][] {
  return [...text.matchAll(/^ +n\d+[([{/]+"([^"]*)"/gm)].map((m) => m[1]!.split('<br/>').map((l) => l.replace(/#(\d+);/g, (_x, n: string) => String.fromCodePoint(Number(n)))));
}

describe('golden pictures of the examples and the Argo ports', () => {
  for (const file of SOURCES) {
    const name = file.replace(/^.*\//, '').replace(/\.yaml$/, '');
    it(`${name}: mermaid, dot and text as checked in`, async () => {
      const w = await load(file);
      const picture = buildGraphPicture(w);
      expect(renderMermaid(picture)).toBe(await readFile(`${root}tests/fixtures/graph/${name}.mmd`, 'utf8'));
      expect(renderDot(picture)).toBe(await readFile(`${root}tests/fixtures/graph/${name}.dot`, 'utf8'));
      expect(renderGraphText(w)).toBe(await readFile(`${root}tests/fixtures/graph/${name}.txt`, 'utf8'));
      for (const line of renderMermaid(picture).trimEnd().split('\n')) expect(MERMAID_LINE.some((re) => re.test(line)), line).toBe(true);
    });

    it.skipIf(!hasDot)(`${name}: Graphviz reads the DOT with every task and every needs edge`, async () => {
      const w = await load(file);
      const g = graphviz(renderDot(buildGraphPicture(w)));
      const all = [...w.spec.tasks, ...(w.spec.onFailure ?? []), ...(w.spec.finally ?? [])];
      const titles = Object.values(g.labels).map((l) => l.split('\\n')[0]);
      for (const t of all) expect(titles).toContain(t.name);
      const nameOf = (id: string): string => g.labels[id]!.split('\\n')[0]!;
      const needs = all.flatMap((t) => (t.needs ?? []).map((n) => `${n}->${t.name}`)).sort();
      const drawn = g.edges.map(([a, b]) => `${nameOf(a)}->${nameOf(b)}`).filter((e) => !e.includes('.compensate')).sort();
      expect(drawn).toEqual(needs);
      expect(g.clusters.sort()).toEqual([...(w.spec.finally !== undefined ? ['cluster_finally'] : []), ...(w.spec.onFailure !== undefined ? ['cluster_onFailure'] : [])]);
    });
  }
});

describe('what a picture shows', () => {
  it('a fan-out as a stack with its expression or its item count, a pool, an approval, a child workflow and a when', () => {
    const w = wf(
      '    - name: list\n      run: echo\n      outputs: [items]\n' +
        '    - name: each\n      needs: [list]\n      pool: p\n      forEach: ${{ fromJSON(tasks.list.outputs.items) }}\n      parallelism: 3\n      run: echo ${{ item }}\n' +
        '    - name: fixed\n      forEach: [a, b]\n      run: echo ${{ item }}\n' +
        '    - name: ok\n      needs: [each]\n      approval: { timeout: 1h }\n' +
        '    - name: child\n      needs: [ok]\n      when: ${{ always() }}\n      workflow: { name: other, wait: false }\n',
      '  pools:\n    p: { count: 2 }\n',
    );
    const nodes = Object.fromEntries(buildGraphPicture(w).nodes.map((n) => [n.key, n]));
    expect(nodes['each']).toMatchObject({ shape: 'forEach', details: ['for each: fromJSON(tasks.list.outputs.items)', '3 at a time', 'pool: p'] });
    expect(nodes['fixed']).toMatchObject({ shape: 'forEach', details: ['for each: x 2'] });
    expect(nodes['ok']).toMatchObject({ shape: 'approval', details: ['approval, timeout 1h'] });
    expect(nodes['child']).toMatchObject({ shape: 'workflow', details: ['workflow: other (no wait)', 'when: always()'] });
    // After a run, the fan-out shows how many items it had.
    const run = new Map<string, RunMark>([['each', { status: 'succeeded', items: 7 }]]);
    expect(buildGraphPicture(w, { run }).nodes.find((n) => n.key === 'each')!.details[0]).toBe('for each: x 7');
  });

  it('never shows an http URL, which may carry credentials', () => {
    const w = wf('    - name: hook\n      http: { url: "https://user:s3cret@hooks.example/x?token=abc", method: POST }\n');
    for (const text of [renderMermaid(buildGraphPicture(w)), renderDot(buildGraphPicture(w)), renderGraphText(w)]) {
      expect(text).not.toMatch(/s3cret|token|hooks\.example/);
    }
    expect(buildGraphPicture(w).nodes[0]!.details).toEqual(['http POST']);
  });

  it('compensations hang off their tasks by dashed edges and are chained in the order the engine undoes them', () => {
    const w = wf('    - name: a\n      run: x\n      compensate: { run: undo-a }\n    - name: b\n      needs: [a]\n      run: x\n    - name: c\n      needs: [b]\n      run: x\n      compensate: { run: undo-c }\n    - name: d\n      needs: [a]\n      run: x\n      compensate: { run: undo-d }\n', '  onFailure:\n    - name: alert\n      run: x\n');
    const p = buildGraphPicture(w);
    // The engine undoes succeeded tasks latest topoIndex first (enterCompensation).
    const plan = buildRunPlan(w, { maxParallel: 4 });
    const engineOrder = ['a', 'c', 'd'].sort((x, y) => plan.tasks.get(y)!.topoIndex - plan.tasks.get(x)!.topoIndex);
    const chain = p.edges.filter((e) => e.kind === 'undo').map((e) => [e.from, e.to]);
    expect(chain).toEqual(engineOrder.slice(0, -1).map((t, i) => [`${t}.compensate`, `${engineOrder[i + 1]!}.compensate`]));
    expect(p.edges.filter((e) => e.kind === 'compensate')).toEqual(['a', 'c', 'd'].map((t) => ({ from: t, to: `${t}.compensate`, kind: 'compensate' })).sort((x, y) => engineOrder.indexOf(y.from) - engineOrder.indexOf(x.from)));
    expect(p.nodes.find((n) => n.key === 'alert')!.group).toBe('onFailure');
    expect(renderGraphText(w)).toContain(`  ${engineOrder.map((t) => `${t}.compensate`).join(' -> ')}\n`);
  });

  it('colours every status with a classDef and names it in the label', () => {
    const statuses = ['succeeded', 'failed', 'skipped', 'cancelled', 'running', 'waiting', 'pending', 'reused'];
    const w = wf(statuses.map((s) => `    - name: t-${s}\n      run: x\n`).join(''));
    const run = new Map(statuses.map((s) => [`t-${s}`, { status: s }]));
    const text = renderMermaid(buildGraphPicture(w, { run }));
    const ids = Object.fromEntries([...text.matchAll(/^ {2}(n\d+)\("(t-[a-z]+)<br\/>([a-z]+)"\)$/gm)].map((m) => [m[2]!, [m[1]!, m[3]!]]));
    for (const s of statuses) {
      expect(ids[`t-${s}`]![1]).toBe(s);
      expect(text).toMatch(new RegExp(`^ {2}classDef ${s} fill:#[0-9a-f]{6},stroke:#[0-9a-f]{6},color:#[0-9a-f]{6}$`, 'm'));
      expect(text).toContain(`  class ${ids[`t-${s}`]![0]} ${s}\n`);
    }
    const dot = renderDot(buildGraphPicture(w, { run }));
    expect(dot).toMatch(/n1 \[label="t-succeeded\\nsucceeded", shape=box, style="rounded,filled", fillcolor="#d3f9d8"/);
  });

  it('folds the engine statuses without a colour of their own', () => {
    expect([pictureStatus('retrying'), pictureStatus('queued'), pictureStatus('waiting'), pictureStatus('something-new')]).toEqual(['running', 'pending', 'waiting', 'pending']);
  });

  it("reads statuses from a run's snapshot: fan-outs count their items, compensations fold over theirs", () => {
    const snapshot = {
      runId: 'r', workflow: 'w', status: 'failed', trigger: 'manual', params: {}, startedAt: '2025-01-01T00:00:00Z', events: 9,
      tasks: { a: { status: 'succeeded', attempts: 1 }, each: { status: 'succeeded', instances: [{ status: 'succeeded', attempts: 1 }, { status: 'succeeded', attempts: 1 }] }, c: { status: 'failed', attempts: 2 } },
      compensations: [{ key: 'each[1]:compensate', status: 'succeeded', attempts: 1 }, { key: 'each[0]:compensate', status: 'failed', attempts: 1 }, { key: 'a:compensate', status: 'cancelled', attempts: 0 }],
    } satisfies RunSnapshot;
    expect(Object.fromEntries(runMarks(snapshot))).toEqual({
      a: { status: 'succeeded' },
      each: { status: 'succeeded', items: 2 },
      c: { status: 'failed' },
      'each.compensate': { status: 'failed', items: 2 },
      'a.compensate': { status: 'cancelled' },
    });
  });
});

describe('hostile text cannot break out of a picture', () => {
  const HOSTILE = ['a"] --> evil["x', '<script>alert(1)</script>', '`**md**` #quot; &amp; ;', 'line\nbreak\r\u2028end', 'end', 'x} subgraph y {', 'back\\slash \\N \\" \\'];

  /** A picture straight from the model: names the schema would refuse reach the renderers only this way. */
  const picture: GraphPicture = {
    workflow: 'wf"} digraph x {',
    nodes: HOSTILE.map((h, i) => ({ key: `k${i}`, title: h, group: i % 2 === 0 ? 'tasks' : 'finally', shape: (['task', 'forEach', 'approval', 'workflow', 'compensate'] as const)[i % 5]!, details: [h, `when: ${h}`], mark: 'failed', fingerprint: '' })),
    edges: HOSTILE.slice(1).map((_h, i) => ({ from: `k${i}`, to: `k${i + 1}`, kind: 'needs' as const })),
  };
  // eslint-disable-next-line no-control-regex
  const shown = (h: string): string => h.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ');

  it('mermaid: every line keeps the grammar, and every label decodes to the text it was given', () => {
    const text = renderMermaid(picture);
    for (const line of text.trimEnd().split('\n')) expect(MERMAID_LINE.some((re) => re.test(line)), line).toBe(true);
    expect(text).not.toMatch(/<script|`|&amp;/);
    // Main tasks are drawn first, then the finally subgraph.
    const drawn = [...picture.nodes.filter((n) => n.group === 'tasks'), ...picture.nodes.filter((n) => n.group !== 'tasks')];
    expect(mermaidLabels(text)).toEqual(drawn.map((n) => [n.title, ...n.details].map(shown)));
  });

  it('mermaid: the safe characters stay readable and nothing else passes', () => {
    expect(mermaidText("tasks.a.status == 'ok' (x, y): !z?")).toBe("tasks.a.status == 'ok' (x, y): !z?");
    for (const ch of '"[]{}<>`#;&|\\$%*~^\u00e9') expect(mermaidText(ch)).toBe(`#${ch.codePointAt(0)!};`);
  });

  it.skipIf(!hasDot)('dot: Graphviz parses it, and each label is the text given, with its backslashes kept literal', () => {
    const g = graphviz(renderDot(picture));
    const expected = picture.nodes.map((n) => [n.title, ...n.details].map((l) => shown(l).replace(/\\/g, '\\\\')).join('\\n'));
    expect(Object.values(g.labels).sort()).toEqual(expected.sort());
    expect(g.edges).toHaveLength(picture.edges.length);
    expect(g.clusters).toEqual(['cluster_finally']);
  });

  it('text: control characters in expressions reach the CLI, which neutralises them on a terminal (see graph e2e)', () => {
    const w = wf('    - name: a\n      when: "${{ params.x == \'\\u001b[31m\' }}"\n      run: x\n', '  params:\n    x: { type: string, default: "" }\n');
    expect(renderGraphText(w)).toContain('a when: params.x == \'\u001b[31m\'');
  });
});

describe('diff pictures for the pull-request plan', () => {
  const before = wf('    - name: build\n      run: make\n    - name: test\n      needs: [build]\n      run: make test\n    - name: lint\n      needs: [build]\n      run: make lint\n');
  const after = wf('    - name: build\n      run: make\n    - name: test\n      needs: [build]\n      run: make test -j4\n    - name: deploy\n      needs: [test]\n      run: ./deploy\n      compensate: { run: ./rollback }\n');

  it('marks added, changed and removed tasks, and keeps a removed task where it was', () => {
    const p = diffGraphPicture(before, after);
    expect(p.nodes.map((n) => [n.key, n.mark ?? 'unchanged'])).toEqual([['build', 'unchanged'], ['test', 'changed'], ['deploy', 'added'], ['deploy.compensate', 'added'], ['lint', 'removed']]);
    expect(p.edges).toContainEqual({ from: 'build', to: 'lint', kind: 'needs' });
    expect(summarizePictureDiff(p)).toEqual({ added: 2, changed: 1, removed: 1, unchanged: 1 });
  });

  it('renders classDefs added, changed and removed in Mermaid and DOT', () => {
    const m = renderWorkflowDiff(before, after);
    for (const mark of ['added', 'changed', 'removed']) expect(m).toMatch(new RegExp(`^ {2}classDef ${mark} `, 'm'));
    expect(m).toContain('  class n2 changed\n');
    expect(m).toContain('  class n3,n4 added\n');
    expect(m).toContain('  class n5 removed\n');
    for (const line of m.trimEnd().split('\n')) expect(MERMAID_LINE.some((re) => re.test(line)), line).toBe(true);
    expect(renderWorkflowDiff(before, after, 'dot')).toContain('class="removed"');
  });

  it('a reordered or reformatted but equal task is unchanged; a task moved to finally is changed', () => {
    const same = wf('    - name: lint\n      run: make lint\n      needs: [build]\n    - run: make\n      name: build\n    - name: test\n      run: make test\n      needs: [build]\n');
    expect(summarizePictureDiff(diffGraphPicture(before, same))).toEqual({ added: 0, changed: 0, removed: 0, unchanged: 3 });
    const moved = wf('    - name: build\n      run: make\n    - name: test\n      needs: [build]\n      run: make test\n', '  finally:\n    - name: lint\n      run: make lint\n');
    expect(diffGraphPicture(before, moved).nodes.find((n) => n.key === 'lint')!.mark).toBe('changed');
  });

  it('a workflow added or removed is all added or all removed', () => {
    expect(new Set(diffGraphPicture(undefined, after).nodes.map((n) => n.mark))).toEqual(new Set(['added']));
    expect(new Set(diffGraphPicture(before, undefined).nodes.map((n) => n.mark))).toEqual(new Set(['removed']));
    expect(diffGraphPicture(before, undefined).edges).toHaveLength(2);
  });
});
