import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { caravanBin, cli, withEnv } from '../harness/cli.js';
import { freePort } from '../harness/natsServer.js';
import { isAlive } from '../harness/processTree.js';
import { git, tempRepo, workflow } from '../harness/gitRepo.js';
import { until } from '../harness/until.js';

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
});

/** Starts the real CLI in its own process. */
function spawnCli(cwd: string, ...argv: string[]): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [caravanBin, ...argv], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (c: Buffer) => { out += c.toString(); });
  child.stderr!.on('data', (c: Buffer) => { out += c.toString(); });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, output: () => out, exited };
}

/** Waits until a spawned run asks for approval of `task`; returns the run id it names. */
async function approvalRequested(proc: { output: () => string }, task: string): Promise<string> {
  let runId = '';
  await until(`the approval request for ${task}`, () => {
    const m = new RegExp(`${task} waits for approval \\(caravan approve (\\S+) ${task}\\)`).exec(proc.output());
    if (m !== null) runId = m[1]!;
    return m !== null;
  });
  return runId;
}

const ok = workflow('ok', '  params:\n    who: { type: string, default: world }\n  tasks:\n    - { name: a, run: "echo hello ${{ params.who }}" }\n    - { name: b, needs: [a], agent: noop }\n');
const bad = workflow('bad', '  tasks:\n    - { name: a, run: "exit 4" }\n    - { name: b, needs: [a], run: "true" }\n');

describe('caravan run', () => {
  it('prints plain progress, exits 0, and says where the run is recorded', async () => {
    const dir = await tempRepo({ 'ok.yaml': ok });
    const r = await cli(dir, 'run', 'ok', '--param', 'who=caravan');
    expect(r.code).toBe(0);
    const lines = r.out.trim().split('\n').map((l) => l.replace(/^\d\d:\d\d:\d\d /, ''));
    expect(lines[0]).toMatch(/^run \d{8}-\d{6}-[0-9a-f]{6} of ok started$/);
    expect(lines.slice(1, 4)).toEqual(['a started', expect.stringMatching(/^a succeeded in \d+ms$/), 'b started']);
    expect(lines.at(-2)).toMatch(/^run \d{8}-\d{6}-[0-9a-f]{6} of ok succeeded in \d+ms$/);
    expect(lines.at(-1)).toMatch(/^recorded on caravan\/runs at [0-9a-f]{12}: git log caravan\/runs; caravan status \S+$/);
  });

  it('with --json prints one event per line, each with runId and type (and task, attempt where they apply); a failed run exits 1', async () => {
    const dir = await tempRepo({ 'bad.yaml': bad });
    const r = await cli(dir, 'run', 'bad', '--json');
    expect(r.code).toBe(1);
    const events = r.out.trim().split('\n').map((l) => JSON.parse(l) as { runId: string; type: string; task?: string; attempt?: number });
    expect(new Set(events.map((e) => e.runId)).size).toBe(1);
    expect(events.map((e) => [e.type, e.task ?? null, e.attempt ?? null])).toEqual([
      ['run.started', null, null], ['task.queued', 'a', 1], ['task.started', 'a', 1], ['task.failed', 'a', 1], ['task.skipped', 'b', null], ['run.failing', null, null], ['run.failed', null, null],
    ]);
    expect(r.err).toMatch(/^run \S+ of bad failed in \d+ms: task 'a' failed: exited with code 4\n/);
  });

  it('gives clear errors, not stack traces, for an unknown workflow, a bad param and a directory that is not a repository', async () => {
    const dir = await tempRepo({ 'ok.yaml': ok });
    expect(await cli(dir, 'run', 'okk')).toEqual({ code: 66, out: '', err: "caravan: unknown workflow 'okk'; workflows here: ok\n" });
    expect(await cli(dir, 'run', 'ok', '-p', 'who')).toEqual({ code: 64, out: '', err: "caravan: --param expects name=value, got 'who'\n" });
    expect(await cli(dir, 'run', 'ok', '-p', 'nobody=1')).toEqual({ code: 64, out: '', err: "caravan: unknown param 'nobody' (declared: who)\n" });
    const notRepo = await cli('/', 'run', 'ok');
    expect(notRepo.code).toBe(64);
    expect(notRepo.err).toMatch(/is not inside a Git repository; Caravan records runs in Git \(run `git init` first\)\n$/);
  });

  it('runs, status and logs read the audit branch', async () => {
    const dir = await tempRepo({ 'ok.yaml': ok });
    await cli(dir, 'run', 'ok');
    const runs = await cli(dir, 'runs');
    const id = runs.out.split('\n')[1]!.split(/\s+/)[0]!;
    expect(runs.out).toMatch(new RegExp(`^RUN\\s+WORKFLOW\\s+STATUS\\s+STARTED\\s+DURATION\\n${id}\\s+ok\\s+succeeded\\s+\\S+\\s+\\d+ms\\n$`));
    const status = await cli(dir, 'status', id);
    expect(status.out).toMatch(new RegExp(`^run ${id} of ok: succeeded\\nstarted \\S+, took \\d+ms\\nTASK\\s+STATUS\\s+ATTEMPTS\\s+DURATION\\s+NOTE\\na\\s+succeeded\\s+1\\s+\\d+ms\\nb\\s+succeeded\\s+1\\s+\\d+ms\\n$`));
    expect((await cli(dir, 'logs', id, 'a')).out).toBe('a#1 hello world\n');
    expect(await cli(dir, 'status', 'nope')).toEqual({ code: 66, out: '', err: 'caravan: no run nope on caravan/runs or in the local journal\n' });
  });

  it('refuses a run id that would name a file outside its directory, and touches nothing there', async () => {
    const dir = await tempRepo({ 'ok.yaml': ok });
    // What `../../x` would reach from .git/caravan/journal/: a journal-shaped file of someone else's.
    const outside = join(dir, '.git', 'x.ndjson');
    await writeFile(outside, '{"runId":"x","at":0,"type":"run.started","workflow":"ok","params":{}}\n');
    for (const argv of [['status', '../../x'], ['logs', '../../x'], ['recover', '../../x'], ['cancel', '../../x'], ['approve', '../../x', 'a']]) {
      const r = await cli(dir, ...argv);
      expect(r, argv.join(' ')).toEqual({ code: 64, out: '', err: "caravan: '../../x' is not a run id: run ids are letters, digits, '-' and '_', such as 20261201-184145-3fa9c1\n" });
    }
    expect(await readFile(outside, 'utf8')).toContain('run.started');
  });
});

