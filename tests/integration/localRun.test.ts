import { MemoryLogger } from '../../engine/run/Logger.js';
import nodeFs from 'node:fs';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { GitAuditStore } from '../../engine/audit/GitAuditStore.js';
import { RunRecorder } from '../../engine/audit/RunRecorder.js';
import { updateRef } from '../../engine/audit/updateRef.js';
import { CaravanError } from '../../engine/errors/CaravanError.js';
import { openApp } from '../harness/openApp.js';
import { git, tempRepo, workflow } from '../harness/gitRepo.js';
import { gatePath } from '../harness/gatePath.js';

const pipeline = workflow('pipe', '  tasks:\n    - name: a\n      run: echo A; printf "v=1\\n" > "$CARAVAN_OUTPUTS"\n      outputs: [v]\n    - name: b\n      needs: [a]\n      run: echo "got ${{ tasks.a.outputs.v }}"\n');

describe('a local run recorded in Git', () => {
  it('leaves a readable audit trail and touches nothing of the user\'s', async () => {
    const dir = await tempRepo({ 'pipe.yaml': pipeline });
    await writeFile(join(dir, 'notes.txt'), 'uncommitted work\n');
    const head = (await git(dir, 'rev-parse', 'HEAD')).trim();
    const status = await git(dir, 'status', '--porcelain');
    const index = await readFile(join(dir, '.git', 'index'));
    const svc = openApp({ repoDir: dir });
    const run = await svc.start('pipe', {});
    const { state, auditCommit } = await run.done;
    expect(state.status).toBe('succeeded');

    expect(await git(dir, 'ls-tree', '-r', '--name-only', 'caravan/runs')).toBe(
      [`runs/pipe/${run.runId}/events.ndjson`, `runs/pipe/${run.runId}/run.json`, `runs/pipe/${run.runId}/workflow.yaml`].join('\n') + '\n',
    );
    expect((await git(dir, 'rev-parse', 'caravan/runs')).trim()).toBe(auditCommit);
    expect(await git(dir, 'log', '-1', '--format=%B', 'caravan/runs')).toMatch(new RegExp(`^pipe ${run.runId}: succeeded in \\d+(ms|\\.\\ds) \\(2/2 tasks\\)\\n\\nWorkflow: pipe\\nWorkflow-Commit: ${head}\\nRun: ${run.runId}\\nStatus: succeeded\\n`));
    expect(await git(dir, 'log', '-1', '--format=%(trailers:key=Status,valueonly)', 'caravan/runs')).toBe('succeeded\n\n');
    const runJson = JSON.parse(await git(dir, 'show', `caravan/runs:runs/pipe/${run.runId}/run.json`)) as { status: string; tasks: Record<string, { outputs?: object }> };
    expect(runJson.status).toBe('succeeded');
    expect(runJson.tasks['a']!.outputs).toEqual({ v: '1' });
    const all = (await git(dir, 'show', `caravan/runs:runs/pipe/${run.runId}/events.ndjson`)).trim().split('\n').map((l) => JSON.parse(l) as { type: string; line?: string });
    const events = all.filter((e) => e.type !== 'checkpoint');
    expect(events[0]!.type).toBe('run.started');
    expect(events.at(-1)!.type).toBe('run.succeeded');
    expect(events).toHaveLength(state.seq);
    expect(events.filter((e) => e.type === 'task.log').map((e) => e.line)).toEqual(['A', 'got 1']);
    expect(await git(dir, 'notes', '--ref=caravan', 'show', head)).toMatch(new RegExp(`run ${run.runId} of pipe: succeeded in .* \\(record ${auditCommit.slice(0, 12)} on caravan/runs\\)\\n$`));

    // Nothing of the user's moved.
    expect((await git(dir, 'rev-parse', 'HEAD')).trim()).toBe(head);
    expect((await git(dir, 'symbolic-ref', 'HEAD')).trim()).toBe('refs/heads/main');
    expect(await git(dir, 'status', '--porcelain')).toBe(status);
    expect(await readFile(join(dir, '.git', 'index'))).toEqual(index);
    await git(dir, 'fsck', '--strict', '--no-progress');
  });

  it('checkpoints in batches, never one commit per event', async () => {
    const many = workflow('many', '  tasks:\n' + Array.from({ length: 40 }, (_, i) => `    - { name: t${i}, agent: noop${i > 0 ? `, needs: [t${i - 1}]` : ''} }\n`).join(''));
    const dir = await tempRepo({ 'many.yaml': many });
    const svc = openApp({ repoDir: dir, checkpointEveryEvents: 50, checkpointEveryMs: 3_600_000 });
    const run = await svc.start('many', {});
    const { state } = await run.done;
    const events = state.seq;
    const commits = Number((await git(dir, 'rev-list', '--count', 'caravan/runs')).trim());
    expect(events).toBeGreaterThan(120);
    // The first checkpoint (holding the workflow), about one per 50 events, and the final one.
    expect(commits).toBeGreaterThanOrEqual(2);
    expect(commits).toBeLessThanOrEqual(2 + Math.ceil(events / 50));
    await git(dir, 'fsck', '--strict', '--no-progress');
  });

  it('a quiet run still reaches Git within checkpointEveryMs of its last event', async () => {
    const { until } = await import('../harness/until.js');
    const gate = await gatePath();
    const dir = await tempRepo({ 'quiet.yaml': workflow('quiet', `  tasks:\n    - { name: a, agent: noop }\n    - { name: b, needs: [a], run: "while [ ! -f ${gate} ]; do sleep 0.05; done" }\n`) });
    const svc = openApp({ repoDir: dir, checkpointEveryEvents: 10_000, checkpointEveryMs: 200 });
    const run = await svc.start('quiet', {});
    try {
      // After b starts nothing happens until its first heartbeat (5 s); the record on
      // caravan/runs must show b running before that.
      let stored: Awaited<ReturnType<typeof svc.audit.readRun>>;
      await until('a checkpoint with b running', async () => {
        stored = await svc.audit.readRun(run.runId, 'quiet');
        return (stored?.run['tasks'] as Record<string, { status: string }> | undefined)?.['b']?.status === 'running';
      });
      expect(stored!.events.some((e) => e.type === 'task.heartbeat')).toBe(false);
    } finally {
      await writeFile(gate, '');
    }
    expect((await run.done).state.status).toBe('succeeded');
  });

  it('works in a dirty repository on a detached HEAD, and in one with no commits at all', async () => {
    const dir = await tempRepo({ 'pipe.yaml': pipeline });
    await git(dir, 'checkout', '-q', '--detach');
    await writeFile(join(dir, 'workflows', 'pipe.yaml'), pipeline.replace('echo A', 'echo A2'));
    const head = (await git(dir, 'rev-parse', 'HEAD')).trim();
    const { state } = await (await openApp({ repoDir: dir }).start('pipe', {})).done;
    expect(state.status).toBe('succeeded');
    expect((await git(dir, 'rev-parse', 'HEAD')).trim()).toBe(head);
    expect(await git(dir, 'status', '--porcelain')).toBe(' M workflows/pipe.yaml\n');

    const empty = await tempRepo({ 'pipe.yaml': pipeline }, false);
    const r2 = await (await openApp({ repoDir: empty }).start('pipe', {})).done;
    expect(r2.state.status).toBe('succeeded');
    expect(await git(empty, 'log', '-1', '--format=%B', 'caravan/runs')).not.toContain('Workflow-Commit:');
    await git(empty, 'fsck', '--strict', '--no-progress');
  });

  it('rejects an unknown workflow and bad params with clear errors', async () => {
    const dir = await tempRepo({ 'pipe.yaml': workflow('pipe', '  params:\n    n: { type: integer, default: 1 }\n  tasks:\n    - { name: a, agent: noop }\n') });
    const svc = openApp({ repoDir: dir });
    await expect(svc.start('nope', {})).rejects.toMatchObject({ code: 'WORKFLOW_NOT_FOUND', message: "unknown workflow 'nope'; workflows here: pipe" });
    await expect(svc.start('pipe', { n: 'three', x: '1' })).rejects.toMatchObject({ code: 'PARAM_INVALID', message: "unknown param 'x' (declared: n); param 'n': 'three' is not a number" });
    expect(await git(dir, 'branch', '--list', 'caravan/runs')).toBe('');
  });
});

