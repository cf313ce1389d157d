import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cli } from '../harness/cli.js';
import { exampleRepo, git } from '../harness/gitRepo.js';

async function edit(file: string, from: string, to: string): Promise<void> {
  const text = await readFile(file, 'utf8');
  expect(text).toContain(from);
  await writeFile(file, text.replace(from, to));
}

let dir: string;
beforeEach(async () => {
  dir = await exampleRepo('caravan-plan-');
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('caravan plan', () => {
  it('says so when nothing changed', async () => {
    expect(await cli(dir, 'plan')).toEqual({ code: 0, err: '', out: '## Caravan plan: `HEAD` → working tree\n\nNo changes: 6 workflows unchanged.\n' });
  });

  it('a change to one task: one job to update, with the fields', async () => {
    await edit(join(dir, 'workflows', 'release-approval.yaml'), 'run: echo "testing ${{ params.version }}"', 'run: make test\n      resources: { cpu: 900, memoryMB: 512 }');
    const r = await cli(dir, 'plan');
    expect(r.code).toBe(0);
    expect(r.out).toContain('Workflows: 0 added, 1 changed, 0 removed, 5 unchanged. Nomad jobs: **0 to create, 1 to update, 0 to destroy**.');
    expect(r.out).toContain([
      '- ~ `caravan-release-approval-test` (task test): update',
      '  - command: `echo "testing ${{ params.version }}"` → `make test`',
      '  - resources.CPU: `500` → `900`',
    ].join('\n'));
    const json = JSON.parse((await cli(dir, 'plan', '--format', 'json')).out) as { summary: object; workflows: Array<{ name: string; jobs: unknown[] }> };
    expect(json.summary).toEqual({ added: 0, changed: 1, removed: 0, unchanged: 5, create: 0, update: 1, destroy: 0 });
    expect(json.workflows[0]!.jobs).toEqual([{
      id: 'caravan-release-approval-test',
      kind: 'task',
      source: 'test',
      action: 'update',
      fields: [
        { field: 'command', kind: 'changed', before: 'echo "testing ${{ params.version }}"', after: 'make test' },
        { field: 'resources.CPU', kind: 'changed', before: '500', after: '900' },
      ],
    }]);
  });

  it('a renamed task: the old job is destroyed and the new one created; the DAG is shown', async () => {
    const file = join(dir, 'workflows', 'order-saga.yaml');
    await edit(file, '- name: book-shipping', '- name: ship');
    const r = await cli(dir, 'plan');
    expect(r.out).toContain([
      '- - `caravan-order-saga-book-shipping` (task book-shipping): destroy',
      '- + `caravan-order-saga-ship` (task ship): create',
    ].join('\n'));
    expect(r.out).toContain('<details><summary>DAG: 4 tasks (1 added, 1 removed)</summary>');
    expect(r.out).toContain([
      '```mermaid',
      'flowchart TD',
      '  n1("reserve-stock")',
      '  n2("charge-card")',
      '  n3("ship")',
    ].join('\n'));
    // The removed task stays where it was, with its old edge, marked removed; the new one added.
    expect(r.out).toContain('  n7("book-shipping")');
    expect(r.out).toContain('  n2 --> n7\n');
    expect(r.out).toContain('  class n3 added\n  class n7 removed\n```');
    expect(r.out).toContain('Not checked against a cluster');
  });

  it('a removed workflow and an env change across commits, read with HEAD~1 and without touching the work tree', async () => {
    await rm(join(dir, 'workflows', 'nightly-rollup.yaml'));
    await edit(join(dir, 'workflows', 'thumbnail-swarm.yaml'), 'count: 62', 'count: 80\n      env: { QUALITY: high }');
    await git(dir, 'add', '-A');
    await git(dir, 'commit', '-q', '-m', 'change');
    const statusBefore = await git(dir, 'status', '--porcelain');
    // git status itself may refresh the index, so sample it only around the plan.
    const indexBefore = (await stat(join(dir, '.git', 'index'))).mtimeMs;
    const r = await cli(dir, 'plan', '--base', 'HEAD~1');
    expect((await stat(join(dir, '.git', 'index'))).mtimeMs).toBe(indexBefore);
    expect(r.code).toBe(0);
    expect(r.out).toContain('Workflows: 0 added, 1 changed, 1 removed, 4 unchanged. Nomad jobs: **0 to create, 1 to update, 1 to destroy**.');
    expect(r.out).toContain('### - nightly-rollup (removed, `workflows/nightly-rollup.yaml`)\n\n- - `caravan-nightly-rollup-health` (task health): destroy');
    expect(r.out).toContain('  - count: `62` → `80`\n  - env QUALITY: added');
    expect(r.out).not.toContain('high');
    expect(await git(dir, 'status', '--porcelain')).toBe(statusBefore);
  });

  it('an invalid base: the diagnostics name the revision, exit 2', async () => {
    await edit(join(dir, 'workflows', 'order-saga.yaml'), 'needs: [reserve-stock]', 'needs: [reserve-stok]');
    await git(dir, 'commit', '-q', '-am', 'broken');
    await edit(join(dir, 'workflows', 'order-saga.yaml'), 'needs: [reserve-stok]', 'needs: [reserve-stock]');
    const r = await cli(dir, 'plan');
    expect(r.code).toBe(2);
    expect(r.out).toBe(
      "HEAD:workflows/order-saga.yaml:35:15: error NEEDS_UNKNOWN: task 'charge-card' needs unknown task 'reserve-stok'; did you mean 'reserve-stock'?\n" +
        "HEAD:workflows/order-saga.yaml:45:43: error EXPR_NOT_UPSTREAM: in 'tasks.reserve-stock.outputs.reservation': tasks.reserve-stock is not available here: task 'book-shipping' does not need 'reserve-stock', directly or indirectly; add it to needs\n",
    );
    expect(r.err).toBe('caravan: cannot plan: workflows are invalid in HEAD (2 errors)\n');
  });

  it('an unknown revision is a usage error', async () => {
    expect(await cli(dir, 'plan', '--base', 'nope~2')).toEqual({ code: 64, out: '', err: "caravan: unknown revision 'nope~2'\n" });
  });

  it('a tag, a branch and an abbreviated commit all resolve', async () => {
    const sha = (await git(dir, 'rev-parse', 'HEAD')).trim();
    await git(dir, 'tag', '-a', 'v1', '-m', 'v1');
    await git(dir, 'branch', 'other');
    for (const ref of ['v1', 'other', sha.slice(0, 7), 'main^']) {
      const r = await cli(dir, 'plan', '--base', ref);
      expect([ref, r.code]).toEqual([ref, ref === 'main^' ? 64 : 0]);
    }
  });
});