describe('caravan run <file> from anywhere in the repository', () => {
  it('takes a path relative to the working directory, or an absolute one, and refuses a file outside the repository', async () => {
    const dir = await tempRepo({ 'ok.yaml': ok });
    const deep = join(dir, 'src', 'deep');
    await mkdir(deep, { recursive: true });
    const relative = await cli(deep, 'run', '../../workflows/ok.yaml');
    expect(relative.code, relative.err).toBe(0);
    expect(relative.out).toMatch(/^run \S+ of ok succeeded/m);
    const absolute = await cli(deep, 'run', join(dir, 'workflows', 'ok.yaml'));
    expect(absolute.code, absolute.err).toBe(0);
    // As before: a path relative to the repository root, and a name, from the root.
    expect((await cli(dir, 'run', 'workflows/ok.yaml')).code).toBe(0);
    expect((await cli(deep, 'run', 'ok')).code).toBe(0);
    const elsewhere = await tempRepo({ 'far.yaml': workflow('far', '  tasks:\n    - { name: a, run: "true" }\n') });
    const outside = await cli(deep, 'run', join(elsewhere, 'workflows', 'far.yaml'));
    expect(outside).toEqual({ code: 64, out: '', err: `caravan: ${join(elsewhere, 'workflows', 'far.yaml')} is outside the repository ${dir}; Caravan runs the workflows of the repository it records runs in\n` });
  });
});

