import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentRegistry } from '../../agents/builtinAgents.js';
import { stdoutValue } from '../../agents/captureStdout.js';
import { AttemptRunner, type Attempt } from '../../agents/runAttempt.js';
import { ShellWorkerPool } from '../../agents/ShellWorkerPool.js';
import { agentArgs } from '../../engine/compile/agentInvocation.js';
import { realClock } from '../../engine/run/Clock.js';
import type { RunEvent } from '../../engine/run/RunEvent.js';
import { snapshotRun } from '../../engine/run/RunState.js';
import type { TaskSpec } from '../../engine/spec/Workflow.js';
import { crossFileDiagnostics, validateText } from '../../engine/spec/validateWorkflows.js';
import { workflow } from '../harness/gitRepo.js';
import { simulate, type Outcome } from './simulateRun.js';

/** `line:col code message` for each diagnostic of one file, in order. */
function check(spec: string): string[] {
  return validateText('w.yaml', workflow('demo', spec)).diagnostics.map((d) => `${d.line}:${d.col} ${d.code} ${d.message}`);
}

describe('validating stdout outputs', () => {
  it('accepts a shell task capturing stdout beside outputs it writes, readable downstream', () => {
    expect(check('  tasks:\n    - name: a\n      run: echo 1\n      outputs: [x, { name: result, from: stdout, maxBytes: 1024 }]\n    - name: b\n      needs: [a]\n      run: echo ${{ tasks.a.outputs.result }} ${{ tasks.a.outputs.x }}\n')).toEqual([]);
    expect(check('  tasks:\n    - name: a\n      args: [date]\n      outputs: [{ name: result, from: stdout }]\n')).toEqual([]);
  });

  it('refuses a capture by a task that has no stdout of its own, a second capture, a repeated name and a cap past 1 MiB', () => {
    expect(check('  tasks:\n    - name: a\n      http: { url: "http://x" }\n      outputs: [{ name: result, from: stdout }]\n')).toEqual([
      "9:39 OUTPUT_STDOUT_NOT_SHELL task 'a' captures stdout, but only a shell task (run or args) has a standard output of its own",
    ]);
    expect(check('  tasks:\n    - name: a\n      run: echo\n      outputs: [{ name: r, from: stdout }, { name: s, from: stdout }]\n')).toEqual([
      "9:61 OUTPUT_STDOUT_TWICE task 'a' captures stdout as outputs #1 and #2; one output holds it, read it under that name",
    ]);
    expect(check('  tasks:\n    - name: a\n      run: echo\n      outputs: [result, { name: result, from: stdout }]\n')).toEqual([
      "9:33 OUTPUT_DUPLICATE task 'a' declares output 'result' twice",
    ]);
    const big = check('  tasks:\n    - name: a\n      run: echo\n      outputs: [{ name: r, from: stdout, maxBytes: 1048577 }]\n');
    expect(big).toHaveLength(1);
    expect(big[0]).toMatch(/^9:52 SCHEMA_RANGE .*maxBytes.* must be <= 1048576/);
    expect(check('  tasks:\n    - name: a\n      run: echo\n      outputs: [{ name: r, from: stderr }]\n')[0]).toMatch(/^9:34 SCHEMA_ENUM /);
  });
});

