import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { GitAuditStore } from '../../engine/audit/GitAuditStore.js';
import { CaravanError } from '../../engine/errors/CaravanError.js';
import { RemoteRepo } from '../../engine/gitops/RemoteRepo.js';
import { readTreeAtCommit } from '../../engine/gitops/readTreeAtRef.js';
import { MemoryLogger } from '../../engine/run/Logger.js';
import type { RunSnapshot } from '../../engine/run/RunSnapshot.js';
import { serializeError } from '../../engine/telemetry/serializeError.js';
import { GitHttpServer, bareRepoFrom } from '../harness/gitHttpServer.js';
import { git, repoWith, workflow } from '../harness/gitRepo.js';
import { describeProcess, descendants } from '../harness/processTree.js';
import { until } from '../harness/until.js';

const pipe = workflow('pipe', '  tasks:\n    - { name: a, run: "echo A" }\n');
const PASSWORD = 'correct-horse-battery-staple';

interface Remote {
  server: GitHttpServer;
  /** The bare repository the server serves as `r.git`. */
  bare: string;
  url: string;
  /** Where mirrors and other clones go. */
  scratch: string;
}

/** A bare repository with workflows/pipe.yaml on main, served over HTTP for one test. */
async function remote(auth?: { username: string; password: string }): Promise<Remote> {
  const root = await mkdtemp(join(tmpdir(), 'caravan-remote-'));
  const scratch = await mkdtemp(join(tmpdir(), 'caravan-mirrors-'));
  const work = await repoWith({ 'pipe.yaml': pipe });
  const bare = await bareRepoFrom(work, root, 'r.git');
  await rm(work, { recursive: true, force: true });
  const server = await GitHttpServer.start({ root, ...(auth !== undefined ? { auth } : {}) });
  onTestFinished(async () => {
    await server.close();
    await rm(root, { recursive: true, force: true });
    await rm(scratch, { recursive: true, force: true });
  });
  return { server, bare, url: server.url('r.git'), scratch };
}

function mirror(r: Remote, name: string, logger = new MemoryLogger(), extra: Partial<ConstructorParameters<typeof RemoteRepo>[0]> = {}): RemoteRepo {
  return new RemoteRepo({ url: r.url, branch: 'main', dir: join(r.scratch, name), logger, env: {}, ...extra });
}

function snapshot(workflowName: string, runId: string, status: RunSnapshot['status']): RunSnapshot {
  return { runId, workflow: workflowName, status, trigger: 'manual', params: {}, startedAt: '2025-01-01T00:00:00.000Z', tasks: {}, events: 0 };
}

async function writeRun(dir: string, runId: string, status: RunSnapshot['status'] = 'succeeded'): Promise<string> {
  return new GitAuditStore(dir).writeRun({ workflow: 'pipe', runId, run: snapshot('pipe', runId, status), events: [], status, summary: `pipe ${runId} ${status}` });
}

async function rev(dir: string, ref: string): Promise<string> {
  return (await git(dir, 'rev-parse', ref)).trim();
}

async function files(dir: string, ref: string): Promise<string[]> {
  return (await git(dir, 'ls-tree', '-r', '--name-only', ref)).trim().split('\n');
}

/** Every log line as text, errors with their whole cause chain. */
function logText(logger: MemoryLogger): string {
  return JSON.stringify(logger.entries, (_k, v: unknown) => (v instanceof Error ? serializeError(v) : v));
}

