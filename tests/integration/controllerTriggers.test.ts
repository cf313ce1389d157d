import { createHmac } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { SyncReport } from '../../engine/controller/Controller.js';
import { startController, type RunningController } from '../../engine/api/startController.js';
import { MemoryLogger } from '../../engine/run/Logger.js';
import { cli } from '../harness/cli.js';
import { git, tempRepo, workflow } from '../harness/gitRepo.js';
import { until } from '../harness/until.js';

const built = workflow('built', '  triggers:\n    - push: { branches: [main], paths: ["src/**"] }\n  tasks:\n    - { name: compile, run: "echo built >> built.log" }\n');

const running: RunningController[] = [];
afterEach(async () => {
  for (const r of running.splice(0)) await r.stop();
});

async function commit(dir: string, files: Record<string, string>, message: string): Promise<string> {
  for (const [path, text] of Object.entries(files)) {
    await mkdir(join(dir, path, '..'), { recursive: true });
    await writeFile(join(dir, path), text);
  }
  await git(dir, 'add', '-A');
  await git(dir, 'commit', '-q', '-m', message);
  return (await git(dir, 'rev-parse', 'HEAD')).trim();
}

async function start(dir: string, extra: { webhookSecret?: string; intervalMs?: number } = {}): Promise<{ ctl: RunningController; reports: SyncReport[]; logger: MemoryLogger }> {
  const reports: SyncReport[] = [];
  const logger = new MemoryLogger();
  const ctl = await startController({ repoDir: dir, intervalMs: extra.intervalMs ?? 3_600_000, listen: { host: '127.0.0.1', port: 0 }, logger, onSync: (r) => reports.push(r), ...(extra.webhookSecret !== undefined ? { webhookSecret: extra.webhookSecret } : {}) });
  running.push(ctl);
  return { ctl, reports, logger };
}