describe('caravan runs filters, caravan logs --timestamps and --follow', () => {
  it('runs --workflow, --status and --limit', async () => {
    const dir = await tempRepo({ 'ok.yaml': ok, 'bad.yaml': bad });
    for (const name of ['ok', 'ok', 'bad']) await cli(dir, 'run', name);
    const rows = (r: { out: string }): string[] => r.out.trim().split('\n').slice(1).map((l) => l.split(/\s+/).slice(1, 3).join(' '));
    expect(rows(await cli(dir, 'runs', '--workflow', 'ok'))).toEqual(['ok succeeded', 'ok succeeded']);
    expect(rows(await cli(dir, 'runs', 'ok', '--workflow', 'ok'))).toEqual(['ok succeeded', 'ok succeeded']);
    expect(rows(await cli(dir, 'runs', '--status', 'failed'))).toEqual(['bad failed']);
    const two = await cli(dir, 'runs', '--limit', '2');
    expect([rows(two).length, two.err]).toEqual([2, 'caravan: the 2 newest shown; there are more (raise --limit)\n']);
    const all = await cli(dir, 'runs', '-n', '3');
    expect([rows(all).length, all.err]).toEqual([3, '']);
    expect(await cli(dir, 'runs', '--workflow', 'ok', '--status', 'failed')).toEqual({ code: 0, out: 'no failed runs of ok recorded on caravan/runs\n', err: '' });
    expect((await cli(dir, 'runs', '--status', 'broken')).code).toBe(64);
    expect(await cli(dir, 'runs', 'ok', '--workflow', 'bad')).toEqual({ code: 64, out: '', err: "caravan: runs takes one workflow: 'ok' or --workflow 'bad'\n" });
    expect((await cli(dir, 'runs', '--limit', '0')).err).toBe("caravan: --limit takes a positive whole number, not '0'\n");
  });

  it('logs --timestamps prefixes each line with the time it was written, ISO 8601', async () => {
    const dir = await tempRepo({ 'ok.yaml': ok });
    const before = new Date().toISOString();
    await cli(dir, 'run', 'ok');
    const id = (await cli(dir, 'runs')).out.split('\n')[1]!.split(/\s+/)[0]!;
    const r = await cli(dir, 'logs', id, '--timestamps');
    expect(r.out).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z a#1 hello world\n$/);
    const at = r.out.split(' ')[0]!;
    expect(at >= before && at <= new Date().toISOString()).toBe(true);
  });

  // `a` waits for the file go, and also ends once the repository is gone (a failed test leaves no loop behind).
  const talk = workflow('talk', '  tasks:\n    - { name: a, run: "echo $$ > a.pid; echo first; while [ ! -f go ] && [ -d .git ]; do sleep 0.05; done; echo second" }\n    - { name: b, needs: [a], run: "echo third" }\n');

  async function talkStarted(dir: string): Promise<{ run: ReturnType<typeof spawnCli>; runId: string }> {
    await writeFile(join(dir, '.gitignore'), 'go\na.pid\n');
    const run = spawnCli(dir, 'run', 'talk');
    let runId = '';
    await until('task a to start', () => {
      const m = /run (\S+) of talk started[\s\S]*a started/.exec(run.output());
      if (m !== null) runId = m[1]!;
      return m !== null;
    });
    return { run, runId };
  }

  it('logs --follow prints the lines of a live run as they come, each once, and ends with the run', async () => {
    const dir = await tempRepo({ 'talk.yaml': talk });
    const { run, runId } = await talkStarted(dir);
    const follow = spawnCli(dir, 'logs', runId, '--follow');
    await until(() => `the first line\n${follow.output()}`, () => follow.output().includes('a#1 first\n'));
    expect(follow.output()).not.toContain('second');
    await writeFile(join(dir, 'go'), '');
    expect(await run.exited).toBe(0);
    expect(await follow.exited).toBe(0);
    expect(follow.output()).toBe('a#1 first\na#1 second\nb#1 third\n');
    // A run that is over: --follow prints its lines and ends at once.
    expect(await cli(dir, 'logs', runId, 'b', '--follow')).toEqual({ code: 0, out: 'b#1 third\n', err: '' });
  });

  it('logs --follow ends, saying so, when the process of the run it follows dies', async () => {
    const dir = await tempRepo({ 'talk.yaml': talk });
    const { run, runId } = await talkStarted(dir);
    const follow = spawnCli(dir, 'logs', runId, '--follow');
    await until(() => `the first line\n${follow.output()}`, () => follow.output().includes('a#1 first\n'));
    run.child.kill('SIGKILL');
    expect(await follow.exited).toBe(0);
    expect(follow.output()).toContain(`caravan: run ${runId} stopped being live before it ended (its process is gone): caravan recover ${runId} continues it\n`);
    // The killed run's shell worker goes on with `a`: let it end before its directory goes.
    const job = Number(await readFile(join(dir, 'a.pid'), 'utf8'));
    await writeFile(join(dir, 'go'), '');
    await until(`task a's command (process ${job}) to end`, () => !isAlive(job));
  });
});