describe('validating spec.outputs and the child outputs a parent reads', () => {
  const child = (outputs: string): string => workflow('child', `  outputs:\n${outputs}  tasks:\n    - name: sum\n      run: echo 3\n      outputs: [{ name: result, from: stdout }]\n  onFailure:\n    - name: alert\n      run: echo\n  finally:\n    - name: tidy\n      run: echo\n      outputs: [t]\n`);

  it('checks each output as an expression over params, run and the main and finally tasks', () => {
    expect(validateText('c.yaml', child('    total: ${{ tasks.sum.outputs.result }}\n    both: "${{ tasks.tidy.outputs.t }}-${{ run.id }}"\n')).diagnostics).toEqual([]);
    const bad = validateText('c.yaml', child('    a: ${{ tasks.sum.outputs.nope }}\n    b: ${{ tasks.alert.status }}\n    c: ${{ run.status }}\n    d: ${{ item }}\n    e: ${{ tasks.sum.outputs.result\n')).diagnostics;
    expect(bad.map((d) => `${d.line}:${d.col} ${d.code} ${d.path}`)).toEqual([
      '7:12 EXPR_UNKNOWN_OUTPUT /spec/outputs/a',
      '8:12 RUN_OUTPUT_READS_ONFAILURE /spec/outputs/b',
      '9:12 EXPR_RUN_OUTCOME_TOO_EARLY /spec/outputs/c',
      '10:12 EXPR_ITEM_OUTSIDE_FOREACH /spec/outputs/d',
      '11:8 EXPR_SYNTAX /spec/outputs/e',
    ]);
    expect(bad[1]!.message).toBe("in 'tasks.alert.status': 'alert' is an onFailure task, which never runs in a run that succeeds, and outputs are only evaluated then");
  });

  const parent = (wait: string): string => workflow('parent', `  tasks:\n    - name: call\n      workflow: { name: child${wait} }\n    - name: use\n      needs: [call]\n      run: echo \${{ tasks.call.outputs.total }} \${{ tasks.call.outputs.runId }}\n`);

  it('checks a read of a child output against the child\'s spec.outputs, across files, naming file, line and field', () => {
    const p = validateText('p.yaml', parent(''));
    expect(p.diagnostics).toEqual([]);
    const declared = validateText('c.yaml', child('    total: ${{ tasks.sum.outputs.result }}\n'));
    expect(crossFileDiagnostics([p, declared])).toEqual([]);
    const other = validateText('c.yaml', child('    sum: ${{ tasks.sum.outputs.result }}\n'));
    expect(crossFileDiagnostics([p, other])).toEqual([{
      file: 'p.yaml', line: 11, col: 12, severity: 'error', code: 'CHILD_OUTPUT_UNKNOWN', path: '/spec/tasks/1/run',
      message: "workflow 'child' (c.yaml) declares no output 'total'; its spec.outputs are sum (besides runId and status)",
    }]);
  });

  it('refuses a child output read from a task that does not wait for its child; runId and status stay readable', () => {
    expect(check(parent(', wait: false').slice(parent('').indexOf('spec:\n') + 6))).toEqual([
      "11:21 EXPR_CHILD_NOT_WAITED in 'tasks.call.outputs.total': task 'call' runs workflow 'child' with wait: false, so it succeeds as soon as the child has started: only runId and status are known then, not the child's output 'total'; remove wait: false to read it",
    ]);
    expect(check('  tasks:\n    - name: call\n      workflow: { name: child, wait: false }\n    - name: use\n      needs: [call]\n      run: echo ${{ tasks.call.outputs.runId }} ${{ tasks.call.outputs.status }}\n')).toEqual([]);
  });
});

