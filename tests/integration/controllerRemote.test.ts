import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, onTestFinished } from 'vitest';
import type { SyncReport } from '../../engine/controller/Controller.js';
import { startController, type RunningController } from '../../engine/api/startController.js';
import { RemoteRepo } from '../../engine/gitops/RemoteRepo.js';
import { MemoryLogger } from '../../engine/run/Logger.js';
import { GitHttpServer, bareRepoFrom } from '../harness/gitHttpServer.js';
import { git, repoWith, workflow } from '../harness/gitRepo.js';
import { until } from '../harness/until.js';

const built = workflow('built', '  triggers:\n    - push: { paths: ["src/**"] }\n  tasks:\n    - { name: compile, run: "test -f src/main.c && echo compiled" }\n');

const running: RunningController[] = [];
afterEach(async () => {
  for (const r of running.splice(0)) await r.stop();
});

async function served(): Promise<{ url: string; work: string; scratch: string }> {
  const root = await mkdtemp(join(tmpdir(), 'caravan-remote-'));
  const scratch = await mkdtemp(join(tmpdir(), 'caravan-mirrors-'));
  const seed = await repoWith({ 'built.yaml': built });
  await bareRepoFrom(seed, root, 'pipelines.git');
  await rm(seed, { recursive: true, force: true });
  const server = await GitHttpServer.start({ root });
  const url = server.url('pipelines.git');
  // A developer's clone, from which pushes go to the remote.
  const work = join(scratch, 'work');
  await git(scratch, 'clone', '-q', url, work);
  onTestFinished(async () => {
    await server.close();
    await rm(root, { recursive: true, force: true });
    await rm(scratch, { recursive: true, force: true });
  });
  return { url, work, scratch };
}

describe('the controller watching a remote repository over smart HTTP', () => {
  it('sees a git push, runs the pushed workflow on the commit\'s files, and pushes its run and sync records back to the remote', async () => {
    const { url, work, scratch } = await served();
    const reports: SyncReport[] = [];
    const mirror = RemoteRepo.mirrorDir(join(scratch, 'state'), url);
    const ctl = await startController({ repoDir: mirror, remote: { url }, intervalMs: 3_600_000, logger: new MemoryLogger(), onSync: (r) => reports.push(r) });
    running.push(ctl);
    expect(reports.at(-1)).toMatchObject({ status: 'synced', runs: [] });

    await mkdir(join(work, 'src'));
    await writeFile(join(work, 'src', 'main.c'), 'int main(void) { return 0; }\n');
    await git(work, 'add', '-A');
    await git(work, 'commit', '-q', '-m', 'add the source');
    await git(work, 'push', '-q', 'origin', 'main');
    const head = (await git(work, 'rev-parse', 'HEAD')).trim();
    await ctl.controller.syncNow('test');
    expect(reports.at(-1)!.commit).toBe(head);
    const runId = reports.at(-1)!.runs[0]!.runId;
    await until('the run to finish', async () => (await ctl.app.audit.readRun(runId))?.events.some((e) => e.type === 'run.succeeded' || e.type === 'run.failed') === true);
    // The task found the pushed file: the mirror follows the branch.
    expect((await ctl.app.audit.readRun(runId))!.run.status).toBe('succeeded');
    await ctl.controller.syncNow('push the records');
    await git(work, 'fetch', '-q', 'origin', 'caravan/runs');
    const log = await git(work, 'log', '--format=%s', 'FETCH_HEAD');
    expect(log).toMatch(new RegExp(`built ${runId}: succeeded`));
    expect(log).toMatch(new RegExp(`sync ${head.slice(0, 12)}: synced`));
  });
});

describe('GitHub commit statuses', () => {
  let server: Server | undefined;
  afterEach(async () => {
    await new Promise<void>((r) => (server !== undefined ? server.close(() => r()) : r()));
    server = undefined;
  });

  it('each sync is posted as a status on its commit, with the token, to the API given', async () => {
    const seen: Array<{ method: string; url: string; auth: string; body: Record<string, unknown> }> = [];
    server = createServer((req: IncomingMessage, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        seen.push({ method: req.method ?? '', url: req.url ?? '', auth: req.headers.authorization ?? '', body: JSON.parse(body || '{}') as Record<string, unknown> });
        res.writeHead(201, { 'content-type': 'application/json' }).end('{"id":1}');
      });
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
    const api = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const dir = await repoWith({ 'built.yaml': built });
    onTestFinished(() => rm(dir, { recursive: true, force: true }));
    const head = (await git(dir, 'rev-parse', 'HEAD')).trim();
    const logger = new MemoryLogger();
    const ctl = await startController({ repoDir: dir, intervalMs: 3_600_000, logger, githubStatus: { repository: 'acme/pipelines', token: 'ghs_secret-token-1234', apiUrl: api } });
    running.push(ctl);
    await until('the status to be posted', () => seen.length === 1);
    expect(seen[0]).toEqual({ method: 'POST', url: `/repos/acme/pipelines/statuses/${head}`, auth: 'token ghs_secret-token-1234', body: { state: 'success', context: 'caravan/sync', description: 'synced: 0 created, 0 updated, 0 pruned, 0 failed' } });
    // An invalid workflow is a failure on its commit.
    await writeFile(join(dir, 'workflows', 'bad.yaml'), workflow('bad', '  tasks:\n    - { name: x, run: 1 }\n'));
    await git(dir, 'add', '-A');
    await git(dir, 'commit', '-q', '-m', 'bad');
    await ctl.controller.syncNow('test');
    await until('the second status', () => seen.length === 2);
    expect(seen[1]!.body).toMatchObject({ state: 'failure', description: expect.stringMatching(/1 invalid/) });
    expect(JSON.stringify(logger.entries)).not.toContain('ghs_secret-token-1234');
  });
});