describe('a run of a workflow with changes not committed', () => {
  const trailersOf = async (dir: string, runId: string): Promise<string[]> => (await git(dir, 'log', '--format=%B%x00', 'caravan/runs')).split('\0').filter((m) => m.includes(`Run: ${runId}`));
  const runJson = async (dir: string, name: string, runId: string): Promise<Record<string, unknown>> => JSON.parse(await git(dir, 'show', `caravan/runs:runs/${name}/${runId}/run.json`)) as Record<string, unknown>;

  it('says so when it starts, and its record carries Workflow-Dirty: true and the SHA-256 of the file as run; a clean run carries neither', async () => {
    const dir = await tempRepo({ 'ok.yaml': ok });
    const clean = await cli(dir, 'run', 'ok');
    expect(clean.err).toBe('');
    const cleanId = /run (\S+) of ok started/.exec(clean.out)![1]!;
    for (const m of await trailersOf(dir, cleanId)) expect(m).not.toContain('Workflow-Dirty');
    expect(await runJson(dir, 'ok', cleanId)).not.toHaveProperty('workflowDirty');

    const edited = ok.replace('echo hello', 'echo hi');
    await writeFile(join(dir, 'workflows', 'ok.yaml'), edited);
    const dirty = await cli(dir, 'run', 'ok');
    expect(dirty.code).toBe(0);
    const runId = /run (\S+) of ok started/.exec(dirty.out)![1]!;
    const sha256 = createHash('sha256').update(edited).digest('hex');
    expect(dirty.err).toBe(`caravan: warning: workflow ok has changes that are not committed; run ${runId} keeps the file as run (sha256 ${sha256.slice(0, 12)}) and its record is marked Workflow-Dirty: true\n`);
    const messages = await trailersOf(dir, runId);
    expect(messages.length).toBeGreaterThan(1);
    for (const m of messages) expect(m).toMatch(new RegExp(`\nWorkflow-Commit: [0-9a-f]{40}\nWorkflow-Dirty: true\nRun: ${runId}\n`));
    expect(await runJson(dir, 'ok', runId)).toMatchObject({ workflowDirty: true, workflowSha256: sha256 });
    expect(await git(dir, 'show', `caravan/runs:runs/ok/${runId}/workflow.yaml`)).toBe(edited);
    expect(await git(dir, 'notes', '--ref=caravan', 'show', 'HEAD')).toContain(`run ${runId} of ok: succeeded`);
    expect(await git(dir, 'notes', '--ref=caravan', 'show', 'HEAD')).toMatch(new RegExp(`run ${runId} of ok: .*, workflow with uncommitted changes, sha256 ${sha256.slice(0, 12)}\\)`));
  });

  it('a workflow file not committed at all counts too, and a recovered run keeps the mark', async () => {
    const dir = await tempRepo({ 'ok.yaml': ok });
    const gate = workflow('gate', '  tasks:\n    - { name: review, approval: { timeout: 1h } }\n    - { name: ship, needs: [review], run: "echo shipped" }\n');
    await writeFile(join(dir, 'workflows', 'gate.yaml'), gate);
    const proc = spawnCli(dir, 'run', 'gate');
    const runId = await approvalRequested(proc, 'review');
    // Said as start returns, which may be just after the first steps were printed.
    await until('the warning', () => proc.output().includes('caravan: warning: workflow gate has changes that are not committed'));
    proc.child.kill('SIGINT');
    expect(await proc.exited).toBe(130);
    const recovered = spawnCli(dir, 'recover', runId);
    await until('the run to be recovered', () => recovered.output().includes(`caravan: recovering run ${runId} of gate`));
    expect((await cli(dir, 'approve', runId, 'review')).code).toBe(0);
    expect(await recovered.exited).toBe(0);
    const messages = await trailersOf(dir, runId);
    expect(messages.some((m) => m.includes('Status: succeeded'))).toBe(true);
    for (const m of messages) expect(m).toContain('\nWorkflow-Dirty: true\n');
    expect(await runJson(dir, 'gate', runId)).toMatchObject({ status: 'succeeded', workflowDirty: true, workflowSha256: createHash('sha256').update(gate).digest('hex') });
  });
});