function sign(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

describe('the controller on the embedded default (local executor, no servers)', () => {
  it('a push matching a push trigger starts a run of the workflow at that commit, recorded on the audit branch; other pushes start nothing', async () => {
    const dir = await tempRepo({ 'built.yaml': built });
    await writeFile(join(dir, '.gitignore'), 'built.log\n');
    const { ctl, reports } = await start(dir);
    expect(reports.at(-1)).toMatchObject({ status: 'synced', cluster: 'none', runs: [] });

    await commit(dir, { 'docs/readme.md': 'no trigger here\n' }, 'docs only');
    await ctl.controller.syncNow('test');
    expect(reports.at(-1)!.runs).toEqual([]);

    const head = await commit(dir, { 'src/main.c': 'int main(void) { return 0; }\n' }, 'change the source');
    await ctl.controller.syncNow('test');
    const report = reports.at(-1)!;
    expect(report.commit).toBe(head);
    expect(report.runs).toEqual([{ workflow: 'built', runId: expect.stringMatching(/^\d{8}-\d{6}-[0-9a-f]{6}$/), trigger: 'push' }]);
    const runId = report.runs[0]!.runId;
    await until('the pushed run to be recorded as over', async () => {
      const s = await cli(dir, 'status', runId, '--json');
      return s.code === 0 && (JSON.parse(s.out) as { status: string }).status === 'succeeded';
    });
    expect(await readFile(join(dir, 'built.log'), 'utf8')).toBe('built\n');
    const status = JSON.parse((await cli(dir, 'status', runId, '--json')).out) as { trigger?: string; commit?: string };
    expect(JSON.stringify(status)).toContain(head);
    expect(await ctl.app.audit.readSync(head)).toMatchObject({ commit: head, runs: report.runs });
  });

  it('a controller restarted on the same commit does not start its push runs again', async () => {
    const dir = await tempRepo({ 'built.yaml': built });
    await writeFile(join(dir, '.gitignore'), 'built.log\n');
    const first = await start(dir);
    await commit(dir, { 'src/a.c': '1\n' }, 'source');
    await first.ctl.controller.syncNow('test');
    const runId = first.reports.at(-1)!.runs[0]!.runId;
    await until('the run to finish', async () => (JSON.parse((await cli(dir, 'status', runId, '--json')).out || '{}') as { status?: string }).status === 'succeeded');
    await first.ctl.stop();
    // The state that says which commit was synced is lost: the run id, derived from the
    // workflow and the commit, still stops a second start.
    await writeFile(join(dir, '.git', 'caravan', 'controller', 'main.json'), JSON.stringify({ head: (await git(dir, 'rev-parse', 'HEAD~1')).trim() }));
    const second = await start(dir);
    expect(second.reports.at(-1)!.runs).toEqual([{ workflow: 'built', runId, trigger: 'push', existed: true }]);
    expect(second.logger.entries.some((l) => l.msg === 'run exists already: not started twice')).toBe(true);
    expect(await readFile(join(dir, 'built.log'), 'utf8')).toBe('built\n');
  });

  it('serves /health and /ready, and a signed push webhook syncs at once while a bad signature changes nothing', async () => {
    const dir = await tempRepo({ 'built.yaml': built });
    await writeFile(join(dir, '.gitignore'), 'built.log\n');
    const secret = 'hook-secret';
    const { ctl, reports } = await start(dir, { webhookSecret: secret });
    const url = ctl.server!.url;
    expect((await fetch(`${url}/health`)).status).toBe(200);
    const ready = await fetch(`${url}/ready`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ ready: true, details: { lastSync: { status: 'synced' } } });

    const head = await commit(dir, { 'src/b.c': '2\n' }, 'source');
    const body = JSON.stringify({ ref: 'refs/heads/main', after: head, before: '0'.repeat(40), repository: { full_name: 'acme/pipelines' } });
    const hook = (signature: string, text = body): Promise<Response> => fetch(`${url}/api/v1/webhooks/github`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-github-event': 'push', 'x-github-delivery': 'd-1', 'x-hub-signature-256': signature }, body: text });
    const before = reports.length;
    expect((await hook(sign('wrong', body))).status).toBe(401);
    // Refused before anything is looked at: no sync follows.
    await ctl.controller.syncNow('flush');
    expect(reports.length).toBe(before + 1);
    expect(reports.at(-1)!.commit).toBe(head);
    const next = await commit(dir, { 'src/c.c': '3\n' }, 'more source');
    const signed = body.replace(head, next);
    expect((await hook(sign(secret, signed), signed)).status).toBe(202);
    await until('the webhook to sync the new commit', () => reports.at(-1)?.commit === next);
    expect(reports.at(-1)!.runs.map((r) => r.workflow)).toEqual(['built']);
  });

  it('an invalid workflow commit makes /ready answer with the error, and other workflows still fire', async () => {
    const dir = await tempRepo({ 'built.yaml': built });
    await writeFile(join(dir, '.gitignore'), 'built.log\n');
    const { ctl, reports } = await start(dir);
    await commit(dir, { 'workflows/broken.yaml': workflow('broken', '  tasks:\n    - { name: x, run: 1 }\n'), 'src/d.c': '4\n' }, 'break one');
    await ctl.controller.syncNow('test');
    const r = reports.at(-1)!;
    expect(r.status).toBe('partial');
    expect(r.invalid.map((i) => i.file)).toEqual(['workflows/broken.yaml']);
    expect(r.runs.map((x) => x.workflow)).toEqual(['built']);
    const ready = (await (await fetch(`${ctl.server!.url}/ready`)).json()) as { details: { error: string } };
    expect(ready.details.error).toMatch(/workflows\/broken\.yaml/);
    // A second file claiming a workflow's name is invalid too: the first one keeps it.
    await commit(dir, { 'workflows/copy.yaml': built, 'workflows/broken.yaml': workflow('broken', '  tasks:\n    - { name: x, run: "true" }\n') }, 'copy built');
    await ctl.controller.syncNow('test');
    expect(reports.at(-1)!.invalid).toEqual([{ file: 'workflows/copy.yaml', errors: [expect.stringMatching(/workflow name 'built' is already used by workflows\/built\.yaml/)] }]);
  });
});

describe('approvals committed to the watched branch', () => {
  it('are taken only from a commit author listed in approvers; a refusal is recorded and the gate keeps waiting', async () => {
    const gated = workflow('gated', '  triggers:\n    - push: { paths: ["src/**"] }\n  tasks:\n    - { name: gate, approval: { approvers: [alice@example.com], timeout: 1h } }\n    - { name: after, needs: [gate], run: "echo after >> after.log" }\n');
    const dir = await tempRepo({ 'gated.yaml': gated });
    await writeFile(join(dir, '.gitignore'), 'after.log\n');
    const { ctl, reports } = await start(dir);
    await commit(dir, { 'src/x.c': '1\n' }, 'source');
    await ctl.controller.syncNow('test');
    const runId = reports.at(-1)!.runs[0]!.runId;
    const decision = 'apiVersion: caravan/v1\nkind: Approval\ndecision: approve\nby: alice\n';
    await mkdir(join(dir, 'approvals', runId), { recursive: true });
    await writeFile(join(dir, 'approvals', runId, 'gate.yaml'), decision);
    await git(dir, 'add', '-A');
    // The file says alice; the commit is bob's: bob is who decided.
    await git(dir, '-c', 'user.email=bob@example.com', '-c', 'user.name=Bob', 'commit', '-q', '-m', 'approve as bob');
    await ctl.controller.syncNow('test');
    expect(reports.at(-1)!.approvals).toEqual([expect.objectContaining({ runId, task: 'gate', decision: 'approve', author: 'Bob <bob@example.com>', outcome: 'refused' })]);
    expect(ctl.controller.status().runs).toBe(1);

    await writeFile(join(dir, 'approvals', runId, 'gate.yaml'), decision + 'reason: checked\n');
    await git(dir, 'add', '-A');
    await git(dir, '-c', 'user.email=alice@example.com', '-c', 'user.name=Alice', 'commit', '-q', '-m', 'approve as alice');
    await ctl.controller.syncNow('test');
    expect(reports.at(-1)!.approvals).toEqual([expect.objectContaining({ outcome: 'applied', author: 'Alice <alice@example.com>' })]);
    await until('the approved run to finish', async () => (JSON.parse((await cli(dir, 'status', runId, '--json')).out || '{}') as { status?: string }).status === 'succeeded');
    await until('the final record on the audit branch', async () => (await ctl.app.audit.readRun(runId))?.events.some((e) => e.type === 'run.succeeded') === true);
    const events = (await ctl.app.audit.readRun(runId))!.events;
    expect(events.filter((e) => e.type.startsWith('approval.')).map((e) => [e.type, 'by' in e ? e.by : ''])).toEqual([
      ['approval.requested', ''],
      ['approval.refused', expect.stringMatching(/^bob@example\.com \(commit [0-9a-f]{12}\)$/)],
      ['approval.granted', expect.stringMatching(/^alice@example\.com \(commit [0-9a-f]{12}\)$/)],
    ]);
    expect(await readFile(join(dir, 'after.log'), 'utf8')).toBe('after\n');
  });
});

describe('sync reports in the registry', () => {
  it('keeps the 10 newest in the registry (all stay in Git), and the last one under caravan/sync-last', async () => {
    const { InMemoryRegistry } = await import('../../engine/local/InMemoryRegistry.js');
    const registry = new InMemoryRegistry();
    const dir = await tempRepo({ 'built.yaml': built });
    const ctl = await startController({ repoDir: dir, registry, leader: false, intervalMs: 3_600_000, logger: new MemoryLogger() });
    running.push(ctl);
    const heads: string[] = [(await git(dir, 'rev-parse', 'HEAD')).trim()];
    for (let i = 0; i < 11; i++) {
      heads.push(await commit(dir, { [`docs/${i}.md`]: `${i}\n` }, `doc ${i}`));
      await ctl.controller.syncNow('test');
    }
    const keys = await registry.listKeys('caravan/sync/');
    expect(keys.sort()).toEqual(heads.slice(-10).map((h) => `caravan/sync/${h}`).sort());
    expect(JSON.parse((await registry.getKey('caravan/sync-last'))!.value)).toMatchObject({ commit: heads.at(-1), status: 'synced' });
    for (const h of heads) expect(await ctl.app.audit.readSync(h)).toMatchObject({ commit: h });
  });
});
