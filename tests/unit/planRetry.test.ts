import { describe, expect, it } from 'vitest';
import type { CaravanError } from '../../engine/errors/CaravanError.js';
import { planRetry } from '../../engine/run/planRetry.js';
import { applyRunEvent, initialRunState } from '../../engine/run/reduceRun.js';
import { snapshotRun } from '../../engine/run/RunState.js';
import { simulate, trace, type Outcome, type Simulation } from './simulateRun.js';

const ok: Outcome = { ok: true };

/** The run, then its retry with what planRetry selects; `behave` may differ between the two. */
function runAndRetry(spec: string, first: (task: string) => Outcome, second: (task: string) => Outcome, options: { from?: string; params?: Record<string, unknown> } = {}): { before: Simulation; selection: ReturnType<typeof planRetry>; after: Simulation } {
  const before = simulate(spec, (d) => first(d.instance), options.params !== undefined ? { params: options.params } : {});
  const selection = planRetry(before.plan, before.events, options.from !== undefined ? { from: options.from } : {});
  const after = simulate(spec, (d) => second(d.instance), { retry: { of: 'run-1', reuse: selection.reuse }, ...(options.params !== undefined ? { params: options.params } : {}) });
  return { before, selection, after };
}

const chain = '  tasks:\n    - { name: a, run: x, outputs: [v] }\n    - { name: b, run: "echo ${{ tasks.a.outputs.v }}", needs: [a] }\n    - { name: c, run: x, needs: [b] }\n    - { name: side, run: x }\n';
const failOnce = (failing: string) => (t: string): Outcome => (t === failing ? { ok: false, error: 'boom', retryable: false } : { ok: true, outputs: { v: `${t}-out` } });