describe('--backend nomad and the bus', () => {
  it('--backend nomad alone uses NATS (here one that is not there: the error names it, not a missing flag)', async () => {
    const dir = await tempRepo({ 'ok.yaml': ok });
    const url = `nats://127.0.0.1:${await freePort()}`;
    const r = await withEnv({ NATS_URL: url }, () => cli(dir, 'run', 'ok', '--backend', 'nomad'));
    expect(r.err).toMatch(new RegExp(`^caravan: cannot use NATS JetStream at ${url.replace(/[.]/g, '\\.')}: [^\n]*\n$`));
    expect(r.code).toBe(74);
  });

  it('--bus memory beside --backend nomad is refused in one line, by run and by recover', async () => {
    const dir = await tempRepo({ 'ok.yaml': ok });
    const line = 'caravan: --backend nomad cannot use --bus memory: tasks on Nomad report over NATS (leave --bus out, or give --bus nats)\n';
    expect(await cli(dir, 'run', 'ok', '--bus', 'memory', '--backend', 'nomad')).toEqual({ code: 64, out: '', err: line });
    expect(await cli(dir, 'recover', '20261121-120000-a1b2c3', '--backend', 'nomad', '--bus', 'memory')).toEqual({ code: 64, out: '', err: line });
  });
});

describe('a live run, from another process', () => {
  it('waits at an approval gate until `caravan approve` from another terminal', async () => {
    const gate = workflow('gate', '  tasks:\n    - { name: build, agent: noop }\n    - { name: review, needs: [build], approval: { timeout: 1h } }\n    - { name: ship, needs: [review], run: "echo shipped" }\n');
    const dir = await tempRepo({ 'gate.yaml': gate });
    const proc = spawnCli(dir, 'run', 'gate');
    const runId = await approvalRequested(proc, 'review');
    expect(await cli(dir, 'reject', 'no-such-run', 'review')).toEqual({ code: 66, out: '', err: 'caravan: no run no-such-run\n' });
    // A decision for a task the run does not have would vanish without a word: refused.
    expect(await cli(dir, 'approve', runId, 'reveiw')).toEqual({ code: 66, out: '', err: `caravan: run ${runId} has no task 'reveiw' (tasks: build, review, ship)\n` });
    expect(await cli(dir, 'approve', runId, 'review')).toEqual({ code: 0, out: `sent approve review to run ${runId}\n`, err: '' });
    expect(await proc.exited).toBe(0);
    expect(proc.output()).toMatch(/review approved by \S+\n.*ship started/s);
    const after = await cli(dir, 'approve', runId, 'review');
    expect(after.code).toBe(64);
    expect(after.err).toBe(`caravan: run ${runId} is not running (succeeded); nothing to do\n`);
  });

  it('status of a live run shows its journal, ahead of the last checkpoint', async () => {
    const wf = workflow('watched', '  tasks:\n    - { name: first, agent: noop }\n    - { name: second, needs: [first], run: "while [ ! -f go ]; do sleep 0.05; done" }\n');
    const dir = await tempRepo({ 'watched.yaml': wf });
    await writeFile(join(dir, '.gitignore'), 'go\n');
    const proc = spawnCli(dir, 'run', 'watched');
    let runId = '';
    await until('the second task to start', () => {
      const m = /run (\S+) of watched started[\s\S]*second started/.exec(proc.output());
      if (m !== null) runId = m[1]!;
      return m !== null;
    });
    const status = await cli(dir, 'status', runId, '--json');
    expect(status.err).toBe('');
    const run = JSON.parse(status.out) as { status: string; live: boolean; tasks: Record<string, { status: string }> };
    expect([run.status, run.live, run.tasks['first']!.status, run.tasks['second']!.status]).toEqual(['running', true, 'succeeded', 'running']);
    const table = await cli(dir, 'status', runId);
    expect(table.out).toMatch(new RegExp(`^run ${runId} of watched: running \\(live in process \\d+\\)\n`));
    await writeFile(join(dir, 'go'), '');
    expect(await proc.exited).toBe(0);
  });

  it('recovers after SIGKILL from the last checkpoint and journal: what succeeded never runs again, and the attempt still running is adopted, not run twice', async () => {
    const wf = workflow('long', '  tasks:\n    - { name: first, run: "echo ran >> first.count" }\n    - { name: second, needs: [first], run: "echo ran >> second.count; echo $$ > second.pid; while [ ! -f go ]; do sleep 0.05; done; echo finished after the kill" }\n    - { name: third, needs: [second], run: "echo ran >> third.count" }\n');
    const dir = await tempRepo({ 'long.yaml': wf });
    await writeFile(join(dir, '.gitignore'), '*.count\n*.pid\ngo\n');
    const proc = spawnCli(dir, 'run', 'long');
    const runId = await secondStarted(proc, dir);
    proc.child.kill('SIGKILL');
    await proc.exited;
    // The killed run's `second` goes on in its shell worker; the recovered run waits for it.
    const recovering = spawnCli(dir, 'recover', runId);
    await until('the recovery to start', () => recovering.output().includes('recovering run'));
    await writeFile(join(dir, 'go'), '');
    expect(await recovering.exited).toBe(0);
    expect(recovering.output()).toContain(`caravan: recovering run ${runId} of long\n`);
    expect(recovering.output()).not.toMatch(/lost/);
    for (const f of ['first', 'second', 'third']) expect(await readFile(join(dir, `${f}.count`), 'utf8')).toBe('ran\n');
    const status = JSON.parse((await cli(dir, 'status', runId, '--json')).out) as { status: string; tasks: Record<string, { attempts: number }> };
    expect(status.status).toBe('succeeded');
    expect(status.tasks['second']!.attempts).toBe(1);
    // Its output after the kill is reported by the process that adopted it.
    expect((await cli(dir, 'logs', runId, 'second')).out).toContain('finished after the kill');
    await git(dir, 'fsck', '--strict', '--no-progress');
    expect((await cli(dir, 'resume', runId)).err).toBe(`caravan: run ${runId} is already over (succeeded)\n`);
    // Nothing the workers left is kept once the run is recorded.
    const gitdir = join(dir, '.git', 'caravan', 'workers');
    const left = await readdir(gitdir).catch(() => []);
    expect(left).toEqual([]);
  });

  it('an attempt whose shell worker died with the killed process is lost and started again', async () => {
    const wf = workflow('long', '  tasks:\n    - { name: first, run: "echo ran >> first.count" }\n    - { name: second, needs: [first], run: "echo ran >> second.count; echo $$ > second.pid; while [ ! -f go ]; do sleep 0.05; done" }\n');
    const dir = await tempRepo({ 'long.yaml': wf });
    await writeFile(join(dir, '.gitignore'), '*.count\n*.pid\ngo\n');
    const proc = spawnCli(dir, 'run', 'long');
    const runId = await secondStarted(proc, dir);
    proc.child.kill('SIGKILL');
    await proc.exited;
    // The whole worker goes (its process group: the worker shell and the job), with no exit status.
    const job = Number(await readFile(join(dir, 'second.pid'), 'utf8'));
    process.kill(-processGroup(job), 'SIGKILL');
    await writeFile(join(dir, 'go'), '');
    const resumed = await cli(dir, 'recover', runId);
    expect(resumed.code).toBe(0);
    expect(resumed.out).toMatch(/second failed \(attempt 1\): lost: the engine stopped while this attempt was running\n.*second will retry \(attempt 2\) in 0ms\n.*second started \(attempt 2\)\n.*second succeeded/s);
    expect(await readFile(join(dir, 'second.count'), 'utf8')).toBe('ran\nran\n');
  });
});

