import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterEach, describe, expect, it, onTestFinished } from 'vitest';
import { packageRoot } from '../../engine/packageRoot.js';
import { caravanBin, runBin } from '../harness/cli.js';
import { git, tempRepo, workflow } from '../harness/gitRepo.js';
import { until } from '../harness/until.js';

/**
 * `caravan retry` through the built CLI (npm run build first), each command in a process of
 * its own as a user runs them. Every task appends a line to a counter file per run of it, so
 * a task that is reused and not run again is proven by its count.
 */

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
});

const flaky = workflow('flaky', [
  '  params:',
  '    dir: { type: string }',
  '  tasks:',
  '    - name: prepare',
  '      run: \'echo run >> ${{ params.dir }}/prepare.count; printf "v=42\\n" > "$CARAVAN_OUTPUTS"\'',
  '      outputs: [v]',
  '    - name: flaky',
  '      needs: [prepare]',
  // Fails until the file `fixed` exists; reads prepare's output, so a reused output must be there.
  '      run: \'echo run >> ${{ params.dir }}/flaky.count; test -e ${{ params.dir }}/fixed && test ${{ tasks.prepare.outputs.v }} = 42\'',
  '    - name: publish',
  '      needs: [flaky]',
  '      run: \'echo run >> ${{ params.dir }}/publish.count\'',
  '    - name: side',
  '      run: \'echo run >> ${{ params.dir }}/side.count\'',
  '',
].join('\n'));

async function scratch(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'caravan-retry-'));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** How many times each task ran, from the counter files. */
async function counts(dir: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of ['prepare', 'flaky', 'publish', 'side', 'check']) {
    const f = join(dir, `${t}.count`);
    if (existsSync(f)) out[t] = (await readFile(f, 'utf8')).split('\n').filter((l) => l !== '').length;
  }
  return out;
}

/** The run id of the newest record on caravan/runs. */
async function lastRunId(repo: string): Promise<string> {
  return /^Run: (\S+)$/m.exec(await git(repo, 'log', 'caravan/runs', '-1', '--format=%B'))![1]!;
}

async function runJson(repo: string, wf: string, runId: string): Promise<Record<string, unknown> & { tasks: Record<string, Record<string, unknown>> }> {
  return JSON.parse(await git(repo, 'show', `caravan/runs:runs/${wf}/${runId}/run.json`)) as Record<string, unknown> & { tasks: Record<string, Record<string, unknown>> };
}

