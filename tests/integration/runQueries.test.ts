import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CaravanApp } from '../../engine/app/CaravanApp.js';
import { packageRoot } from '../../engine/packageRoot.js';
import { git, repoWith, workflow } from '../harness/gitRepo.js';
import { until } from '../harness/until.js';

/**
 * The read side the CLI and the coming HTTP API share: run lists with filters and cursor
 * pages, one run as a RunSnapshot that validates against schemas/run-snapshot.v1.json.
 */
describe('RunQueries', () => {
  let dir: string;
  let app: CaravanApp;
  const ids: Record<string, string[]> = { ok: [], bad: [] };

  beforeAll(async () => {
    dir = await repoWith({
      'ok.yaml': workflow('ok', '  tasks:\n    - { name: a, run: "echo a" }\n    - { name: fan, needs: [a], forEach: "${{ fromJSON(\'[1,2]\') }}", run: "echo ${{ item }}" }\n'),
      'bad.yaml': workflow('bad', '  tasks:\n    - { name: boom, run: "exit 3" }\n'),
    });
    app = new CaravanApp({ repoDir: dir });
    // Run ids start with the start time to the second: space the runs so their order is known.
    for (const name of ['ok', 'bad', 'ok', 'bad', 'ok']) {
      const run = await app.start(name, {});
      await run.done;
      ids[name]!.push(run.runId);
      const second = Math.floor(Date.now() / 1000);
      await until('the next second', () => Math.floor(Date.now() / 1000) > second, 2_000);
    }
  }, 60_000);

  afterAll(async () => {
    await app.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('lists runs newest first, one page at a time, and the pages add up to the whole list', async () => {
    const all = await app.queries.list();
    expect(all.nextCursor).toBeUndefined();
    const newestFirst = [ids['ok']![2], ids['bad']![1], ids['ok']![1], ids['bad']![0], ids['ok']![0]];
    expect(all.runs.map((r) => r.runId)).toEqual(newestFirst);
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await app.queries.list({ limit: 2, ...(cursor !== undefined ? { cursor } : {}) });
      expect(page.runs.length).toBeLessThanOrEqual(2);
      seen.push(...page.runs.map((r) => r.runId));
      cursor = page.nextCursor;
      pages++;
    } while (cursor !== undefined);
    expect(seen).toEqual(newestFirst);
    expect(pages).toBe(3);
  });

  it('filters by workflow, status and start time', async () => {
    expect((await app.queries.list({ workflow: 'bad' })).runs.map((r) => r.runId)).toEqual([ids['bad']![1], ids['bad']![0]]);
    const failed = await app.queries.list({ status: 'failed' });
    expect(failed.runs.map((r) => [r.workflow, r.status])).toEqual([['bad', 'failed'], ['bad', 'failed']]);
    const newest = (await app.queries.list({ limit: 1 })).runs[0]!;
    expect((await app.queries.list({ since: newest.startedAt })).runs.map((r) => r.runId)).toEqual([newest.runId]);
    await expect(app.queries.list({ cursor: '!!not a cursor' })).rejects.toMatchObject({ code: 'USAGE' });
  });

  it('returns one run as a RunSnapshot that validates against its JSON Schema, and its logs', async () => {
    const schema = JSON.parse(await readFile(join(packageRoot(), 'schemas', 'run-snapshot.v1.json'), 'utf8')) as object;
    // Formats are documentation here (no ajv-formats); the dates are checked by hand below.
    const validate = new Ajv2020({ strict: true, allErrors: true, validateFormats: false }).compile(schema);
    for (const runId of [...ids['ok']!, ...ids['bad']!]) {
      const view = await app.queries.get(runId);
      expect(view.from).toBe('audit');
      expect(validate(view.snapshot), JSON.stringify(validate.errors)).toBe(true);
      expect(new Date(view.snapshot.startedAt).toISOString()).toBe(view.snapshot.startedAt);
      // What the query returns is what Git holds.
      const workflowName = view.snapshot.workflow;
      expect(JSON.parse(await git(dir, 'show', `caravan/runs:runs/${workflowName}/${runId}/run.json`))).toEqual(view.snapshot);
    }
    const okRun = await app.queries.get(ids['ok']![0]!);
    expect(okRun.snapshot.tasks['fan']!.instances!.map((i) => i.status)).toEqual(['succeeded', 'succeeded']);
    expect((await app.queries.logs(ids['ok']![0]!, 'fan')).map((l) => [l.task, l.line]).sort()).toEqual([['fan[0]', '1'], ['fan[1]', '2']]);
    await expect(app.queries.get('20000101-000000-000000')).rejects.toMatchObject({ code: 'RUN_NOT_FOUND' });
  });

  it('reads a run this process drives from memory, equal to what its journal replays, and from Git once it is over', async () => {
    const gate = join(dir, 'gate');
    const local = await repoWith({ 'held.yaml': workflow('held', `  tasks:\n    - { name: a, run: "echo a" }\n    - { name: wait, needs: [a], run: "while [ ! -e '${gate}' ]; do sleep 0.05; done" }\n`) });
    const here = new CaravanApp({ repoDir: local });
    try {
      const run = await here.start('held', {});
      await until('task a to succeed', async () => (await here.queries.get(run.runId)).snapshot.tasks['a']?.status === 'succeeded', 20_000, 20);
      const view = await here.queries.get(run.runId);
      expect([view.from, view.live?.pid, view.snapshot.status, view.snapshot.tasks['wait']?.status]).toEqual(['memory', process.pid, 'running', 'running']);
      // Another process sees the same run through its journal.
      expect(await here.queries.journalSnapshot(run.runId)).toEqual(view.snapshot);
      await writeFile(gate, '');
      await run.done;
      const after = await here.queries.get(run.runId);
      expect([after.from, after.snapshot.status]).toEqual(['audit', 'succeeded']);
    } finally {
      await here.close();
      await rm(local, { recursive: true, force: true });
    }
  });
});