/** Waits until the spawned run's `second` task is running (it wrote its PID); returns the run id. */
async function secondStarted(proc: ReturnType<typeof spawnCli>, dir: string): Promise<string> {
  let runId = '';
  await until('the second task to start', async () => {
    const m = /run (\S+) of long started[\s\S]*second started/.exec(proc.output());
    if (m !== null) runId = m[1]!;
    return m !== null && (await readFile(join(dir, 'second.pid'), 'utf8').catch(() => '')).endsWith('\n');
  });
  return runId;
}

/** The process group of a process (field 5 of /proc/<pid>/stat). */
function processGroup(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
}

describe('the workflow concurrency policy, across processes', () => {
  const held = (policy: string): string => workflow('held', `  concurrency: { limit: 1, policy: ${policy} }\n  tasks:\n    - { name: gate, approval: { timeout: 1h } }\n    - { name: after, needs: [gate], agent: noop }\n`);

  async function firstRun(dir: string): Promise<{ proc: ReturnType<typeof spawnCli>; runId: string }> {
    const proc = spawnCli(dir, 'run', 'held');
    let runId = '';
    await until('the first run to wait at its gate', () => {
      const m = /gate waits for approval \(caravan approve (\S+) gate\)/.exec(proc.output());
      if (m !== null) runId = m[1]!;
      return m !== null;
    });
    return { proc, runId };
  }

  it('skip: a second run is not started while one is running', async () => {
    const dir = await tempRepo({ 'held.yaml': held('skip') });
    const { proc, runId } = await firstRun(dir);
    const second = await cli(dir, 'run', 'held');
    expect(second).toEqual({ code: 1, out: '', err: `caravan: not started: 1 run of held already running (concurrency limit 1, policy skip): ${runId}\n` });
    await cli(dir, 'approve', runId, 'gate');
    expect(await proc.exited).toBe(0);
  });

  it('cancel-running: the new run cancels the running one and takes its place', async () => {
    const dir = await tempRepo({ 'held.yaml': held('cancel-running') });
    const { proc, runId } = await firstRun(dir);
    const second = spawnCli(dir, 'run', 'held');
    expect(await proc.exited).toBe(1);
    expect(proc.output()).toMatch(/run cancelled by concurrency: a newer run of held replaces it \(policy cancel-running\)/);
    let secondId = '';
    await until('the second run to wait at its gate', () => {
      const m = /gate waits for approval \(caravan approve (\S+) gate\)/.exec(second.output());
      if (m !== null) secondId = m[1]!;
      return m !== null;
    });
    expect(secondId).not.toBe(runId);
    await cli(dir, 'approve', secondId, 'gate');
    expect(await second.exited).toBe(0);
  });

  it('queue: the new run waits for a slot, then runs', async () => {
    const dir = await tempRepo({ 'held.yaml': held('queue') });
    const { proc, runId } = await firstRun(dir);
    const second = spawnCli(dir, 'run', 'held');
    await until('the second run to say it waits', () => second.output().includes('waiting: 1 run of held running (concurrency limit 1, policy queue)'));
    expect(second.output()).not.toMatch(/gate waits for approval/);
    await cli(dir, 'approve', runId, 'gate');
    expect(await proc.exited).toBe(0);
    let secondId = '';
    await until('the second run to start', () => {
      const m = /gate waits for approval \(caravan approve (\S+) gate\)/.exec(second.output());
      if (m !== null) secondId = m[1]!;
      return m !== null;
    });
    await cli(dir, 'approve', secondId, 'gate');
    expect(await second.exited).toBe(0);
  });
});