describe('when Git cannot be written', () => {
  it('a locked ref is retried, then reported clearly', async () => {
    const dir = await tempRepo({ 'pipe.yaml': pipeline });
    const gitdir = join(dir, '.git');
    const head = (await git(dir, 'rev-parse', 'HEAD')).trim();
    await writeFile(join(gitdir, 'refs', 'heads', 'main.lock'), '');
    const err = await updateRef(gitdir, 'refs/heads/main', head, head, { lockRetries: 3, lockRetryMs: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CaravanError);
    expect((err as CaravanError).code).toBe('AUDIT_REF_LOCKED');
    expect((err as CaravanError).message).toBe(`refs/heads/main is locked by another process (${join(gitdir, 'refs/heads/main.lock')} exists); if no git or caravan process is running, remove the lock file`);
    // A lock left behind by a writer that died long ago is taken over.
    const { utimes } = await import('node:fs/promises');
    const old = new Date(Date.now() - 60_000);
    await utimes(join(gitdir, 'refs', 'heads', 'main.lock'), old, old);
    await updateRef(gitdir, 'refs/heads/main', head, head, { lockRetries: 0 });
    await writeFile(join(gitdir, 'refs', 'heads', 'main.lock'), '');
    // Released while waiting: the update goes through.
    setTimeout(() => void rm(join(gitdir, 'refs', 'heads', 'main.lock')), 30);
    await updateRef(gitdir, 'refs/heads/main', head, head, { lockRetries: 50, lockRetryMs: 5 });
  });

  it('a full disk keeps the run in memory and in the journal, and writes it all once space is back', async () => {
    const dir = await tempRepo({ 'pipe.yaml': pipeline });
    let full = true;
    const enospc = (): never => {
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    };
    const failing = {
      ...nodeFs,
      promises: {
        ...nodeFs.promises,
        writeFile: (...args: Parameters<typeof nodeFs.promises.writeFile>) => (full ? Promise.reject(enospc()) : nodeFs.promises.writeFile(...args)),
      },
    } as typeof nodeFs;
    const store = new GitAuditStore(dir, failing);
    const log = new MemoryLogger();
    const svc = openApp({ repoDir: dir, checkpointEveryEvents: 3 });
    const { workflow: wf, source } = await svc.loadWorkflow('pipe');
    const journal = join(dir, '.git', 'caravan', 'journal', 'full-disk.ndjson');
    const recorder = new RunRecorder(store, { workflow: 'pipe', runId: 'full-disk', workflowSource: source, journalPath: journal, everyEvents: 3, logger: log });
    await recorder.open();
    const { RunEngine } = await import('../../engine/run/RunEngine.js');
    const { buildRunPlan } = await import('../../engine/run/RunPlan.js');
    const { InMemoryBus } = await import('../../engine/local/InMemoryBus.js');
    const { LocalExecutor } = await import('../../engine/local/LocalExecutor.js');
    const { realClock } = await import('../../engine/run/Clock.js');
    const bus = new InMemoryBus();
    const clock = realClock();
    const engine = new RunEngine({ plan: buildRunPlan(wf, { maxParallel: 4 }), runId: 'full-disk', executor: new LocalExecutor(bus, clock, { baseDir: dir }), bus, clock });
    engine.onEvent((e, s) => recorder.record(e, s));
    engine.onFlush(() => recorder.flush());
    engine.start({}, 'test');
    const state = await engine.done();
    expect(state.status).toBe('succeeded');
    await recorder.checkpoint().catch(() => undefined);
    const warnings = log.lines('warn');
    expect(warnings.length).toBeGreaterThan(0);
    expect(warnings[0]!.fields).toMatchObject({ workflow: 'pipe', run: 'full-disk', err: expect.objectContaining({ code: 'ENOSPC' }) });
    expect(warnings[0]!.msg).toMatch(/^audit checkpoint failed \(kept in memory and in .*full-disk\.ndjson; retrying\): ENOSPC/);
    // The journal: a header with the workflow, then every event.
    const journalLines = (await readFile(journal, 'utf8')).trim().split('\n');
    expect(journalLines).toHaveLength(state.seq + 1);
    expect(JSON.parse(journalLines[0]!)).toMatchObject({ journal: 1, workflow: 'pipe', runId: 'full-disk' });
    await expect(git(dir, 'rev-parse', '--verify', '-q', 'caravan/runs')).rejects.toThrow();
    full = false;
    await recorder.finish(state);
    const events = (await git(dir, 'show', 'caravan/runs:runs/pipe/full-disk/events.ndjson')).trim().split('\n').filter((l) => !l.includes('"type":"checkpoint"'));
    expect(events).toHaveLength(state.seq);
    await expect(stat(journal)).rejects.toThrow();
    await git(dir, 'fsck', '--strict', '--no-progress');
  });
});

describe('task faults are clear and nothing is lost', () => {
  it('a missing command, a task killed by a signal and garbled outputs each fail with their reason, and every event is recorded', async () => {
    const wf = workflow('faults', '  failFast: false\n  tasks:\n    - { name: missing, run: "no-such-tool --flag" }\n    - { name: killed, run: "kill -KILL $$" }\n    - { name: garbled, run: "echo not-key-value > \\"$CARAVAN_OUTPUTS\\"", outputs: [x] }\n    - { name: fine, agent: noop }\n');
    const dir = await tempRepo({ 'faults.yaml': wf });
    const run = await openApp({ repoDir: dir }).start('faults', {});
    const { state } = await run.done;
    expect(state.status).toBe('failed');
    const runJson = JSON.parse(await git(dir, 'show', `caravan/runs:runs/faults/${run.runId}/run.json`)) as { tasks: Record<string, { status: string; error?: string }> };
    expect(runJson.tasks['missing']).toMatchObject({ status: 'failed' });
    expect(runJson.tasks['missing']!.error).toMatch(/^command not found \(exit 127\): .*no-such-tool: not found$/);
    expect(runJson.tasks['killed']).toMatchObject({ status: 'failed', error: 'killed by SIGKILL' });
    expect(runJson.tasks['garbled']).toMatchObject({ status: 'failed', error: "outputs line 1 is not key=value: 'not-key-value'" });
    expect(runJson.tasks['fine']).toMatchObject({ status: 'succeeded' });
    const events = (await git(dir, 'show', `caravan/runs:runs/faults/${run.runId}/events.ndjson`)).trim().split('\n').map((l) => JSON.parse(l) as { type: string; seq?: number });
    // Every event the engine applied, plus a marker for each earlier checkpoint.
    expect(events.filter((e) => e.type !== 'checkpoint')).toHaveLength(state.seq);
    expect(events.filter((e) => e.type === 'checkpoint').length).toBeGreaterThanOrEqual(1);
    expect(events.find((e) => e.type === 'checkpoint')!.seq).toBeGreaterThanOrEqual(1);
  });
});

describe('a task that runs another workflow', () => {
  it('starts a child run, waits for it, and records both', async () => {
    const parent = workflow('parent', '  tasks:\n    - { name: child, workflow: { name: kid, params: { who: "${{ run.id }}" } } }\n    - { name: after, needs: [child], run: "echo child was ${{ tasks.child.outputs.runId }}" }\n');
    const kid = workflow('kid', '  params:\n    who: { type: string, required: true }\n  tasks:\n    - { name: hello, run: "echo hi ${{ params.who }}" }\n');
    const dir = await tempRepo({ 'parent.yaml': parent, 'kid.yaml': kid });
    const run = await openApp({ repoDir: dir }).start('parent', {});
    const { state } = await run.done;
    expect(state.status).toBe('succeeded');
    const childRun = state.instances.get('child')!.outputs['runId']!;
    const kidJson = JSON.parse(await git(dir, 'show', `caravan/runs:runs/kid/${childRun}/run.json`)) as { status: string; trigger: string; params: object };
    expect(kidJson).toMatchObject({ status: 'succeeded', trigger: `workflow:${run.runId}/child`, params: { who: run.runId } });
    const after = (await git(dir, 'show', `caravan/runs:runs/parent/${run.runId}/events.ndjson`)).split('\n').find((l) => l.includes('"task.log"') && l.includes('"after"'));
    expect(JSON.parse(after!)).toMatchObject({ line: `child was ${childRun}` });
  });
});