describe('planRetry: which tasks a retry runs again', () => {
  it('reruns the failed task and what was skipped because of it; reuses what succeeded, with its outputs', () => {
    const { before, selection, after } = runAndRetry(chain, failOnce('b'), () => ok);
    expect(before.state.status).toBe('failed');
    expect(selection.rerun).toEqual([{ task: 'b', why: 'failed' }, { task: 'c', why: 'skipped', reason: "'b' failed" }]);
    expect(Object.keys(selection.reuse).sort()).toEqual(['a', 'side']);
    expect(selection.reuse['a']).toEqual({ outputs: { v: 'a-out' } });
    // The retry dispatches only b and c; a and side are recorded as reused and never dispatched.
    expect(after.dispatches.map((d) => d.instance)).toEqual(['b', 'c']);
    expect(trace(after, ['task.reused'])).toEqual(['task.reused a', 'task.reused side']);
    expect(after.state.status).toBe('succeeded');
    // Downstream expressions see the reused outputs.
    expect(after.dispatches[0]!.context.tasks['a']).toMatchObject({ status: 'succeeded', outputs: { v: 'a-out' } });
    expect(after.state.retryOf).toBe('run-1');
    const snap = snapshotRun(after.state);
    expect(snap.retryOf).toBe('run-1');
    expect(snap.tasks['a']).toMatchObject({ status: 'succeeded', reusedFrom: 'run-1', outputs: { v: 'a-out' }, attempts: 0 });
    expect(snap.tasks['b']!.reusedFrom).toBeUndefined();
  });

  it('with from: reruns that task and everything downstream of it even after a success; the rest is reused', () => {
    const { before, selection, after } = runAndRetry(chain, () => ({ ok: true, outputs: { v: '1' } }), () => ok, { from: 'b' });
    expect(before.state.status).toBe('succeeded');
    expect(selection.rerun).toEqual([{ task: 'b', why: 'from' }, { task: 'c', why: 'downstream', of: 'b' }]);
    expect(Object.keys(selection.reuse).sort()).toEqual(['a', 'side']);
    expect(after.dispatches.map((d) => d.instance)).toEqual(['b', 'c']);
  });

  it('a succeeded run with no from has nothing to retry; an unknown from lists the tasks', () => {
    const sim = simulate(chain, () => ok);
    const err = (f: () => unknown): CaravanError => {
      try {
        f();
      } catch (e) {
        return e as CaravanError;
      }
      throw new Error('no error');
    };
    const none = err(() => planRetry(sim.plan, sim.events));
    expect(none.code).toBe('NOTHING_TO_RETRY');
    expect(none.message).toBe('run run-1 of sim succeeded: nothing failed, so nothing to retry (rerun a task and what follows it with --from <task>; tasks: a, side, b, c)');
    const unknown = err(() => planRetry(sim.plan, sim.events, { from: 'nope' }));
    expect(unknown.code).toBe('TASK_NOT_FOUND');
    expect(unknown.message).toBe("--from: no task 'nope'; tasks of sim: a, side, b, c");
    expect(unknown.data).toMatchObject({ task: 'nope', tasks: ['a', 'side', 'b', 'c'] });
  });

  it('a task skipped by its when is decided again and does not rerun its dependants; one skipped because of a failure reruns', () => {
    // deploy is skipped by its when; report (always()) ran after it. fail fails, and late,
    // which was ready when the fail-fast run stopped, was skipped because of it.
    const spec = "  params:\n    env: { type: string, default: dev }\n  tasks:\n    - { name: a, run: x }\n    - { name: deploy, run: x, needs: [a], when: \"params.env == 'prod'\" }\n    - { name: report, run: x, needs: [deploy], when: '${{ always() }}' }\n    - { name: fail, run: x, needs: [a] }\n    - { name: slow, run: x, needs: [a] }\n    - { name: late, run: x, needs: [slow] }\n";
    const first = (t: string): Outcome => (t === 'fail' ? { ok: false, error: 'boom', retryable: false } : t === 'slow' ? { ok: true, durationMs: 500 } : ok);
    const { before, selection, after } = runAndRetry(spec, first, () => ok);
    expect(before.state.groups.get('deploy')!.status).toBe('skipped');
    expect(before.state.groups.get('report')!.status).toBe('succeeded');
    expect(before.state.groups.get('late')!.status).toBe('skipped');
    expect(selection.redecided).toEqual(['deploy']);
    expect(selection.rerun.map((r) => r.task)).toEqual(['fail', 'late']);
    expect(selection.rerun[1]).toMatchObject({ task: 'late', why: 'skipped' });
    expect(Object.keys(selection.reuse).sort()).toEqual(['a', 'report', 'slow']);
    expect(after.dispatches.map((d) => d.instance).sort()).toEqual(['fail', 'late']);
    expect(after.state.groups.get('deploy')!.status).toBe('skipped');
    expect(after.state.status).toBe('succeeded');
  });

  it('forEach: the items that succeeded are reused, the failed ones run again; a changed list runs every item', () => {
    const spec = '  tasks:\n    - { name: fan, run: "echo ${{ item }}", forEach: [1, 2, 3] }\n    - { name: after, run: x, needs: [fan] }\n';
    const { selection, after } = runAndRetry(spec, (t) => (t === 'fan[1]' ? { ok: false, error: 'boom', retryable: false } : ok), () => ok);
    expect(selection.rerun).toEqual([{ task: 'fan', why: 'failed' }, { task: 'after', why: 'skipped', reason: "'fan' failed" }]);
    expect(selection.reuse).toEqual({ 'fan[0]': { outputs: {}, item: 1 }, 'fan[2]': { outputs: {}, item: 3 } });
    expect(after.dispatches.map((d) => d.instance)).toEqual(['fan[1]', 'after']);
    // The same keys with other items (the list changed): nothing is carried over.
    const changed = simulate(spec.replace('[1, 2, 3]', '[7, 8, 9]'), () => ok, { retry: { of: 'run-1', reuse: selection.reuse } });
    expect(changed.dispatches.map((d) => d.instance)).toEqual(['fan[0]', 'fan[1]', 'fan[2]', 'after']);
    expect(trace(changed, ['task.reused'])).toEqual([]);
  });

  it('an approval granted before is reused unless something upstream of it runs again', () => {
    const spec = '  tasks:\n    - { name: build, run: x }\n    - { name: gate, needs: [build], approval: {} }\n    - { name: ship, run: x, needs: [gate] }\n';
    const approve = [{ at: Date.UTC(2026, 10, 21, 12, 0, 1), event: () => ({ runId: 'run-1', at: Date.UTC(2026, 10, 21, 12, 0, 1), type: 'approval.granted' as const, task: 'gate', by: 'alice' }) }];
    const before = simulate(spec, (d) => (d.instance === 'ship' ? { ok: false, error: 'boom', retryable: false } : ok), { controls: approve });
    expect(before.state.groups.get('gate')!.status).toBe('succeeded');
    const selection = planRetry(before.plan, before.events);
    expect(selection.reuse['gate']).toEqual({ outputs: { approvedBy: 'alice' }, approvedBy: 'alice' });
    const after = simulate(spec, () => ok, { retry: { of: 'run-1', reuse: selection.reuse } });
    expect(trace(after, ['approval.requested', 'task.reused'])).toEqual(['task.reused build', 'task.reused gate']);
    expect(after.state.instances.get('gate')!.approval?.by).toBe('alice');
    expect(after.state.status).toBe('succeeded');
    // Rerunning build puts the gate downstream of a change: it asks again.
    const fromBuild = planRetry(before.plan, before.events, { from: 'build' });
    expect(fromBuild.reuse).toEqual({});
    expect(fromBuild.rerun.map((r) => `${r.task}:${r.why}`)).toEqual(['build:from', 'gate:downstream', 'ship:failed']);
  });

  it('a task whose effect compensation undid runs again, and so does what follows it', () => {
    const spec = '  tasks:\n    - { name: book, run: x, compensate: { run: undo } }\n    - { name: pay, run: x, needs: [book] }\n    - { name: log, run: x }\n';
    const before = simulate(spec, (d) => (d.instance === 'pay' ? { ok: false, error: 'declined', retryable: false } : ok));
    expect(before.state.instances.get('book:compensate')!.status).toBe('succeeded');
    const selection = planRetry(before.plan, before.events);
    expect(selection.rerun).toEqual([{ task: 'book', why: 'compensated' }, { task: 'pay', why: 'failed' }]);
    expect(Object.keys(selection.reuse)).toEqual(['log']);
  });

  it('onFailure and finally tasks are not named by from: they run in every retry when their phase comes', () => {
    const spec = '  tasks:\n    - { name: a, run: x }\n  finally:\n    - { name: tidy, run: x }\n';
    const before = simulate(spec, () => ok);
    expect(() => planRetry(before.plan, before.events, { from: 'tidy' })).toThrow("--from: 'tidy' is a finally task, which runs again in every retry when its phase comes; tasks of sim: a");
    // A run that failed only in its finally task: nothing main runs again, the finally task does.
    const failedFinally = simulate(spec, (d) => (d.instance === 'tidy' ? { ok: false, error: 'x', retryable: false } : ok));
    expect(failedFinally.state.status).toBe('failed');
    const selection = planRetry(failedFinally.plan, failedFinally.events);
    expect(selection.rerun).toEqual([]);
    const after = simulate(spec, () => ok, { retry: { of: 'run-1', reuse: selection.reuse } });
    expect(after.dispatches.map((d) => d.instance)).toEqual(['tidy']);
    expect(after.state.status).toBe('succeeded');
  });

  it('a cancelled run: the task it stopped and those it never started (cancelled with it) run again', () => {
    const spec = '  tasks:\n    - { name: a, run: x }\n    - { name: b, run: x, needs: [a] }\n    - { name: c, run: x, needs: [b] }\n';
    const at = Date.UTC(2026, 10, 21, 12, 0, 0, 50);
    const before = simulate(spec, (d) => (d.instance === 'b' ? { ok: true, durationMs: 1000 } : ok), { controls: [{ at, event: () => ({ runId: 'run-1', at, type: 'run.cancelled', by: 'bob' }) }] });
    expect(before.state.status).toBe('cancelled');
    const selection = planRetry(before.plan, before.events);
    expect(selection.rerun).toEqual([{ task: 'b', why: 'cancelled' }, { task: 'c', why: 'cancelled' }]);
    expect(Object.keys(selection.reuse)).toEqual(['a']);
  });

  it('tasks skipped at the run deadline run again, though nothing had failed before it', () => {
    const spec = '  timeout: 1s\n  tasks:\n    - { name: a, run: x }\n    - { name: slow, run: x, needs: [a] }\n    - { name: gated, run: x, needs: [a], when: "${{ tasks.a.status == \'succeeded\' }}" }\n    - { name: after, run: x, needs: [slow] }\n';
    const before = simulate(spec, (d) => (d.instance === 'slow' ? { ok: true, durationMs: 5000 } : d.instance === 'gated' ? { ok: true, durationMs: 5000 } : ok));
    expect(before.state.status).toBe('failed');
    const selection = planRetry(before.plan, before.events);
    expect(selection.rerun.map((r) => `${r.task}:${r.why}`)).toEqual(['slow:cancelled', 'gated:cancelled', 'after:skipped']);
    expect(selection.redecided).toEqual([]);
  });

  it('a retry replays to the same state (recover of a retry reuses the same tasks)', () => {
    const { after } = runAndRetry(chain, failOnce('c'), () => ok);
    const replayed = initialRunState(after.plan, 'run-1');
    for (const e of after.events) applyRunEvent(replayed, after.plan, e);
    expect(snapshotRun(replayed)).toEqual(snapshotRun(after.state));
    expect(after.dispatches.map((d) => d.instance)).toEqual(['c']);
  });
});