describe('spec.outputs at run time (simulated)', () => {
  const spec = (outputs: string): string => `  params:\n    n: { type: integer, default: 2 }\n  outputs:\n${outputs}  tasks:\n    - { name: list, run: x, outputs: [{ name: result, from: stdout }] }\n    - { name: each, run: x, needs: [list], forEach: "\${{ tasks.list.outputs.result }}", outputs: [v] }\n`;
  const behave = (d: { task: string; item?: unknown }): Outcome => (d.task === 'list' ? { ok: true, outputs: { result: '["a","b"]' } } : { ok: true, outputs: { v: `${String(d.item)}!` } });

  it('are evaluated when the run succeeds, recorded in the last event and in the snapshot', () => {
    const sim = simulate(spec('    items: ${{ tasks.list.outputs.result }}\n    values: ${{ toJSON(tasks.each.outputs.v) }}\n    label: "n=${{ params.n }} run=${{ run.id }}"\n'), behave);
    expect(sim.state.status).toBe('succeeded');
    const outputs = { items: '["a","b"]', values: '["a!","b!"]', label: 'n=2 run=run-1' };
    expect(sim.events.at(-1)).toMatchObject({ type: 'run.succeeded', outputs });
    expect(snapshotRun(sim.state).outputs).toEqual(outputs);
  });

  it('an output that cannot be evaluated fails the run with its name; a failed run has no outputs', () => {
    const broken = simulate(spec('    first: ${{ fromJSON(tasks.each.outputs.v[0]) }}\n'), behave);
    expect(broken.state.status).toBe('failed');
    expect(broken.state.failureReason).toMatch(/^output 'first' could not be evaluated: expression 'fromJSON\(tasks\.each\.outputs\.v\[0\]\)': /);
    const failed = simulate(spec('    items: ${{ tasks.list.outputs.result }}\n'), (d) => (d.task === 'list' ? { ok: false, error: 'no', retryable: false } : behave(d)));
    expect(failed.state.status).toBe('failed');
    expect(snapshotRun(failed.state).outputs).toBeUndefined();
  });

  it('with finally tasks, are evaluated after them and may read them', () => {
    const sim = simulate('  outputs:\n    done: "${{ tasks.tidy.outputs.t }}/${{ tasks.a.status }}"\n  tasks:\n    - { name: a, run: x }\n  finally:\n    - { name: tidy, run: x, outputs: [t] }\n', (d) => (d.task === 'tidy' ? { ok: true, outputs: { t: 'clean' } } : { ok: true }));
    expect(sim.events.at(-1)).toMatchObject({ type: 'run.succeeded', outputs: { done: 'clean/succeeded' } });
  });
});

const SECRET = 'Canary-9f2c-Secret';
const PEM = 'first-line-of-key\nsecond-line-of-key';