describe('RemoteRepo over smart HTTP', () => {
  it('clones on the first sync and returns the branch head, leaving no server process behind', async () => {
    const r = await remote();
    const repo = mirror(r, 'm');
    const head = await repo.sync();
    expect(head).toBe(await rev(r.bare, 'main'));
    const dir = join(r.scratch, 'm');
    expect(await rev(dir, 'refs/heads/main')).toBe(head);
    // Workflows are read from the commit, not from a working tree.
    const read = await readTreeAtCommit(dir, head, 'workflows', () => true);
    expect(read.map((f) => [f.path, new TextDecoder().decode(f.bytes)])).toEqual([['workflows/pipe.yaml', pipe]]);
    // A second instance on the same directory fetches instead of cloning.
    expect(await mirror(r, 'm').sync()).toBe(head);
    expect(r.server.requests.filter((q) => q.path.endsWith('/git-upload-pack')).length).toBeGreaterThanOrEqual(2);
    expect(r.server.requests.every((q) => q.status === 200)).toBe(true);

    // A request still streaming its body when the server closes: its backend is stopped too.
    const stalled = request(`${r.url}/git-upload-pack`, { method: 'POST', headers: { 'Content-Type': 'application/x-git-upload-pack-request' } });
    stalled.on('error', () => undefined);
    stalled.write('0032want ');
    const backends = async (): Promise<string[]> => (await descendants(process.pid)).map(describeProcess).filter((p) => /git/.test(p));
    await until('the backend of the stalled request', async () => (await backends()).length > 0);
    await r.server.close();
    expect(await backends()).toEqual([]);
  });

  it('sees a commit pushed with the git CLI to the HTTP URL at the next sync', async () => {
    const r = await remote();
    const repo = mirror(r, 'm');
    const first = await repo.sync();
    await git(r.scratch, 'clone', '-q', r.url, 'other');
    const other = join(r.scratch, 'other');
    await writeFile(join(other, 'workflows', 'second.yaml'), workflow('second', '  tasks:\n    - { name: b, run: "echo B" }\n'));
    await git(other, 'add', '-A');
    await git(other, 'commit', '-q', '-m', 'second workflow');
    await git(other, 'push', '-q', 'origin', 'main');
    const pushed = await rev(other, 'HEAD');
    expect(r.server.requests.some((q) => q.method === 'POST' && q.path.endsWith('/git-receive-pack') && q.status === 200)).toBe(true);

    const head = await repo.sync();
    expect(head).toBe(pushed);
    expect(head).not.toBe(first);
    const dir = join(r.scratch, 'm');
    expect(await rev(dir, 'refs/heads/main')).toBe(pushed);
    expect((await readTreeAtCommit(dir, head, 'workflows', () => true)).map((f) => f.path)).toEqual(['workflows/pipe.yaml', 'workflows/second.yaml']);
  });

  it('pushes caravan/runs to the remote, and again only when it moved', async () => {
    const r = await remote();
    const repo = mirror(r, 'm');
    await repo.sync();
    const dir = join(r.scratch, 'm');
    await writeRun(dir, 'r1');
    const tip = await writeRun(dir, 'r2');

    expect(await repo.pushAudit()).toEqual({ pushed: true, rebuilt: 0 });
    expect((await git(r.bare, 'log', '--format=%H', 'caravan/runs')).trim().split('\n')[0]).toBe(tip);
    expect(await files(r.bare, 'caravan/runs')).toEqual(['runs/pipe/r1/events.ndjson', 'runs/pipe/r1/run.json', 'runs/pipe/r2/events.ndjson', 'runs/pipe/r2/run.json']);
    expect(JSON.parse(await git(r.bare, 'show', 'caravan/runs:runs/pipe/r2/run.json'))).toMatchObject({ runId: 'r2', status: 'succeeded' });
    await git(r.bare, 'fsck', '--strict', '--no-progress');

    expect(await repo.pushAudit()).toEqual({ pushed: false, rebuilt: 0 });
    const next = await writeRun(dir, 'r3');
    expect(await repo.pushAudit()).toEqual({ pushed: true, rebuilt: 0 });
    expect(await rev(r.bare, 'caravan/runs')).toBe(next);
  });

  it('rebuilds its audit commits on a concurrent push from another controller and pushes without force', async () => {
    const r = await remote();
    const a = mirror(r, 'a');
    const b = mirror(r, 'b');
    const head = await a.sync();
    await b.sync();
    const dirA = join(r.scratch, 'a');
    const dirB = join(r.scratch, 'b');
    // Both controllers recorded the same sync: the local side wins, as documented.
    await new GitAuditStore(dirA).writeSync(head, { by: 'a' }, `sync ${head.slice(0, 12)} by a`, []);
    await writeRun(dirA, 'run-a');
    const originals = (await git(dirA, 'log', '--format=%an <%ae> %at%n%B%x00', 'caravan/runs')).split('\0').map((s) => s.trim()).filter((s) => s !== '');
    await new GitAuditStore(dirB).writeSync(head, { by: 'b' }, `sync ${head.slice(0, 12)} by b`, []);
    await writeRun(dirB, 'run-b');
    expect(await b.pushAudit()).toEqual({ pushed: true, rebuilt: 0 });
    const before = await rev(r.bare, 'caravan/runs');

    expect(await a.pushAudit()).toEqual({ pushed: true, rebuilt: 2 });
    const after = await rev(r.bare, 'caravan/runs');
    expect(after).not.toBe(before);
    // No force: what b pushed is still in the history, below a's commits.
    await git(r.bare, 'merge-base', '--is-ancestor', before, after);
    expect((await git(r.bare, 'rev-list', `${before}..${after}`)).trim().split('\n')).toHaveLength(2);
    expect(await files(r.bare, 'caravan/runs')).toEqual([
      'runs/pipe/run-a/events.ndjson', 'runs/pipe/run-a/run.json', 'runs/pipe/run-b/events.ndjson', 'runs/pipe/run-b/run.json', `syncs/${head}/report.json`,
    ]);
    expect(JSON.parse(await git(r.bare, 'show', `caravan/runs:syncs/${head}/report.json`))).toEqual({ by: 'a' });
    // The rebuilt commits keep their author (with its date) and message.
    const rebuilt = (await git(r.bare, 'log', '--format=%an <%ae> %at%n%B%x00', `${before}..${after}`)).split('\0').map((s) => s.trim()).filter((s) => s !== '');
    expect(rebuilt).toEqual(originals);
    expect(await rev(dirA, 'refs/heads/caravan/runs')).toBe(after);
    await git(r.bare, 'fsck', '--strict', '--no-progress');

    // b is behind now: its next push rebuilds its new record on a's.
    await writeRun(dirB, 'run-b2');
    expect(await b.pushAudit()).toEqual({ pushed: true, rebuilt: 1 });
    await git(r.bare, 'merge-base', '--is-ancestor', after, 'caravan/runs');
    expect(await files(r.bare, 'caravan/runs')).toContain('runs/pipe/run-b2/run.json');
    expect(await files(r.bare, 'caravan/runs')).toContain('runs/pipe/run-a/run.json');
  });

  it('keeps the remote\'s newer records when the local branch merged an older remote tip by hand', async () => {
    const r = await remote();
    const a = mirror(r, 'a');
    const b = mirror(r, 'b');
    const dirA = join(r.scratch, 'a');
    const dirB = join(r.scratch, 'b');
    await b.sync();
    await writeRun(dirB, 'run-0');
    await b.pushAudit();
    // a's mirror starts on the remote's audit branch (run-0), and adds run-a.
    await a.sync();
    const x = await writeRun(dirA, 'run-a');
    const z = await writeRun(dirB, 'run-b', 'running');
    await b.pushAudit();
    // The user merged the remote's branch into a's mirror, as one does after a rejected
    // push: a's first-parent line now meets the remote's history below the merge base.
    await git(dirA, 'fetch', '-q', 'origin', 'caravan/runs:refs/remotes/origin/caravan/runs');
    const tree = (await git(dirA, 'merge-tree', '--write-tree', x, z)).trim().split('\n')[0]!;
    const merge = (await git(dirA, 'commit-tree', tree, '-p', x, '-p', z, '-m', "Merge remote-tracking branch 'origin/caravan/runs'")).trim();
    await git(dirA, 'update-ref', 'refs/heads/caravan/runs', merge, x);
    await writeRun(dirA, 'run-a2');
    // Meanwhile b finished its run.
    await writeRun(dirB, 'run-b', 'succeeded');
    await b.pushAudit();
    const before = await rev(r.bare, 'caravan/runs');

    // run-a, the merge and run-a2: not run-0, which the remote has.
    expect(await a.pushAudit()).toEqual({ pushed: true, rebuilt: 3 });
    await git(r.bare, 'merge-base', '--is-ancestor', before, 'caravan/runs');
    expect((await git(r.bare, 'log', '--format=%s', 'caravan/runs')).trim().split('\n')).toEqual([
      'pipe run-a2 succeeded', "Merge remote-tracking branch 'origin/caravan/runs'", 'pipe run-a succeeded', 'pipe run-b succeeded', 'pipe run-b running', 'pipe run-0 succeeded',
    ]);
    // The merge brought in b's older run-b: the remote's newer one stays.
    expect(JSON.parse(await git(r.bare, 'show', 'caravan/runs:runs/pipe/run-b/run.json'))).toMatchObject({ status: 'succeeded' });
    expect(await files(r.bare, 'caravan/runs')).toEqual([
      'runs/pipe/run-0/events.ndjson', 'runs/pipe/run-0/run.json', 'runs/pipe/run-a/events.ndjson', 'runs/pipe/run-a/run.json', 'runs/pipe/run-a2/events.ndjson', 'runs/pipe/run-a2/run.json', 'runs/pipe/run-b/events.ndjson', 'runs/pipe/run-b/run.json',
    ]);
    // Every rebuilt commit has one parent: the history stays a line on top of the remote's.
    expect((await git(r.bare, 'rev-list', '--min-parents=2', `${before}..caravan/runs`)).trim()).toBe('');
  });

  it('a remote that already has its audit commits only moves the local branch forward', async () => {
    const r = await remote();
    const a = mirror(r, 'a');
    const b = mirror(r, 'b');
    await a.sync();
    await b.sync();
    const dirA = join(r.scratch, 'a');
    await writeRun(dirA, 'run-a');
    await a.pushAudit();
    await writeRun(join(r.scratch, 'b'), 'run-b');
    await b.pushAudit();
    // a wrote nothing since its push: its branch only follows the remote's.
    expect(await a.pushAudit()).toEqual({ pushed: false, rebuilt: 0 });
    expect(await rev(dirA, 'refs/heads/caravan/runs')).toBe(await rev(r.bare, 'caravan/runs'));
  });

  it('pushes again on the new tip when the remote branch moves during its push', async () => {
    const r = await remote();
    const a = mirror(r, 'a');
    const b = mirror(r, 'b');
    await a.sync();
    await b.sync();
    await writeRun(join(r.scratch, 'b'), 'run-b');
    const theirs = await writeRun(join(r.scratch, 'b'), 'run-b');
    await git(join(r.scratch, 'b'), 'push', '-q', r.url, 'refs/heads/caravan/runs:refs/heads/pending');
    // Another controller's push lands between the advertisement a pushes against and a's
    // update: the server then refuses a's update (its expected old value is stale).
    const hook = join(r.bare, 'hooks', 'pre-receive');
    await writeFile(hook, `#!/bin/sh\nif [ ! -e "$0.done" ]; then\n  touch "$0.done"\n  env -u GIT_QUARANTINE_PATH git update-ref refs/heads/caravan/runs refs/heads/pending\nfi\n`, { mode: 0o755 });
    const ours = await writeRun(join(r.scratch, 'a'), 'run-a');

    expect(await a.pushAudit()).toEqual({ pushed: true, rebuilt: 1 });
    // b's push to pending, a's refused one, and a's second.
    expect(r.server.requests.filter((q) => q.path.endsWith('/git-receive-pack')).length).toBe(3);
    const tip = await rev(r.bare, 'caravan/runs');
    expect(tip).not.toBe(ours);
    expect((await git(r.bare, 'rev-parse', `${tip}^`)).trim()).toBe(theirs);
    expect(await files(r.bare, 'caravan/runs')).toEqual(['runs/pipe/run-a/events.ndjson', 'runs/pipe/run-a/run.json', 'runs/pipe/run-b/events.ndjson', 'runs/pipe/run-b/run.json']);
  });

  it('a push the server refuses for another reason is an error, not a retry', async () => {
    const r = await remote();
    const a = mirror(r, 'a');
    await a.sync();
    await writeFile(join(r.bare, 'hooks', 'pre-receive'), '#!/bin/sh\necho "caravan/runs is protected" >&2\nexit 1\n', { mode: 0o755 });
    const ours = await writeRun(join(r.scratch, 'a'), 'run-a');
    const err = await a.pushAudit().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CaravanError);
    expect((err as CaravanError).code).toBe('AUDIT_WRITE_FAILED');
    expect((err as CaravanError).message).toBe(`${r.url} refused the push of caravan/runs: refs/heads/caravan/runs: pre-receive hook declined; remote: caravan/runs is protected`);
    expect(r.server.requests.filter((q) => q.path.endsWith('/git-receive-pack')).length).toBe(1);
    await expect(git(r.bare, 'rev-parse', '--verify', '-q', 'refs/heads/caravan/runs')).rejects.toThrow();
    expect(await rev(join(r.scratch, 'a'), 'refs/heads/caravan/runs')).toBe(ours);
  });

  describe('credentials', () => {
    it('a wrong password is a clear error naming the URL without the password', async () => {
      const r = await remote({ username: 'caravan', password: PASSWORD });
      const logger = new MemoryLogger();
      const wrong = 'wrong-password-42';
      const err = await mirror(r, 'm', logger, { auth: { username: 'caravan', password: wrong } }).sync().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CaravanError);
      expect((err as CaravanError).code).toBe('IO');
      expect((err as CaravanError).message).toBe(`${r.url} refused the credentials from the configured credentials (HTTP 401) on clone`);
      // In the URL, the userinfo is cut out of the message too.
      const inUrl = await mirror(r, 'n', logger, { url: r.server.urlWithAuth('r.git', 'caravan', wrong) }).sync().catch((e: unknown) => e);
      expect((inUrl as CaravanError).message).toBe(`${r.url} refused the credentials from the URL (HTTP 401) on clone`);
      for (const e of [err, inUrl]) expect(JSON.stringify(serializeError(e))).not.toContain(wrong);
      expect(logText(logger)).not.toContain(wrong);
      // None at all says how to give them.
      await expect(mirror(r, 'o').sync()).rejects.toThrow(`${r.url} requires credentials (HTTP 401) on clone: set CARAVAN_GIT_USERNAME and CARAVAN_GIT_PASSWORD, CARAVAN_GIT_TOKEN, or CARAVAN_GIT_CREDENTIALS_FILE`);
      // Nothing was left in place of the mirrors.
      await expect(readFile(join(r.scratch, 'm', '.git', 'config'))).rejects.toThrow();
    });

    it('are taken from the environment or a file, and never appear in logs or in the mirror', async () => {
      const r = await remote({ username: 'caravan', password: PASSWORD });
      const logger = new MemoryLogger();
      const envRepo = mirror(r, 'env', logger, { env: { CARAVAN_GIT_USERNAME: 'caravan', CARAVAN_GIT_PASSWORD: PASSWORD } });
      const file = join(r.scratch, 'credentials');
      await writeFile(file, `caravan:${PASSWORD}\n`, { mode: 0o600 });
      const fileRepo = mirror(r, 'file', logger, { env: { CARAVAN_GIT_CREDENTIALS_FILE: file } });
      await envRepo.sync();
      await fileRepo.sync();
      await writeRun(join(r.scratch, 'env'), 'run-env');
      expect(await envRepo.pushAudit()).toEqual({ pushed: true, rebuilt: 0 });
      await writeRun(join(r.scratch, 'file'), 'run-file');
      // A rebuild and a second fetch, all logged.
      expect(await fileRepo.pushAudit()).toEqual({ pushed: true, rebuilt: 1 });

      const urlRepo = mirror(r, 'url', logger, { url: r.server.urlWithAuth('r.git', 'caravan', PASSWORD) });
      expect(await urlRepo.sync()).toBe(await rev(r.bare, 'main'));

      const token = mirror(r, 'token', logger, { env: { CARAVAN_GIT_TOKEN: PASSWORD } });
      // The token goes with the user name x-access-token, which this server does not accept.
      await expect(token.sync()).rejects.toThrow(`${r.url} refused the credentials from CARAVAN_GIT_TOKEN (HTTP 401) on clone`);

      expect(logger.entries.map((e) => e.msg)).toEqual(expect.arrayContaining(['remote repository cloned', 'audit branch pushed', 'audit commits rebuilt on the remote tip']));
      const text = logText(logger);
      expect(text).toContain(r.url);
      expect(text).not.toContain(PASSWORD);
      // Nothing had to be masked either: the password never reached the logger.
      expect(text).not.toContain('***');
      for (const name of ['env', 'file', 'url']) expect(await readFile(join(r.scratch, name, '.git', 'config'), 'utf8')).not.toContain(PASSWORD);
      expect(r.server.requests.some((q) => !q.authorized)).toBe(true);
    });

    it('a malformed credentials file, a URL that is not HTTP or a missing branch is a clear error that quotes no secret', async () => {
      const r = await remote({ username: 'caravan', password: PASSWORD });
      const file = join(r.scratch, 'credentials');
      await writeFile(file, `${PASSWORD}\n`);
      const err = await mirror(r, 'm', undefined, { env: { CARAVAN_GIT_CREDENTIALS_FILE: file } }).sync().catch((e: unknown) => e);
      expect((err as CaravanError).code).toBe('USAGE');
      expect((err as CaravanError).message).toBe(`the Git credentials file ${file} (CARAVAN_GIT_CREDENTIALS_FILE) must hold username:password on its first line`);
      expect(() => mirror(r, 'm', undefined, { url: `ssh://git:${PASSWORD}@127.0.0.1/r.git` })).toThrow('the remote repository URL must be http:// or https:// (Git\'s smart HTTP protocol), not ssh://');
      const missing = await mirror(r, 'm', undefined, { branch: 'release', auth: { username: 'caravan', password: PASSWORD } }).sync().catch((e: unknown) => e);
      expect((missing as CaravanError).code).toBe('GIT_REF_NOT_FOUND');
      expect((missing as CaravanError).message).toBe(`branch release not found at ${r.url}`);
    });
  });
});