describe('caravan retry', () => {
  it('reruns only the failed task and its dependants, reuses what succeeded (never run again), and links the runs', async () => {
    const repo = await tempRepo({ 'flaky.yaml': flaky });
    const dir = await scratch();
    const first = await runBin(['run', 'flaky', '-p', `dir=${dir}`], { cwd: repo });
    expect(first.code).toBe(1);
    const old = await lastRunId(repo);
    expect(await counts(dir)).toEqual({ prepare: 1, flaky: 1, side: 1 });

    await writeFile(join(dir, 'fixed'), '');
    const retry = await runBin(['retry', old], { cwd: repo });
    expect(retry.code).toBe(0);
    const id = await lastRunId(repo);
    expect(id).not.toBe(old);
    expect(retry.err).toContain(`caravan: run ${id} retries run ${old} of flaky; reusing prepare, side; running again flaky (failed), publish (skipped: 'flaky' failed)\n`);
    const lines = retry.out.split('\n').map((l) => l.replace(/^\d\d:\d\d:\d\d /, ''));
    expect(lines).toContain(`prepare reused from run ${old}`);
    expect(lines).toContain(`side reused from run ${old}`);
    expect(lines).toContain(`run ${id} of flaky succeeded in ${/succeeded in (\S+)\nrecorded/.exec(retry.out)![1]}`);
    // prepare and side did not run again; flaky and publish did, with the params of the first run.
    expect(await counts(dir)).toEqual({ prepare: 1, flaky: 2, publish: 1, side: 1 });

    const message = await git(repo, 'log', 'caravan/runs', '-1', '--format=%B');
    expect(message).toMatch(new RegExp(`^Run: ${id}\\nRetry-Of: ${old}\\nStatus: succeeded$`, 'm'));
    const before = await runJson(repo, 'flaky', old);
    const after = await runJson(repo, 'flaky', id);
    expect(after).toMatchObject({ retryOf: old, trigger: `retry:${old}`, status: 'succeeded', params: { dir }, workflowCommit: before['workflowCommit'] });
    expect(after.tasks['prepare']).toMatchObject({ status: 'succeeded', reusedFrom: old, attempts: 0, outputs: { v: '42' } });
    expect(after.tasks['flaky']).toMatchObject({ status: 'succeeded', attempts: 1 });
    expect(after.tasks['flaky']!['reusedFrom']).toBeUndefined();
    const schema = JSON.parse(await readFile(join(packageRoot(), 'schemas', 'run-snapshot.v1.json'), 'utf8')) as object;
    const validate = new Ajv2020({ strict: true, allErrors: true, validateFormats: false }).compile(schema);
    expect(validate(after), JSON.stringify(validate.errors)).toBe(true);
    const events = (await git(repo, 'show', `caravan/runs:runs/flaky/${id}/events.ndjson`)).trim().split('\n').map((l) => JSON.parse(l) as { type: string; task?: string; from?: string });
    expect(events.filter((e) => e.type === 'task.reused').map((e) => [e.task, e.from])).toEqual([['prepare', old], ['side', old]]);
    expect(events.filter((e) => e.type === 'task.queued').map((e) => e.task)).toEqual(['flaky', 'publish']);

    const status = await runBin(['status', id], { cwd: repo });
    expect(status.out).toContain(`a retry of run ${old}`);
    expect(status.out).toMatch(new RegExp(`^prepare +succeeded +0 +0ms +reused from run ${old}$`, 'm'));

    // The retry succeeded: retrying it again has nothing to do, and says how to rerun anyway.
    const again = await runBin(['retry', id], { cwd: repo });
    expect(again).toMatchObject({ code: 64, out: '' });
    expect(again.err).toBe(`caravan: run ${id} of flaky succeeded: nothing failed, so nothing to retry (rerun a task and what follows it with --from <task>; tasks: prepare, side, flaky, publish)\n`);
    expect(await counts(dir)).toEqual({ prepare: 1, flaky: 2, publish: 1, side: 1 });
  });

  it('--from reruns that task and everything downstream of it; the rest keeps its outputs', async () => {
    const repo = await tempRepo({ 'flaky.yaml': flaky });
    const dir = await scratch();
    await writeFile(join(dir, 'fixed'), '');
    expect((await runBin(['run', 'flaky', '-p', `dir=${dir}`], { cwd: repo })).code).toBe(0);
    const old = await lastRunId(repo);
    const retry = await runBin(['retry', old, '--from', 'flaky'], { cwd: repo });
    expect(retry.code).toBe(0);
    expect(retry.err).toContain('reusing prepare, side; running again flaky (--from), publish (after flaky)');
    expect(await counts(dir)).toEqual({ prepare: 1, flaky: 2, publish: 2, side: 1 });
    const id = await lastRunId(repo);
    expect((await runJson(repo, 'flaky', id)).tasks['prepare']).toMatchObject({ reusedFrom: old });

    // A task that does not exist: the known tasks are listed, nothing runs.
    const unknown = await runBin(['retry', old, '--from', 'flakey'], { cwd: repo });
    expect(unknown).toEqual({ code: 66, out: '', err: "caravan: --from: no task 'flakey'; tasks of flaky: prepare, side, flaky, publish\n" });
    expect(await runBin(['retry', '20990101-000000-abcdef'], { cwd: repo })).toEqual({ code: 66, out: '', err: 'caravan: no run 20990101-000000-abcdef on caravan/runs\n' });
    expect(await counts(dir)).toEqual({ prepare: 1, flaky: 2, publish: 2, side: 1 });
  });

  it('a run with a secret param needs it again, says so when it is missing, and never records it', async () => {
    const secretFlow = workflow('secretive', [
      '  params:',
      '    dir: { type: string }',
      '    token: { type: string, secret: true }',
      '  tasks:',
      '    - name: prepare',
      '      run: \'echo run >> ${{ params.dir }}/prepare.count\'',
      '    - name: check',
      '      needs: [prepare]',
      '      run: \'echo run >> ${{ params.dir }}/check.count; test ${{ params.token }} = "$(cat ${{ params.dir }}/fixed)"\'',
      '',
    ].join('\n'));
    const repo = await tempRepo({ 'secretive.yaml': secretFlow });
    const dir = await scratch();
    // check compares the token with the file `fixed`, which holds it only after the first run.
    expect((await runBin(['run', 'secretive', '-p', `dir=${dir}`, '-p', 'token=s3cr3t-value'], { cwd: repo })).code).toBe(1);
    const old = await lastRunId(repo);
    await writeFile(join(dir, 'fixed'), 's3cr3t-value');
    const missing = await runBin(['retry', old], { cwd: repo });
    expect(missing).toEqual({ code: 64, out: '', err: `caravan: run ${old} needs its secret param again, as they are never recorded: --param token=...\n` });
    const notSecret = await runBin(['retry', old, '-p', `dir=/elsewhere`, '-p', 'token=x'], { cwd: repo });
    expect(notSecret.code).toBe(64);
    expect(notSecret.err).toContain("'dir' is not a secret param of this run (only those are given again)");
    expect(await counts(dir)).toEqual({ prepare: 1, check: 1 });
    const retry = await runBin(['retry', old, '-p', 'token=s3cr3t-value'], { cwd: repo });
    expect(retry.code).toBe(0);
    expect(await counts(dir)).toEqual({ prepare: 1, check: 2 });
    const id = await lastRunId(repo);
    expect(await runJson(repo, 'secretive', id)).toMatchObject({ retryOf: old, params: { dir, token: '***' } });
    expect(await git(repo, 'log', '-p', 'caravan/runs')).not.toContain('s3cr3t-value');
  });

  it('a run still going is refused with a typed error (exit 75), and so is a path for a run id', async () => {
    const gated = workflow('gated', '  tasks:\n    - { name: gate, approval: {} }\n');
    const repo = await tempRepo({ 'gated.yaml': gated });
    const child = spawn(process.execPath, [caravanBin, 'run', 'gated'], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout!.on('data', (c: Buffer) => { out += c.toString(); });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    let runId = '';
    await until('the approval request', () => {
      runId = /gate waits for approval \(caravan approve (\S+) gate\)/.exec(out)?.[1] ?? '';
      return runId !== '';
    });
    const busy = await runBin(['retry', runId], { cwd: repo });
    expect(busy.code).toBe(75);
    expect(busy.err).toMatch(new RegExp(`^caravan: run ${runId} is still running \\(process \\d+\\); retry it once it is over, or cancel it first \\(caravan cancel ${runId}\\)\\n$`));
    expect((await runBin(['cancel', runId], { cwd: repo })).code).toBe(0);
    expect(await exited).toBe(1);
    expect(await runBin(['retry', '../../etc'], { cwd: repo })).toEqual({ code: 66, out: '', err: "caravan: '../../etc' is not a run id\n" });
  });

  it('--help says what the command does, as the code does it', async () => {
    const help = await runBin(['retry', '--help']);
    expect(help.code).toBe(0);
    const text = help.out.replace(/\s+/g, ' ');
    expect(text).toContain("start a new run of a finished run (its workflow as it ran it, its commit and params): tasks that succeeded are reused with their outputs; those that failed, were cancelled, were skipped because of a failure or were compensated run again, with everything downstream of them; exits with the new run's status");
    expect(text).toContain('--from <task> also run this task again, and everything downstream of it, even if they succeeded');
    expect(text).toContain('-p, --param <name=value> a secret param of the run, given again (they are never recorded; repeatable)');
  });

  it('a run of a workflow with uncommitted changes is retried with the definition it ran, not the working tree, and the retry says so', async () => {
    const repo = await tempRepo({ 'flaky.yaml': flaky });
    const dir = await scratch();
    // Edited after the commit: publish now writes another counter.
    const edited = flaky.replace('publish.count', 'publish-edited.count');
    await writeFile(join(repo, 'workflows', 'flaky.yaml'), edited);
    expect((await runBin(['run', 'flaky', '-p', `dir=${dir}`], { cwd: repo })).code).toBe(1);
    const old = await lastRunId(repo);
    // The working tree changes again (back to the commit); the retry still runs the edit.
    await git(repo, 'checkout', '--', 'workflows/flaky.yaml');
    await writeFile(join(dir, 'fixed'), '');
    const retry = await runBin(['retry', old], { cwd: repo });
    expect(retry.code).toBe(0);
    const sha = createHash('sha256').update(edited).digest('hex');
    expect(retry.err).toContain(`caravan: warning: run ${old} ran workflow flaky with uncommitted changes; the retry runs that same definition (sha256 ${sha.slice(0, 12)}) and its record is marked Workflow-Dirty: true\n`);
    expect(existsSync(join(dir, 'publish-edited.count'))).toBe(true);
    expect(existsSync(join(dir, 'publish.count'))).toBe(false);
    const id = await lastRunId(repo);
    expect(await runJson(repo, 'flaky', id)).toMatchObject({ retryOf: old, workflowDirty: true, workflowSha256: sha });
    expect(await git(repo, 'log', 'caravan/runs', '-1', '--format=%B')).toContain('Workflow-Dirty: true');
  });
});