describe.each(['spawned from Node', 'run by shell workers'])('capturing stdout, %s', (mode) => {
  let dir: string;
  let workers: ShellWorkerPool | undefined;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'caravan-stdout-'));
    workers = mode === 'run by shell workers' ? new ShellWorkerPool(2, join(dir, 'workers')) : undefined;
  });
  afterAll(async () => {
    workers?.close();
    await rm(dir, { recursive: true, force: true });
  });

  function run(task: Omit<TaskSpec, 'name'>, secrets: Record<string, string> = {}): Promise<{ result: unknown; events: RunEvent[] }> {
    const events: RunEvent[] = [];
    const runner = new AttemptRunner({ events: { publish: (_s, e) => void events.push(e) }, clock: realClock(), registry: new AgentRegistry(), secrets: (p, k) => secrets[`${p}#${k}`], scratchRoot: join(dir, 'scratch'), baseDir: dir, ...(workers !== undefined ? { workers } : {}) });
    const attempt: Attempt = { runId: 'r1', workflow: 'wf', instance: 'emit', attempt: 1, kind: 'task', task: { name: 'emit', ...task }, context: { params: {}, tasks: {}, run: {} } };
    return runner.run(attempt).then(({ result }) => {
      runner.close();
      return { result, events };
    });
  }

  it('keeps the whole stdout, trailing newlines removed, beside the outputs the task writes; the lines are logged too', async () => {
    const { result, events } = await run({ run: 'printf "line one\\n  line two  \\n\\n\\n"; echo x=1 > "$CARAVAN_OUTPUTS"', outputs: ['x', { name: 'result', from: 'stdout' }] });
    expect(result).toEqual({ ok: true, outputs: { x: '1', result: 'line one\n  line two  ' }, exitCode: 0 });
    expect(events.filter((e) => e.type === 'task.log').map((e) => (e as { line: string }).line)).toEqual(['line one', '  line two  ', '', '']);
    const plain = await run({ args: ['echo', 'héllo wörld'], outputs: [{ name: 'result', from: 'stdout' }] });
    expect(plain.result).toEqual({ ok: true, outputs: { result: 'héllo wörld' }, exitCode: 0 });
    const nothing = await run({ run: 'true', outputs: [{ name: 'result', from: 'stdout' }] });
    expect(nothing.result).toEqual({ ok: true, outputs: { result: '' }, exitCode: 0 });
  });

  it('fails the attempt past the cap with OUTPUT_TOO_LARGE, naming the task and the cap, and keeps nothing; at the cap it keeps all', async () => {
    const over = await run({ run: 'head -c 1025 /dev/zero | tr "\\0" a', outputs: [{ name: 'result', from: 'stdout', maxBytes: 1024 }] });
    const error = "task 'emit' wrote more than 1024 bytes to stdout, the cap of its output 'result' (from: stdout); nothing was kept: raise maxBytes (at most 1048576) or write less";
    expect(over.result).toEqual({ ok: false, error, code: 'OUTPUT_TOO_LARGE', retryable: false, exitCode: 0 });
    expect(over.events.at(-1)).toMatchObject({ type: 'task.failed', error, code: 'OUTPUT_TOO_LARGE', retryable: false });
    const at = await run({ run: 'head -c 1024 /dev/zero | tr "\\0" a', outputs: [{ name: 'result', from: 'stdout', maxBytes: 1024 }] });
    expect(at.result).toEqual({ ok: true, outputs: { result: 'a'.repeat(1024) }, exitCode: 0 });
    // The default cap is 256 KiB, counted in bytes (each é is two).
    const wide = await run({ run: 'awk \'BEGIN { for (i = 0; i < 131073; i++) printf "é" }\'', outputs: [{ name: 'result', from: 'stdout' }] });
    expect(wide.result).toMatchObject({ ok: false, code: 'OUTPUT_TOO_LARGE', error: expect.stringContaining('more than 262144 bytes') });
  });

  it('masks every secret the attempt can see in the captured value, a multi-line secret whole, before it is reported', async () => {
    const { result, events } = await run({ run: 'echo "token=$S"; printf "%s\\n" "$K"; echo done', env: { S: { secret: { path: 'db', key: 'password' } }, K: { secret: { path: 'tls', key: 'key' } } }, outputs: [{ name: 'result', from: 'stdout' }] }, { 'db#password': SECRET, 'tls#key': PEM });
    expect(result).toEqual({ ok: true, outputs: { result: 'token=***\n***\ndone' }, exitCode: 0 });
    const all = JSON.stringify(events);
    for (const piece of [SECRET, 'first-line-of-key', 'second-line-of-key']) expect(all).not.toContain(piece);
  });
});

describe('stdout capture in the compiled runner arguments', () => {
  it('passes the capture and its cap to the runner in the allocation, and only written outputs as --outputs', () => {
    const args = agentArgs('wf', { name: 't', run: 'echo 1', outputs: ['x', { name: 'result', from: 'stdout', maxBytes: 4096 }] }, undefined, '/p', new Map());
    expect(args.slice(0, 12)).toEqual(['shell', '--workflow', 'wf', '--task', 't', '--payload', '/p', '--outputs', 'x', '--stdout-output', 'result', '--stdout-max-bytes']);
    expect(args.slice(12)).toEqual(['4096', '--', 'echo 1']);
    expect(agentArgs('wf', { name: 't', run: 'echo 1', outputs: [{ name: 'r', from: 'stdout' }] }, undefined, '/p', new Map())).toEqual(['shell', '--workflow', 'wf', '--task', 't', '--payload', '/p', '--stdout-output', 'r', '--', 'echo 1']);
  });

  it('removes trailing newlines only, as $(...) does', () => {
    expect([stdoutValue('a\n'), stdoutValue('a\r\n\r\n'), stdoutValue('\na b \n\n'), stdoutValue('a\n b')]).toEqual(['a', 'a', '\na b ', 'a\n b']);
  });
});
