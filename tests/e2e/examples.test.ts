import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:http';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it, onTestFinished } from 'vitest';
import { caravanBin, cli, withEnv } from '../harness/cli.js';
import { git } from '../harness/gitRepo.js';
import { until } from '../harness/until.js';

/** The example workflows as a user runs them: `caravan run` in a copy of this repository. */
const root = fileURLToPath(new URL('../../', import.meta.url));

/** A fresh repository holding what this one has for the examples: workflows/ and .gitignore. */
async function copyOfRepository(): Promise<string> {
  const copy = await mkdtemp(join(tmpdir(), 'caravan-examples-'));
  onTestFinished(() => rm(copy, { recursive: true, force: true }));
  await git(copy, 'init', '-q', '-b', 'main');
  await cp(join(root, 'workflows'), join(copy, 'workflows'), { recursive: true });
  await cp(join(root, '.gitignore'), join(copy, '.gitignore'));
  await git(copy, 'add', '-A');
  await git(copy, 'commit', '-q', '-m', 'the examples');
  return copy;
}

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
});

/** `caravan run` in a process of its own, with extra environment variables. */
function spawnRun(cwd: string, argv: string[], env: NodeJS.ProcessEnv = {}): { output: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [caravanBin, 'run', ...argv], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (c: Buffer) => { out += c.toString(); });
  child.stderr!.on('data', (c: Buffer) => { out += c.toString(); });
  return { output: () => out, exited: new Promise((r) => child.on('exit', (code) => r(code))) };
}

async function approvalRequested(run: { output: () => string }): Promise<string> {
  let runId = '';
  await until(() => `release-approval to wait for approval\n${run.output()}`, () => {
    const m = /review waits for approval: .* \(caravan approve (\S+) review\)/.exec(run.output());
    if (m !== null) runId = m[1]!;
    return m !== null;
  });
  return runId;
}

describe('the example workflows', () => {
  it('leave a copy of the repository as clean as they found it (what they write goes to the git-ignored out/)', async () => {
    const copy = await copyOfRepository();
    // thumbnail-swarm's pool runs its items as local processes here; 20 images keep it short.
    for (const [name, ...params] of [['quarterly-report'], ['research-supervisor'], ['order-saga'], ['nightly-rollup'], ['thumbnail-swarm', '--param', 'images=20']] as const) {
      const r = await cli(copy, 'run', name, ...params);
      expect(r.code, `${name}: ${r.out}${r.err}`).toBe(0);
      expect(await git(copy, 'status', '--porcelain', '--untracked-files=all'), `caravan run ${name}`).toBe('');
    }
    expect(JSON.parse(await readFile(join(copy, 'out', 'report.json'), 'utf8'))).toMatchObject({ quarter: 'Q4' });
  });

  it('release-approval succeeds on the embedded default once a listed approver approves: the announcement is skipped without notifyUrl', async () => {
    const copy = await copyOfRepository();
    const run = spawnRun(copy, ['release-approval', '--param', 'version=v1.4.2']);
    const runId = await approvalRequested(run);
    expect((await withEnv({ USER: 'alice' }, () => cli(copy, 'approve', runId, 'review'))).code).toBe(0);
    expect(await run.exited, run.output()).toBe(0);
    expect(run.output()).toMatch(/announce skipped: /);
    expect(JSON.parse((await cli(copy, 'status', runId, '--json')).out)).toMatchObject({ status: 'succeeded', tasks: { deploy: { status: 'succeeded' }, announce: { status: 'skipped' } } });
    expect(await git(copy, 'status', '--porcelain', '--untracked-files=all')).toBe('');
  });

  it('release-approval with notifyUrl announces the release there, with the hook token from the secret', async () => {
    const copy = await copyOfRepository();
    const seen: Array<{ url: string; auth: string | undefined; body: string }> = [];
    const receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => { body += c.toString(); });
      req.on('end', () => {
        seen.push({ url: req.url!, auth: req.headers.authorization, body });
        res.end('{}');
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    onTestFinished(() => new Promise<void>((r) => receiver.close(() => r())));
    const url = `http://127.0.0.1:${(receiver.address() as { port: number }).port}/releases`;
    const run = spawnRun(copy, ['release-approval', '--param', 'version=v1.4.2', '--param', `notifyUrl=${url}`], { CARAVAN_SECRET_CARAVAN_RELEASE_HOOK_TOKEN: 'Bearer hook-token-1' });
    const runId = await approvalRequested(run);
    expect((await withEnv({ USER: 'alice' }, () => cli(copy, 'approve', runId, 'review'))).code).toBe(0);
    expect(await run.exited, run.output()).toBe(0);
    expect(seen).toEqual([{ url: '/releases', auth: 'Bearer hook-token-1', body: '{"text":"Released v1.4.2"}' }]);
  });
});
