import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiTokens } from '../../engine/api/ApiTokens.js';
import { controllerBackend } from '../../engine/api/controllerBackend.js';
import { ControllerServer } from '../../engine/api/ControllerServer.js';
import { startController, type RunningController } from '../../engine/api/startController.js';
import { MemoryLogger } from '../../engine/run/Logger.js';
import { caravanBin, runBin } from '../harness/cli.js';
import { repoWith, workflow } from '../harness/gitRepo.js';
import { until } from '../harness/until.js';

/**
 * The built `caravan` as a client of a real controller (started here with its HTTP API on a
 * loopback port, a real Git repository and a tokens file): runs started from the CLI live in
 * the controller, and every command prints what it prints in-process, with the same exit
 * codes; refusals (role, token, follower, controller down) are clear and never show a token.
 */

const TOKENS = {
  operator: 'operator-token-0123456789abcdefXYZ',
  alice: 'alice-approver-token-0123456789abQ',
  viewer: 'viewer-token-0123456789abcdefghJK',
};

const files = {
  'quick.yaml': workflow('quick', '  params:\n    quarter: { type: string, default: "Q4", pattern: "^Q[1-4]$" }\n  tasks:\n    - { name: hello, run: "echo hello ${{ params.quarter }}" }\n    - { name: bye, needs: [hello], run: "echo bye" }\n'),
  'retried.yaml': workflow('retried', '  tasks:\n    - { name: first, run: "echo first >> first-count" }\n    - { name: second, needs: [first], run: "test -e second-ok" }\n'),
  'failing.yaml': workflow('failing', '  tasks:\n    - { name: boom, run: "echo about to fail; exit 3" }\n'),
  'gated.yaml': workflow('gated', '  tasks:\n    - { name: gate, approval: { approvers: [alice], timeout: 1h } }\n    - { name: after, needs: [gate], run: "echo after" }\n'),
  'slow.yaml': workflow('slow', '  tasks:\n    - { name: wait, run: "sleep 60" }\n    - { name: next, needs: [wait], run: "echo next" }\n'),
  'ticks.yaml': workflow('ticks', '  tasks:\n    - { name: tick, run: "for i in 1 2 3; do echo tick $i; sleep 0.3; done" }\n'),
};

let dir: string;
let ctl: RunningController;
let url: string;
const logger = new MemoryLogger();
/** Everything every CLI process printed, to look for tokens in at the end. */
const printed: string[] = [];
const children: ChildProcess[] = [];

beforeAll(async () => {
  dir = await repoWith(files);
  const tokensFile = join(dir, '.tokens.yaml');
  await writeFile(tokensFile, `- { name: ops, token: ${TOKENS.operator}, role: operator }\n- { name: alice, token: ${TOKENS.alice}, role: [approver, viewer] }\n- { name: watcher, token: ${TOKENS.viewer}, role: viewer }\n`);
  ctl = await startController({ repoDir: dir, intervalMs: 3_600_000, logger, listen: { host: '127.0.0.1', port: 0 }, api: { tokens: await ApiTokens.load(tokensFile, {}) } });
  url = ctl.server!.url;
}, 60_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await ctl?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

function env(token: string | undefined, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '', CARAVAN_CONTROLLER: url, ...(token !== undefined ? { CARAVAN_TOKEN: token } : {}), ...extra };
}

/** The built CLI against the controller, from a directory that is no repository: nothing works in-process there. */
async function caravan(token: string | undefined, ...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await runBin(argv, { cwd: '/', env: env(token), timeoutMs: 60_000 });
  printed.push(r.out, r.err);
  return r;
}