describe('signals stop the process, not the run', () => {
  for (const [signal, count, code] of [['SIGINT', 2, 130], ['SIGINT', 3, 130], ['SIGTERM', 2, 143]] as const) {
    it(`${count} x ${signal} within milliseconds while the run waits for approval: exit ${code}, the run is recoverable and finishes`, async () => {
      const gate = workflow('gate', '  tasks:\n    - { name: build, agent: noop }\n    - { name: review, needs: [build], approval: { timeout: 1h } }\n    - { name: ship, needs: [review], run: "echo shipped" }\n');
      const dir = await tempRepo({ 'gate.yaml': gate });
      const proc = spawnCli(dir, 'run', 'gate');
      const runId = await approvalRequested(proc, 'review');
      for (let i = 0; i < count; i++) proc.child.kill(signal);
      expect(await proc.exited).toBe(code);
      expect(proc.output()).toContain(`caravan: stopping (${signal}); run ${runId} is left as it is`);
      expect(proc.output()).toContain(`caravan: stopped; run ${runId} is recorded up to now and can be recovered: caravan recover ${runId}`);
      expect(proc.output()).not.toMatch(/internal error|\n\s+at /);
      // Recorded as running (no process holds it), and the messages say the same thing.
      const status = await cli(dir, 'status', runId);
      expect(status.out).toMatch(new RegExp(`^run ${runId} of gate: running\n`));
      expect((await cli(dir, 'cancel', runId)).err).toBe(`caravan: run ${runId} is not running (running); recover it with \`caravan recover ${runId}\` first\n`);
      const recovered = spawnCli(dir, 'recover', runId);
      // Live again (the approval request itself is replayed, not printed again).
      await until('the run to be recovered', () => recovered.output().includes(`caravan: recovering run ${runId} of gate`));
      expect((await cli(dir, 'approve', runId, 'review')).code).toBe(0);
      expect(await recovered.exited).toBe(0);
      expect(recovered.output()).toMatch(/ship succeeded/);
      expect(JSON.parse((await cli(dir, 'status', runId, '--json')).out)).toMatchObject({ status: 'succeeded', tasks: { build: { attempts: 1 }, ship: { status: 'succeeded' } } });
    });
  }
});