/** A CLI process left running (a followed run), with its output so far. */
function started(token: string, ...argv: string[]): { child: ChildProcess; out: () => string; err: () => string; exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }> } {
  const child = spawn(process.execPath, [caravanBin, ...argv], { cwd: '/', env: env(token), stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('close', (code, signal) => {
    printed.push(out, err);
    r({ code, signal });
  }));
  return { child, out: () => out, err: () => err, exit };
}

function runIdIn(text: string): string {
  const m = /run (\S+) of \S+ started/.exec(text);
  if (m === null) throw new Error(`no run id in: ${text}`);
  return m[1]!;
}

describe('caravan run --controller', () => {
  it('starts the run in the controller, prints its progress and exits 0; status, logs and runs read it back', async () => {
    const run = await caravan(TOKENS.operator, 'run', 'quick', '-p', 'quarter=Q2');
    expect(run.code, run.err).toBe(0);
    expect(run.err).toBe('');
    const runId = runIdIn(run.out);
    expect(run.out).toMatch(/^\d\d:\d\d:\d\d hello succeeded/m);
    expect(run.out).toMatch(/^\d\d:\d\d:\d\d bye succeeded/m);
    expect(run.out).toMatch(new RegExp(`run ${runId} of quick succeeded`));
    // It lives in the controller: its Git audit has it, with the operator's token name as trigger.
    const rec = await ctl.app.audit.readRun(runId);
    expect(rec?.run).toMatchObject({ status: 'succeeded', trigger: 'api:ops', params: { quarter: 'Q2' } });

    const status = await caravan(TOKENS.viewer, 'status', runId);
    expect(status.code, status.err).toBe(0);
    expect(status.err).toBe('');
    expect(status.out).toMatch(new RegExp(`^run ${runId} of quick: succeeded\\n`));
    expect(status.out).toMatch(/^hello\s+succeeded\s+1/m);
    const json = await caravan(TOKENS.viewer, 'status', runId, '--json');
    expect(JSON.parse(json.out)).toMatchObject({ runId, workflow: 'quick', status: 'succeeded', live: false, tasks: { hello: { status: 'succeeded' }, bye: { status: 'succeeded' } } });

    const one = await caravan(TOKENS.viewer, 'logs', runId, 'hello');
    expect(one.code).toBe(0);
    expect(one.out).toBe('hello#1 hello Q2\n');
    const all = await caravan(TOKENS.viewer, 'logs', runId, '--timestamps');
    expect(all.out).toMatch(/^\S+Z hello#1 hello Q2\n\S+Z bye#1 bye\n$/);

    const failing = await caravan(TOKENS.operator, 'run', 'failing');
    expect(failing.code).toBe(1);
    expect(failing.out).toMatch(/boom failed \(attempt 1\)/);
    expect(failing.out).toMatch(/run \S+ of failing failed/);

    const runs = await caravan(TOKENS.viewer, 'runs');
    expect(runs.out.split('\n')[0]).toMatch(/^RUN\s+WORKFLOW\s+STATUS\s+STARTED\s+DURATION$/);
    expect(runs.out).toContain(runId);
    const onlyFailed = await caravan(TOKENS.viewer, 'runs', '--status', 'failed');
    expect(onlyFailed.out).not.toContain(runId);
    expect(onlyFailed.out).toMatch(/failing\s+failed/);
    const ofQuick = await caravan(TOKENS.viewer, 'runs', 'quick', '-n', '1');
    expect(ofQuick.out.trim().split('\n')).toHaveLength(2);
    expect(ofQuick.out).toContain(runId);
    const none = await caravan(TOKENS.viewer, 'runs', '--workflow', 'gated', '--status', 'succeeded');
    expect(none.out).toBe(`no succeeded runs of gated in the controller at ${url}\n`);
  });

  it('--json prints the run snapshot as JSON lines; a bad param is refused naming it (64); a file or in-process flags are refused', async () => {
    const run = await caravan(TOKENS.operator, 'run', 'quick', '--json');
    expect(run.code, run.err).toBe(0);
    const lines = run.out.trim().split('\n').map((l) => JSON.parse(l) as { status: string; workflow: string });
    expect(lines.at(-1)).toMatchObject({ workflow: 'quick', status: 'succeeded' });
    const bad = await caravan(TOKENS.operator, 'run', 'quick', '-p', 'quarter=Q9');
    expect(bad.code).toBe(64);
    expect(bad.err).toMatch(/quarter/);
    const file = await caravan(TOKENS.operator, 'run', 'workflows/quick.yaml');
    expect(file.code).toBe(64);
    expect(file.err).toMatch(/name the workflow/);
    const local = await caravan(TOKENS.operator, 'run', 'quick', '--backend', 'nomad');
    expect(local.code).toBe(64);
    expect(local.err).toMatch(/--backend is for a run in this process/);
    const missing = await caravan(TOKENS.operator, 'run', 'absent');
    expect(missing.code).toBe(66);
  });

  it('an approval: refused with the viewer token (77, naming the role), granted with the approver token; the follower exits with the run', async () => {
    const follower = started(TOKENS.operator, 'run', 'gated');
    await until('the gate to wait', () => /gate waits for approval/.test(follower.out()));
    const runId = runIdIn(follower.out());
    expect(follower.out()).toContain(`(caravan approve ${runId} gate)`);
    const viewer = await caravan(TOKENS.viewer, 'approve', runId, 'gate');
    expect(viewer.code).toBe(77);
    expect(viewer.err).toMatch(/needs the approver role/);
    const operator = await caravan(TOKENS.operator, 'approve', runId, 'gate');
    expect(operator.code).toBe(77);
    expect(operator.err).toMatch(/missing role: approver/);
    const alice = await caravan(TOKENS.alice, 'approve', runId, 'gate', '--reason', 'looks good');
    expect(alice.code, alice.err).toBe(0);
    expect(alice.out).toBe(`sent approve gate to run ${runId} (as alice, through the controller at ${url})\n`);
    expect((await follower.exit).code).toBe(0);
    expect(follower.out()).toMatch(/after succeeded/);
    const again = await caravan(TOKENS.alice, 'approve', runId, 'gate');
    expect(again.code).toBe(64);
    expect(again.err).toMatch(/is succeeded: nothing to approve/);
  });

  it('cancel ends a followed run (exit 1); Ctrl-C detaches (130) and the run goes on in the controller', async () => {
    const follower = started(TOKENS.operator, 'run', 'slow');
    await until('the task to start', () => /wait started/.test(follower.out()));
    const runId = runIdIn(follower.out());
    const cancel = await caravan(TOKENS.operator, 'cancel', runId, '--reason', 'not today');
    expect(cancel.code, cancel.err).toBe(0);
    expect((await follower.exit).code).toBe(1);
    expect(follower.out()).toMatch(new RegExp(`run ${runId} of slow cancelled`));

    const detached = started(TOKENS.operator, 'run', 'slow');
    await until('the task to start', () => /wait started/.test(detached.out()));
    const other = runIdIn(detached.out());
    detached.child.kill('SIGINT');
    expect((await detached.exit).code).toBe(130);
    expect(detached.err()).toContain(`run ${other} goes on in the controller: caravan status ${other} --controller ${url}`);
    const status = await caravan(TOKENS.viewer, 'status', other);
    expect(status.out).toMatch(new RegExp(`^run ${other} of slow: running \\(live in the controller at `));
    expect((await caravan(TOKENS.operator, 'cancel', other)).code).toBe(0);
    await until('the detached run to be cancelled', async () => (await ctl.app.audit.readRun(other))?.run.status === 'cancelled');
    const late = await caravan(TOKENS.operator, 'pause', other);
    expect(late.code).toBe(64);
  });

  it('retry: the controller reruns what failed and reuses what succeeded; the viewer may not (77)', async () => {
    const failed = await caravan(TOKENS.operator, 'run', 'retried');
    expect(failed.code).toBe(1);
    const failedId = /run (\S+) of retried failed/.exec(failed.out)![1]!;
    await until('the failed run to be recorded', async () => (await ctl.app.audit.readRun(failedId))?.run.status === 'failed');
    expect((await caravan(TOKENS.viewer, 'retry', failedId)).code).toBe(77);
    await writeFile(join(dir, 'second-ok'), '');
    const r = await caravan(TOKENS.operator, 'retry', failedId);
    expect(r.code, r.out + r.err).toBe(0);
    expect(r.err).toMatch(new RegExp(`^caravan: run (\\S+) retries run ${failedId}: reusing first; running again second \\(failed\\)\n`));
    expect(r.out).toMatch(/run \S+ of retried succeeded/);
    expect(await readFile(join(dir, 'first-count'), 'utf8')).toBe('first\n');
    const again = await caravan(TOKENS.operator, 'retry', /run (\S+) of retried succeeded/.exec(r.out)![1]!);
    expect(again.code).toBe(64);
    expect(again.err).toContain('nothing failed, so nothing to retry');
  });

  it('logs --follow prints a task\'s lines as the controller writes them and ends with the run', async () => {
    const res = await fetch(`${url}/api/v1/workflows/ticks/runs`, { method: 'POST', headers: { authorization: `Bearer ${TOKENS.operator}`, 'content-type': 'application/json' }, body: '{}' });
    const { runId } = (await res.json()) as { runId: string };
    const follow = await caravan(TOKENS.viewer, 'logs', runId, 'tick', '--follow');
    expect(follow.code, follow.err).toBe(0);
    expect(follow.out).toBe('tick#1 tick 1\ntick#1 tick 2\ntick#1 tick 3\n');
    const noTask = await caravan(TOKENS.viewer, 'logs', runId, '--follow');
    expect(noTask.code).toBe(64);
  });
});

describe('refusals', () => {
  it('a wrong token and no token are 77 with a clear message; the token shows nowhere', async () => {
    const wrong = await caravan('not-a-known-token-0123456789', 'runs');
    expect(wrong.code).toBe(77);
    expect(wrong.err).toMatch(/refused the request \(unknown token\); check the token in CARAVAN_TOKEN or --token-file/);
    expect(wrong.err).not.toContain('not-a-known-token');
    const none = await caravan(undefined, 'status', 'some-run');
    expect(none.code).toBe(77);
    expect(none.err).toMatch(/no token was given: set CARAVAN_TOKEN/);
    const unknownRun = await caravan(TOKENS.viewer, 'status', 'no-such-run');
    expect(unknownRun.code).toBe(66);
  });

  it('--token-file: the token is read from the file (never a flag); a missing file is 66', async () => {
    const file = join(dir, '.viewer-token');
    await writeFile(file, `${TOKENS.viewer}\n`);
    const r = await runBin(['runs', '--controller', url, '--token-file', file, '-n', '1'], { cwd: '/', env: { PATH: process.env['PATH'] ?? '' } });
    printed.push(r.out, r.err);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/^RUN/);
    const missing = await runBin(['runs', '--controller', url, '--token-file', join(dir, 'nope')], { cwd: '/', env: { PATH: process.env['PATH'] ?? '' } });
    expect(missing.code).toBe(66);
    expect(missing.err).toMatch(/cannot read the token file/);
  });

  it("a follower's 503 names the leader to use (69)", async () => {
    const tokens = new ApiTokens([{ name: 'ops', token: TOKENS.operator, roles: ['operator'] }]);
    const backend = { ...controllerBackend(ctl.app, ctl.controller, undefined), role: () => 'follower' as const, leaderAddress: async () => 'http://leader.example:8080' };
    const follower = await ControllerServer.start({ host: '127.0.0.1', port: 0, logger, readiness: async () => ({ ready: true, details: {} }), onPush: () => undefined, api: { backend, tokens } });
    try {
      const r = await runBin(['cancel', 'some-run', '--controller', follower.url], { cwd: '/', env: { PATH: process.env['PATH'] ?? '', CARAVAN_TOKEN: TOKENS.operator } });
      printed.push(r.out, r.err);
      expect(r.code).toBe(69);
      expect(r.err).toBe(`caravan: the controller at ${follower.url} is not the leader: use --controller http://leader.example:8080\n`);
    } finally {
      await follower.close();
    }
  });

  it('the controller down: 69 naming the URL; credentials in the URL are refused without being shown', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const down = await runBin(['status', 'x', '--controller', `http://127.0.0.1:${port}`], { cwd: '/', env: { PATH: process.env['PATH'] ?? '', CARAVAN_TOKEN: TOKENS.viewer } });
    expect(down.code).toBe(69);
    expect(down.err).toBe(`caravan: cannot reach the controller at http://127.0.0.1:${port} (ECONNREFUSED)\n`);
    const creds = await runBin(['runs', '--controller', `http://me:hunter2@127.0.0.1:${port}`], { cwd: '/', env: { PATH: process.env['PATH'] ?? '' } });
    expect(creds.code).toBe(64);
    expect(creds.err).not.toContain('hunter2');
  });

  it('help names --controller and --token-file on the commands that take them, and only there', async () => {
    for (const cmd of ['run', 'retry', 'runs', 'status', 'logs', 'approve', 'reject', 'cancel', 'pause', 'unpause']) {
      const help = await runBin([cmd, '--help'], { cwd: '/', env: { PATH: process.env['PATH'] ?? '' } });
      expect(help.out, cmd).toMatch(/--controller <url>\s+talk to the controller's HTTP API/);
      expect(help.out, cmd).toMatch(/--token-file <file>/);
    }
    for (const cmd of ['recover', 'validate']) expect((await runBin([cmd, '--help'], { cwd: '/' })).out, cmd).not.toContain('--controller');
  });

  it('no token appears in any output of the CLI or in the controller\'s log lines', () => {
    expect(printed.length).toBeGreaterThan(20);
    const logs = JSON.stringify(logger.entries);
    expect(logs).toMatch(/api request/);
    for (const t of Object.values(TOKENS)) {
      for (const p of printed) expect(p).not.toContain(t);
      expect(logs).not.toContain(t);
    }
  });
});