describe('secret params', () => {
  it('are recorded as *** and given again to recover a run, which then uses the real value', async () => {
    const wf = workflow('vault', '  params:\n    token: { type: string, secret: true }\n  tasks:\n    - { name: review, approval: { timeout: 1h } }\n    - { name: use, needs: [review], run: "printf %s ${{ params.token }} > used.txt" }\n');
    const dir = await tempRepo({ 'vault.yaml': wf });
    const proc = spawnCli(dir, 'run', 'vault', '--param', 'token=s3cr3tValue9');
    const runId = await approvalRequested(proc, 'review');
    proc.child.kill('SIGINT');
    expect(await proc.exited).toBe(130);
    expect(JSON.parse((await cli(dir, 'status', runId, '--json')).out)).toMatchObject({ params: { token: '***' } });
    expect(await cli(dir, 'recover', runId)).toEqual({ code: 64, out: '', err: `caravan: run ${runId} needs its secret param again, as they are never recorded: --param token=...\n` });
    expect((await cli(dir, 'recover', runId, '--param', 'other=1')).err).toContain("'other' is not a secret param of this run");
    const recovered = spawnCli(dir, 'recover', runId, '--param', 'token=s3cr3tValue9');
    await until('the run to be recovered', () => recovered.output().includes(`caravan: recovering run ${runId} of vault`));
    expect((await cli(dir, 'approve', runId, 'review')).code).toBe(0);
    expect(await recovered.exited).toBe(0);
    expect(await readFile(join(dir, 'used.txt'), 'utf8')).toBe('s3cr3tValue9');
    expect(await git(dir, 'log', '-p', 'caravan/runs')).not.toContain('s3cr3tValue9');
  });
});


describe('workflow tasks with wait: false', () => {
  it('succeed once the child run has started; dependants go on while the child runs, and caravan run waits for the child before it exits', async () => {
    const parent = workflow('parent', '  tasks:\n    - { name: spawn, workflow: { name: child, wait: false } }\n    - { name: after, needs: [spawn], run: "echo ${{ tasks.spawn.outputs.status }} ${{ tasks.spawn.outputs.runId }} > after.txt" }\n');
    const child = workflow('child', '  tasks:\n    - { name: slow, run: "while [ ! -f go ]; do sleep 0.05; done; echo child done > child.txt" }\n');
    const dir = await tempRepo({ 'parent.yaml': parent, 'child.yaml': child });
    await writeFile(join(dir, '.gitignore'), '*.txt\ngo\n');
    const proc = spawnCli(dir, 'run', 'parent');
    // The parent's next task ran while the child still waits for its file.
    await until('the parent to go past the child', async () => (await readFile(join(dir, 'after.txt'), 'utf8').catch(() => '')) !== '');
    const [status, childRunId] = (await readFile(join(dir, 'after.txt'), 'utf8')).trim().split(' ');
    expect(status).toBe('started');
    expect(childRunId).toMatch(/^\d{8}-\d{6}-[0-9a-f]{6}$/);
    await until('caravan run to say it waits for the child', () => proc.output().includes(`caravan: waiting for 1 child run started without waiting (child ${childRunId})`));
    expect(proc.child.exitCode).toBeNull();
    await writeFile(join(dir, 'go'), '');
    expect(await proc.exited).toBe(0);
    expect(await readFile(join(dir, 'child.txt'), 'utf8')).toBe('child done\n');
    const childStatus = JSON.parse((await cli(dir, 'status', childRunId!, '--json')).out) as { status: string };
    expect(childStatus.status).toBe('succeeded');
  });
});
