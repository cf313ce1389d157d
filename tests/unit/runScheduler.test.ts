import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { applyRunEvent, initialRunState } from '../../engine/run/reduceRun.js';
import { snapshotRun } from '../../engine/run/RunState.js';
import type { RunEvent } from '../../engine/run/RunEvent.js';
import { TIMEOUT_GRACE_MS, retryDelay } from '../../engine/run/scheduleRun.js';
import { DEFAULT_BREAKER_COOLDOWN_MS as BREAKER_COOLDOWN_MS } from '../../engine/spec/resolveCircuitBreaker.js';
import { simulate, T0, trace, type Outcome } from './simulateRun.js';

const ok = { ok: true };

describe('ready set, when and skips', () => {
  it('runs a diamond in dependency order and succeeds', () => {
    const sim = simulate('  tasks:\n    - { name: a, run: x }\n    - { name: b, run: x, needs: [a] }\n    - { name: c, run: x, needs: [a] }\n    - { name: d, run: x, needs: [b, c] }\n', () => ok);
    expect(sim.state.status).toBe('succeeded');
    expect(sim.dispatches.map((d) => d.instance)).toEqual(['a', 'b', 'c', 'd']);
    expect(sim.dispatches[3]!.at).toBeGreaterThan(sim.dispatches[1]!.at);
    expect(trace(sim, ['run.started', 'run.succeeded'])).toEqual(['run.started', 'run.succeeded']);
  });

  it('skips a task whose when is false, and the tasks that depend on it', () => {
    const sim = simulate("  params:\n    env: { type: string, default: dev }\n  tasks:\n    - { name: a, run: x }\n    - { name: deploy, run: x, needs: [a], when: \"params.env == 'prod'\" }\n    - { name: notify, run: x, needs: [deploy] }\n    - { name: other, run: x, needs: [a], when: \"${{ tasks.a.status == 'succeeded' }}\" }\n", () => ok);
    expect(sim.state.status).toBe('succeeded');
    expect(sim.dispatches.map((d) => d.instance)).toEqual(['a', 'other']);
    expect(trace(sim, ['task.skipped'])).toEqual(['task.skipped deploy', 'task.skipped notify']);
    expect(sim.state.groups.get('deploy')!.reason).toBe("when 'params.env == 'prod'' is false");
    expect(sim.state.groups.get('notify')!.reason).toBe("'deploy' was skipped");
  });
});

describe('status functions and joins (the GitHub Actions model)', () => {
  // Argo's coinflip: one of two branches runs, then a join runs after whichever did.
  const coinflip = (join: string): string => `  tasks:
    - { name: flip, run: x, outputs: [result] }
    - { name: heads, run: x, needs: [flip], when: "tasks.flip.outputs.result == 'heads'" }
    - { name: tails, run: x, needs: [flip], when: "tasks.flip.outputs.result == 'tails'" }
    - { name: join, run: x, needs: [heads, tails]${join} }
    - { name: after, run: x, needs: [join] }
    - { name: after-join, run: x, needs: [join], when: "\${{ !failure() && !cancelled() }}" }
`;
  const flip = (side: string) => (d: { task: string }): Outcome => (d.task === 'flip' ? { ok: true, outputs: { result: side } } : ok);

  it('joins after a skipped branch with !failure() && !cancelled(), whichever side the coin fell on', () => {
    for (const [side, other] of [['heads', 'tails'], ['tails', 'heads']] as const) {
      const sim = simulate(coinflip(', when: "${{ !failure() && !cancelled() }}"'), flip(side));
      expect(sim.state.status).toBe('succeeded');
      expect(sim.dispatches.map((d) => d.instance)).toEqual(['flip', side, 'join', 'after-join']);
      expect(sim.state.groups.get(other)!.status).toBe('skipped');
      // Below the join, success() still sees the skipped branch (Actions looks at every ancestor).
      expect(sim.state.groups.get('after')!.reason).toBe(`'${other}' was skipped (before 'join')`);
    }
  });

  it('a join without a status function means success() && ...: a skipped need skips it and what needs it, unless that asks otherwise', () => {
    const sim = simulate(coinflip(''), flip('heads'));
    expect(sim.state.status).toBe('succeeded');
    expect(sim.state.groups.get('join')!.reason).toBe("'tails' was skipped");
    expect(sim.state.groups.get('after')!.reason).toBe("'join' was skipped");
    // A skip is not a failure: !failure() && !cancelled() holds below a skipped task.
    expect(sim.dispatches.map((d) => d.instance)).toEqual(['flip', 'heads', 'after-join']);
  });

  it('success() is false after a skipped need, always() is true, cancelled() is false while the run goes on', () => {
    const sim = simulate("  tasks:\n    - { name: a, run: x, when: 'false' }\n    - { name: s, run: x, needs: [a], when: success() }\n    - { name: w, run: x, needs: [a], when: always() }\n    - { name: c, run: x, needs: [a], when: cancelled() }\n    - { name: root, run: x, when: \"success() && params.go\" }\n  params:\n    go: { type: boolean, default: true }\n", () => ok);
    expect(sim.state.status).toBe('succeeded');
    expect(sim.dispatches.map((d) => d.instance).sort()).toEqual(['root', 'w']);
    expect(sim.state.groups.get('s')!.reason).toBe("when 'success()' is false (success() false, failure() false, cancelled() false)");
  });

  it('failure() is true when a task upstream failed, directly or not; the run still fails', () => {
    const sim = simulate(
      '  failFast: false\n  tasks:\n    - { name: build, run: x }\n    - { name: test, run: x, needs: [build] }\n    - { name: report, run: x, needs: [test], when: failure() }\n    - { name: fine, run: x }\n    - { name: not-mine, run: x, needs: [fine], when: failure() }\n    - { name: tidy, run: x, needs: [report, not-mine], when: always() }\n',
      (d) => (d.task === 'build' ? { ok: false, error: 'broken', retryable: false } : ok),
    );
    expect(sim.state.status).toBe('failed');
    expect(sim.state.failureReason).toBe("task 'build' failed: broken");
    expect(sim.dispatches.map((d) => d.instance)).toEqual(['build', 'fine', 'report', 'tidy']);
    expect(sim.state.groups.get('test')!.reason).toBe("'build' failed");
    expect(sim.state.groups.get('not-mine')!.reason).toBe("when 'failure()' is false (success() true, failure() false, cancelled() false)");
  });

  it('fail-fast: after the first failure success() is false everywhere; tasks whose when still holds (failure(), always()) start', () => {
    const sim = simulate(
      '  tasks:\n    - { name: bad, run: x }\n    - { name: slow, run: x }\n    - { name: next, run: x, needs: [slow] }\n    - { name: explicit, run: x, needs: [slow], when: success() }\n    - { name: cleanup, run: x, needs: [bad], when: failure() }\n    - { name: logs, run: x, needs: [slow], when: always() }\n    - { name: each, run: x, needs: [slow], when: always(), forEach: [1, 2, 3], parallelism: 1 }\n',
      (d) => (d.task === 'bad' ? { ok: false, error: 'nope', retryable: false } : d.task === 'slow' ? { ok: true, durationMs: 1000 } : ok),
    );
    expect(sim.state.status).toBe('failed');
    expect(sim.dispatches.map((d) => d.instance)).toEqual(['bad', 'slow', 'cleanup', 'logs', 'each[0]', 'each[1]', 'each[2]']);
    expect(sim.state.groups.get('next')!.reason).toBe("run is failing (task 'bad' failed: nope)");
    expect(sim.state.groups.get('explicit')!.reason).toBe("when 'success()' is false (success() false, failure() false, cancelled() false)");
  });

  it('a fail-fast failure stops instances already waiting to start unless their when still holds', () => {
    const sim = simulate(
      '  tasks:\n    - { name: bad, run: x }\n    - { name: keep, run: x, when: always(), forEach: [1, 2, 3], parallelism: 1 }\n    - { name: drop, run: x, when: success(), forEach: [1, 2, 3], parallelism: 1 }\n',
      (d) => (d.task === 'bad' ? { ok: false, error: 'nope', retryable: false, durationMs: 5 } : { ok: true, durationMs: 100 }),
    );
    expect(sim.state.status).toBe('failed');
    expect(sim.dispatches.map((d) => d.instance)).toEqual(['bad', 'keep[0]', 'drop[0]', 'keep[1]', 'keep[2]']);
    expect(sim.state.instances.get('drop[1]')!.status).toBe('skipped');
  });

  it('tasks.<name>.status still reads how a need ended', () => {
    const sim = simulate(
      "  failFast: false\n  tasks:\n    - { name: a, run: x }\n    - { name: b, run: \"echo ${{ tasks.a.status }}\", needs: [a], when: \"always() && tasks.a.status == 'failed'\" }\n",
      (d) => (d.task === 'a' ? { ok: false, error: 'x', retryable: false } : ok),
    );
    expect(sim.dispatches.map((d) => [d.instance, d.context.tasks['a']?.status ?? null])).toEqual([['a', null], ['b', 'failed']]);
  });

  it('replaying the events of runs with status functions rebuilds the same state, for random outcomes', () => {
    const spec = '  failFast: %F%\n  tasks:\n    - { name: a, run: x, retry: { attempts: 2, delay: 1s } }\n    - { name: b, run: x, needs: [a], when: failure() }\n    - { name: c, run: x, needs: [a], forEach: [1, 2], when: "!failure() && !cancelled()" }\n    - { name: d, run: x, needs: [b, c], when: always() }\n    - { name: e, run: x, needs: [d] }\n  onFailure:\n    - { name: z, run: x, when: success() }\n';
    fc.assert(
      fc.property(fc.boolean(), fc.array(fc.record({ ok: fc.boolean(), retryable: fc.boolean(), durationMs: fc.integer({ min: 1, max: 5000 }) }), { minLength: 1, maxLength: 20 }), (failFast, outcomes) => {
        let i = 0;
        const sim = simulate(spec.replace('%F%', String(failFast)), () => outcomes[i++ % outcomes.length]!);
        expect(['succeeded', 'failed']).toContain(sim.state.status);
        expect(sim.state.groups.get('d')!.status).not.toBe('pending');
        const replay = initialRunState(sim.plan, 'run-1');
        for (const e of sim.events) applyRunEvent(replay, sim.plan, e);
        expect(snapshotRun(replay)).toEqual(snapshotRun(sim.state));
      }),
      { numRuns: 100 },
    );
  });
});

describe('finally tasks', () => {
  const fin = '  finally:\n    - { name: report, run: "echo ${{ run.status }}", when: "run.status != \'cancelled\' || cancelled()" }\n    - { name: tidy, run: x, needs: [report] }\n';
  const runOf = (sim: { dispatches: Array<{ task: string; context: { run: Record<string, unknown> } }> }, task: string): Record<string, unknown> | undefined => sim.dispatches.find((d) => d.task === task)?.context.run;

  it('run last after a success, see run.status succeeded, and leave the run succeeded', () => {
    const sim = simulate('  tasks:\n    - { name: a, run: x }\n    - { name: b, run: x, needs: [a] }\n' + fin, () => ok);
    expect(sim.state.status).toBe('succeeded');
    expect(sim.dispatches.map((d) => d.instance)).toEqual(['a', 'b', 'report', 'tidy']);
    expect(runOf(sim, 'report')).toMatchObject({ id: 'run-1', workflow: 'sim', startedAt: new Date(T0).toISOString(), status: 'succeeded', failures: [] });
    expect(trace(sim, ['run.finalizing', 'run.succeeded'])).toEqual(['run.finalizing', 'run.succeeded']);
    expect(sim.events.find((e) => e.type === 'run.finalizing')).toMatchObject({ outcome: 'succeeded' });
  });

  it('a failing finally task fails a run that had succeeded, and the finally tasks that need it are skipped', () => {
    const sim = simulate('  tasks:\n    - { name: a, run: x }\n' + fin + '    - { name: last, run: x, needs: [tidy], when: always() }\n', (d) => (d.task === 'report' ? { ok: false, error: 'smtp down', retryable: false } : ok));
    expect(sim.state.status).toBe('failed');
    expect(sim.state.failureReason).toBe("finally task 'report' failed: smtp down");
    expect(sim.state.groups.get('tidy')!.reason).toBe("'report' failed");
    expect(sim.dispatches.map((d) => d.instance)).toEqual(['a', 'report', 'last']);
  });

  it('after a failure they run after compensation and onFailure, read run.failures, and the run fails with its first reason', () => {
    const sim = simulate(
      '  failFast: false\n  tasks:\n    - { name: reserve, run: r, compensate: { run: u } }\n    - { name: ship, run: s, needs: [reserve] }\n    - { name: each, run: x, forEach: [1, 2] }\n  onFailure:\n    - { name: alert, run: "page ${{ run.status }}" }\n  finally:\n    - { name: per-failure, run: "echo ${{ item.task }}", forEach: "${{ run.failures }}" }\n',
      (d) => (d.kind === 'task' && (d.task === 'ship' || d.instance === 'each[1]') ? { ok: false, error: `no ${d.instance}`, retryable: false, durationMs: d.task === 'ship' ? 20 : 5 } : ok),
    );
    expect(sim.state.status).toBe('failed');
    expect(sim.state.failureReason).toBe("task 'each' failed: no each[1]");
    expect(sim.dispatches.map((d) => `${d.kind}:${d.instance}`)).toEqual(['task:reserve', 'task:each[0]', 'task:each[1]', 'task:ship', 'compensate:reserve:compensate', 'task:alert', 'task:per-failure[0]', 'task:per-failure[1]']);
    const failures = [{ task: 'each[1]', error: 'no each[1]' }, { task: 'ship', error: 'no ship' }];
    expect(runOf(sim, 'alert')).toMatchObject({ status: 'failed', failures });
    expect(sim.dispatches.filter((d) => d.task === 'per-failure').map((d) => d.item)).toEqual(failures);
    expect(trace(sim, ['run.failing', 'run.finalizing', 'run.failed'])).toEqual(['run.failing', 'run.finalizing', 'run.failed']);
  });

  it('a cancel stops the rest at once, runs the finally tasks with run.status cancelled and cancelled() true, then ends the run cancelled', () => {
    const sim = simulate('  tasks:\n    - { name: a, run: x }\n    - { name: b, run: x, needs: [a] }\n  onFailure:\n    - { name: z, run: x }\n' + fin + '    - { name: not-on-cancel, run: x, when: "!cancelled()" }\n', (d) => (d.task === 'a' ? { ok: true, hang: true } : ok), {
      controls: [{ at: T0 + 5000, event: () => ({ runId: 'run-1', at: T0 + 5000, type: 'run.cancelling', by: 'alice', reason: 'wrong data' }) }],
    });
    expect(sim.state.status).toBe('cancelled');
    expect(sim.state.cancelReason).toBe('wrong data');
    expect(sim.state.groups.get('a')!.status).toBe('cancelled');
    expect(sim.state.groups.get('b')!.status).toBe('cancelled');
    expect(sim.state.groups.get('z')!.status).toBe('cancelled');
    expect(sim.dispatches.map((d) => [d.instance, d.at - T0])).toEqual([['a', 0], ['report', 5000], ['tidy', 5010]]);
    expect(runOf(sim, 'report')).toMatchObject({ status: 'cancelled', failures: [] });
    expect(sim.state.groups.get('not-on-cancel')!.reason).toBe("when '!cancelled()' is false (success() true, failure() false, cancelled() true)");
    expect(sim.events.at(-1)).toMatchObject({ type: 'run.cancelled', by: 'alice', reason: 'wrong data', at: T0 + 5020 });
  });

  it('a cancel while the finally tasks run stops them too; a paused run cancelled still runs them', () => {
    const twice = simulate('  tasks:\n    - { name: a, run: x }\n' + fin, (d) => (d.task === 'a' ? { ok: true, hang: true } : { ok: true, hang: true }), {
      controls: [
        { at: T0 + 1000, event: () => ({ runId: 'run-1', at: T0 + 1000, type: 'run.cancelling', by: 'alice' }) },
        { at: T0 + 2000, event: () => ({ runId: 'run-1', at: T0 + 2000, type: 'run.cancelled', by: 'bob', reason: 'enough' }) },
      ],
    });
    expect(twice.state.status).toBe('cancelled');
    expect(twice.state.cancelReason).toBe('cancelled by alice');
    expect(twice.state.instances.get('report')!.status).toBe('cancelled');
    expect(twice.state.groups.get('tidy')!.status).toBe('cancelled');
    const paused = simulate('  tasks:\n    - { name: a, run: x }\n' + fin, (d) => (d.task === 'a' ? { ok: true, durationMs: 100 } : ok), {
      controls: [
        { at: T0 + 50, event: () => ({ runId: 'run-1', at: T0 + 50, type: 'run.paused', by: 'ops' }) },
        { at: T0 + 5000, event: () => ({ runId: 'run-1', at: T0 + 5000, type: 'run.cancelling', by: 'ops' }) },
      ],
    });
    expect(paused.state.status).toBe('cancelled');
    expect(paused.dispatches.map((d) => [d.instance, d.at - T0])).toEqual([['a', 0], ['report', 5000], ['tidy', 5010]]);
  });

  it('a first cancel during the finally tasks lets them finish, and the run ends cancelled', () => {
    const sim = simulate('  tasks:\n    - { name: a, run: x }\n' + fin, (d) => (d.task === 'report' ? { ok: true, durationMs: 5000 } : ok), {
      controls: [{ at: T0 + 1000, event: () => ({ runId: 'run-1', at: T0 + 1000, type: 'run.cancelling', by: 'alice' }) }],
    });
    expect(sim.state.status).toBe('cancelled');
    expect(sim.state.instances.get('report')!.status).toBe('succeeded');
    expect(sim.dispatches.map((d) => [d.instance, d.at - T0])).toEqual([['a', 0], ['report', 10], ['tidy', 5010]]);
    expect(runOf(sim, 'tidy')).toMatchObject({ status: 'cancelled' });
  });

  it('run after the run deadline, which fails the run', () => {
    const sim = simulate('  timeout: 5m\n  tasks:\n    - { name: slow, run: x }\n    - { name: later, run: x, needs: [slow] }\n' + fin, (d) => (d.task === 'slow' ? { ok: true, hang: true } : ok));
    expect(sim.state.status).toBe('failed');
    expect(sim.state.failureReason).toBe('run deadline exceeded');
    expect(sim.state.groups.get('later')!.status).toBe('skipped');
    expect(sim.dispatches.map((d) => [d.instance, d.at - T0])).toEqual([['slow', 0], ['report', 300_000], ['tidy', 300_010]]);
    expect(runOf(sim, 'report')).toMatchObject({ status: 'failed' });
  });

  it('are retried like any task', () => {
    let n = 0;
    const sim = simulate('  tasks:\n    - { name: a, run: x }\n  finally:\n    - { name: f, run: x, retry: { attempts: 3, delay: 1s } }\n', (d) => (d.task === 'f' && ++n < 3 ? { ok: false, error: 'flaky' } : ok));
    expect(sim.state.status).toBe('succeeded');
    expect(sim.dispatches.map((d) => `${d.instance}#${d.attempt}`)).toEqual(['a#1', 'f#1', 'f#2', 'f#3']);
  });

  it('replaying the events of runs with finally tasks, cancelled or not, rebuilds the same state', () => {
    const spec = '  failFast: false\n  tasks:\n    - { name: a, run: x, retry: { attempts: 2, delay: 1s }, compensate: { run: u } }\n    - { name: b, run: x, needs: [a], forEach: [1, 2] }\n  onFailure:\n    - { name: z, run: x }\n  finally:\n    - { name: f, run: x, forEach: "${{ run.failures }}" }\n    - { name: g, run: x, needs: [f], when: "always() && run.status != \'succeeded\'" }\n';
    fc.assert(
      fc.property(fc.option(fc.integer({ min: 0, max: 20_000 })), fc.array(fc.record({ ok: fc.boolean(), retryable: fc.boolean(), durationMs: fc.integer({ min: 1, max: 5000 }) }), { minLength: 1, maxLength: 20 }), (cancelAt, outcomes) => {
        let i = 0;
        const controls = cancelAt === null ? [] : [{ at: T0 + cancelAt, event: (): RunEvent => ({ runId: 'run-1', at: T0 + cancelAt, type: 'run.cancelling', by: 'x' }) }];
        const sim = simulate(spec, () => outcomes[i++ % outcomes.length]!, { controls });
        expect(['succeeded', 'failed', 'cancelled']).toContain(sim.state.status);
        expect(sim.state.groups.get('g')!.status).not.toBe('pending');
        const replay = initialRunState(sim.plan, 'run-1');
        for (const e of sim.events) applyRunEvent(replay, sim.plan, e);
        expect(snapshotRun(replay)).toEqual(snapshotRun(sim.state));
      }),
      { numRuns: 120 },
    );
  });
});

describe('forEach, outputs and params', () => {
  it('fans out over an upstream output, then fans in with every item\'s outputs', () => {
    const sim = simulate(
      '  tasks:\n    - { name: list, run: x, outputs: [items] }\n    - { name: each, run: "echo ${{ item }}", needs: [list], forEach: "${{ fromJSON(tasks.list.outputs.items) }}", outputs: [n] }\n    - { name: merge, run: "echo ${{ toJSON(tasks.each.outputs.n) }}", needs: [each] }\n',
      (d): Outcome => (d.task === 'list' ? { ok: true, outputs: { items: '["a","b","c"]' } } : d.task === 'each' ? { ok: true, outputs: { n: `${String(d.item)}!` } } : ok),
    );
    expect(sim.state.status).toBe('succeeded');
    expect(sim.dispatches.map((d) => [d.instance, d.item ?? null])).toEqual([['list', null], ['each[0]', 'a'], ['each[1]', 'b'], ['each[2]', 'c'], ['merge', null]]);
    expect(sim.dispatches[4]!.context.tasks).toEqual({ each: { status: 'succeeded', outputs: { n: ['a!', 'b!', 'c!'] }, attempts: 3 } });
  });

  it('gives each task only the tasks it reads, plus params and run', () => {
    const sim = simulate('  params:\n    n: { type: integer, default: 3 }\n  tasks:\n    - { name: a, run: x, outputs: [v] }\n    - { name: b, run: x, needs: [a] }\n    - { name: c, run: "echo ${{ tasks.a.outputs.v }} ${{ params.n }}", needs: [b] }\n', (d) => (d.task === 'a' ? { ok: true, outputs: { v: '42' } } : ok));
    const c = sim.dispatches.find((d) => d.task === 'c')!;
    expect(c.context.params).toEqual({ n: 3 });
    expect(Object.keys(c.context.tasks)).toEqual(['a']);
    expect(c.context.tasks['a']!.outputs).toEqual({ v: '42' });
    expect(c.context.run).toMatchObject({ id: 'run-1', workflow: 'sim', trigger: 'test', attempt: 1 });
  });

  it('an empty list succeeds with no instances; a forEach that is not a list fails the task', () => {
    const empty = simulate('  tasks:\n    - { name: e, run: x, forEach: [] }\n    - { name: after, run: x, needs: [e] }\n', () => ok);
    expect(empty.state.status).toBe('succeeded');
    expect(empty.dispatches.map((d) => d.instance)).toEqual(['after']);
    const bad = simulate('  tasks:\n    - { name: a, run: x, outputs: [v] }\n    - { name: e, run: x, needs: [a], forEach: "${{ fromJSON(tasks.a.outputs.v) }}" }\n', (d) => (d.task === 'a' ? { ok: true, outputs: { v: '{"not":"a list"}' } } : ok));
    expect(bad.state.status).toBe('failed');
    expect(bad.state.failureReason).toBe('task \'e\' failed: forEach must yield a list or a string holding a JSON array, got a mapping: {"not":"a list"}');
  });
});

describe('forEach over a string holding a JSON array (Argo withParam)', () => {
  const spec = '  tasks:\n    - { name: list, run: x, outputs: [items] }\n    - { name: each, run: "echo ${{ item }}", needs: [list], forEach: "${{ tasks.list.outputs.items }}" }\n';
  const listing = (items: string) => (d: { task: string }): Outcome => (d.task === 'list' ? { ok: true, outputs: { items } } : ok);

  it('fans out over the array without fromJSON', () => {
    const sim = simulate(spec, listing('[{"region":"emea"},"apac",3]'));
    expect(sim.state.status).toBe('succeeded');
    expect(sim.dispatches.map((d) => [d.instance, d.item ?? null])).toEqual([['list', null], ['each[0]', { region: 'emea' }], ['each[1]', 'apac'], ['each[2]', 3]]);
    expect(simulate(spec, listing(' [] ')).state.groups.get('each')!.status).toBe('succeeded');
  });

  it('fails the task on anything else, naming what it got', () => {
    const reason = (items: string): string | undefined => simulate(spec, listing(items)).state.failureReason;
    expect(reason('a,b,c')).toBe("task 'each' failed: forEach must yield a list or a string holding a JSON array, got a string that is not JSON: \"a,b,c\"");
    expect(reason('{"a":1}')).toBe('task \'each\' failed: forEach must yield a list or a string holding a JSON array, got a string holding a mapping: "{\\"a\\":1}"');
    expect(reason('42')).toBe('task \'each\' failed: forEach must yield a list or a string holding a JSON array, got a string holding a number: "42"');
    const other = simulate('  params:\n    n: { type: integer, default: 3 }\n  tasks:\n    - { name: e, run: x, forEach: "${{ fromJSON(params.n) }}" }\n', () => ok);
    expect(other.state.failureReason).toBe("task 'e' failed: forEach must yield a list or a string holding a JSON array, got a number: 3");
  });
});

describe('retries, timeouts and deadlines', () => {
  it('retries with exponential backoff, deterministic jitter and a cap, then succeeds', () => {
    let calls = 0;
    const sim = simulate('  tasks:\n    - { name: a, run: x, retry: { attempts: 4, backoff: exponential, delay: 10s, maxDelay: 15s } }\n', () => (++calls < 4 ? { ok: false, error: 'flaky' } : ok));
    expect(sim.state.status).toBe('succeeded');
    const scheduled = sim.events.filter((e) => e.type === 'task.retry-scheduled').map((e) => (e.type === 'task.retry-scheduled' ? e.retryAt - e.at : 0));
    expect(scheduled).toHaveLength(3);
    const t = sim.plan.tasks.get('a')!;
    expect(scheduled).toEqual([1, 2, 3].map((n) => retryDelay('run-1', 'a', n, t)));
    expect(scheduled[0]).toBeGreaterThanOrEqual(8000);
    expect(scheduled[0]).toBeLessThanOrEqual(12000);
    expect(scheduled[1]).toBeGreaterThanOrEqual(12000); // 20s capped at 15s, -20%
    expect(scheduled[2]).toBeLessThanOrEqual(18000);
    // Each retry starts no earlier than its scheduled time.
    expect(sim.dispatches.map((d) => d.attempt)).toEqual([1, 2, 3, 4]);
    expect(sim.dispatches[1]!.at - sim.dispatches[0]!.at).toBeGreaterThanOrEqual(scheduled[0]!);
  });

  it('does not retry a failure marked not retryable', () => {
    const sim = simulate('  tasks:\n    - { name: a, run: x, retry: { attempts: 5 } }\n', () => ({ ok: false, error: 'command not found', retryable: false }));
    expect(sim.dispatches).toHaveLength(1);
    expect(sim.state.failureReason).toBe("task 'a' failed: command not found");
  });

  it('fails and retries an attempt that goes silent past its timeout', () => {
    let n = 0;
    const sim = simulate('  tasks:\n    - { name: a, run: x, timeout: 1m, retry: { attempts: 2, delay: 1s } }\n', () => (++n === 1 ? { ok: true, hang: true } : ok));
    expect(sim.state.status).toBe('succeeded');
    expect(sim.cancels).toEqual([{ instance: 'a', attempt: 1, at: T0 + 60_000 + TIMEOUT_GRACE_MS }]);
    expect(sim.state.instances.get('a')!.attempts.map((a) => [a.status, a.error ?? null])).toEqual([['failed', 'timed out after 60000 ms with no report from the agent'], ['succeeded', null]]);
  });

  it('cancels everything and fails at the run deadline', () => {
    const sim = simulate('  timeout: 5m\n  tasks:\n    - { name: slow, run: x }\n    - { name: later, run: x, needs: [slow] }\n', () => ({ ok: true, hang: true }));
    expect(sim.state.status).toBe('failed');
    expect(sim.state.failureReason).toBe('run deadline exceeded');
    expect(sim.cancels).toEqual([{ instance: 'slow', attempt: 1, at: T0 + 300_000 }]);
    expect(sim.state.groups.get('later')!.status).toBe('skipped');
  });
});

describe('failure handling', () => {
  const spec = (failFast: boolean): string => `  failFast: ${failFast}\n  tasks:\n    - { name: bad, run: x }\n    - { name: after-bad, run: x, needs: [bad] }\n    - { name: slow, run: x }\n    - { name: after-slow, run: x, needs: [slow] }\n`;
  const behave = (d: { task: string }) => (d.task === 'bad' ? { ok: false, error: 'nope', retryable: false } : d.task === 'slow' ? { ok: true, durationMs: 1000 } : ok);

  it('fail-fast: lets running tasks finish, starts nothing new, fails the run', () => {
    const sim = simulate(spec(true), behave);
    expect(sim.state.status).toBe('failed');
    expect(sim.dispatches.map((d) => d.instance)).toEqual(['bad', 'slow']);
    expect(sim.state.groups.get('slow')!.status).toBe('succeeded');
    expect(sim.state.groups.get('after-slow')!.status).toBe('skipped');
    expect(sim.state.groups.get('after-slow')!.reason).toBe("run is failing (task 'bad' failed: nope)");
  });

  it('continue: independent branches finish, dependants of the failure are skipped', () => {
    const sim = simulate(spec(false), behave);
    expect(sim.state.status).toBe('failed');
    expect(sim.dispatches.map((d) => d.instance)).toEqual(['bad', 'slow', 'after-slow']);
    expect(sim.state.groups.get('after-bad')!.reason).toBe("'bad' failed");
  });

  it('saga: compensates completed steps in reverse topological order, then runs onFailure', () => {
    const sim = simulate(
      '  tasks:\n    - { name: reserve, run: r, compensate: { run: unreserve } }\n    - { name: charge, run: c, needs: [reserve], outputs: [id], compensate: { run: "refund ${{ tasks.charge.outputs.id }}" } }\n    - { name: ship, run: s, needs: [charge] }\n  onFailure:\n    - { name: alert, run: "page ${{ run.id }}" }\n',
      (d) => (d.task === 'ship' && d.kind === 'task' ? { ok: false, error: 'no truck', retryable: false } : d.task === 'charge' && d.kind === 'task' ? { ok: true, outputs: { id: 'pay-9' } } : ok),
    );
    expect(sim.state.status).toBe('failed');
    expect(sim.dispatches.map((d) => `${d.kind}:${d.instance}`)).toEqual(['task:reserve', 'task:charge', 'task:ship', 'compensate:charge:compensate', 'compensate:reserve:compensate', 'task:alert']);
    expect(sim.dispatches[3]!.context.tasks['charge']!.outputs).toEqual({ id: 'pay-9' });
    expect(trace(sim, ['run.failing', 'compensation.started', 'compensation.finished', 'run.failed'])).toEqual([
      'run.failing', 'compensation.started charge:compensate', 'compensation.finished charge:compensate', 'compensation.started reserve:compensate', 'compensation.finished reserve:compensate', 'run.failed',
    ]);
    expect(sim.state.failureReason).toBe("task 'ship' failed: no truck");
  });
});

describe('concurrency and circuit breakers', () => {
  it('never runs more than the run limit, a pool\'s capacity, or a forEach parallelism', () => {
    const many = simulate('  tasks:\n' + Array.from({ length: 10 }, (_, i) => `    - { name: t${i}, run: x }\n`).join(''), () => ({ ok: true, durationMs: 100 }), { maxParallel: 3 });
    expect(many.peak).toBe(3);
    expect(many.state.status).toBe('succeeded');
    const pool = simulate('  pools:\n    p: { count: 2, concurrency: 2 }\n  tasks:\n    - { name: f, run: x, pool: p, forEach: [1,2,3,4,5,6,7,8,9] }\n', () => ({ ok: true, durationMs: 100 }));
    expect(pool.peak).toBe(4);
    const par = simulate('  tasks:\n    - { name: f, run: x, parallelism: 2, forEach: [1,2,3,4,5] }\n', () => ({ ok: true, durationMs: 100 }));
    expect(par.peak).toBe(2);
  });

  it('an http task\'s breaker opens after 5 consecutive failures of its host, and half-opens with one probe after the cool-down', () => {
    const sim = simulate('  failFast: false\n  tasks:\n' + Array.from({ length: 8 }, (_, i) => `    - { name: t${i}, agent: http, http: { url: "http://x" } }\n`).join(''), () => ({ ok: false, error: 'down', retryable: false }), { maxParallel: 1 });
    const opened = sim.events.filter((e) => e.type === 'breaker.opened');
    // Opened by the fifth failure, then again by each failed probe.
    expect(opened.map((e) => (e.type === 'breaker.opened' ? [e.key, e.until - e.at] : []))).toEqual(Array.from({ length: 4 }, () => ['host:x', BREAKER_COOLDOWN_MS]));
    // Five attempts, then one probe per cool-down.
    const starts = sim.dispatches.map((d) => d.at - T0);
    expect(starts.slice(5)).toEqual([opened[0]!.at - T0 + BREAKER_COOLDOWN_MS, opened[1]!.at - T0 + BREAKER_COOLDOWN_MS, opened[2]!.at - T0 + BREAKER_COOLDOWN_MS]);
  });
});

describe('a circuit breaker whose probe succeeds', () => {
  it('records breaker.closed, and what waited behind it starts without a cool-down', () => {
    let n = 0;
    const sim = simulate('  failFast: false\n  tasks:\n' + Array.from({ length: 9 }, (_, i) => `    - { name: t${i}, agent: http, http: { url: "http://x" } }\n`).join(''), () => (n++ < 5 ? { ok: false, error: 'down', retryable: false } : { ok: true }), { maxParallel: 1 });
    const kinds = sim.events.filter((e) => e.type === 'breaker.opened' || e.type === 'breaker.closed').map((e) => e.type);
    expect(kinds).toEqual(['breaker.opened', 'breaker.closed']);
    const opened = sim.events.find((e) => e.type === 'breaker.opened')!;
    const closed = sim.events.find((e) => e.type === 'breaker.closed')!;
    // The probe ran at the end of the cool-down; the three after it did not wait another one.
    const starts = sim.dispatches.map((d) => d.at);
    expect(starts[5]).toBe(opened.at + BREAKER_COOLDOWN_MS);
    expect(starts.slice(6).every((t) => t < closed.at + BREAKER_COOLDOWN_MS)).toBe(true);
    expect(sim.state.breakers.size).toBe(0);
    expect(sim.state.instances.get('t8')!.status).toBe('succeeded');
  });
});

describe('cancel, pause and approvals', () => {
  it('cancel stops everything at once', () => {
    const sim = simulate('  tasks:\n    - { name: a, run: x }\n    - { name: b, run: x, needs: [a] }\n', () => ({ ok: true, hang: true }), { controls: [{ at: T0 + 5000, event: () => ({ runId: 'run-1', at: T0 + 5000, type: 'run.cancelled', by: 'alice', reason: 'wrong data' }) }] });
    expect(sim.state.status).toBe('cancelled');
    expect(sim.state.cancelReason).toBe('wrong data');
    expect(sim.state.instances.get('a')!.status).toBe('cancelled');
    expect(sim.state.groups.get('b')!.status).toBe('cancelled');
  });

  it('pause stops new starts; resume continues', () => {
    const sim = simulate('  tasks:\n    - { name: a, run: x, durationMs: 10 }\n    - { name: b, run: x, needs: [a] }\n'.replace(', durationMs: 10', ''), () => ({ ok: true, durationMs: 100 }), {
      controls: [
        { at: T0 + 50, event: () => ({ runId: 'run-1', at: T0 + 50, type: 'run.paused', by: 'ops' }) },
        { at: T0 + 10_000, event: () => ({ runId: 'run-1', at: T0 + 10_000, type: 'run.resumed', by: 'ops' }) },
      ],
    });
    expect(sim.state.status).toBe('succeeded');
    expect(sim.dispatches.map((d) => [d.instance, d.at - T0])).toEqual([['a', 0], ['b', 10_000]]);
  });

  it('waits for approval; a grant continues, a rejection fails, a timeout applies onTimeout', () => {
    const gate = '  tasks:\n    - { name: build, run: x }\n    - { name: review, needs: [build], approval: { timeout: 1h, onTimeout: %T%, message: "ship ${{ run.id }}?" } }\n    - { name: deploy, run: x, needs: [review] }\n';
    const grant = simulate(gate.replace('%T%', 'reject'), () => ok, { controls: [{ at: T0 + 60_000, event: () => ({ runId: 'run-1', at: T0 + 60_000, type: 'approval.granted', task: 'review', by: 'carol' }) }] });
    expect(grant.state.status).toBe('succeeded');
    expect(grant.events.find((e) => e.type === 'approval.requested')).toMatchObject({ task: 'review', message: 'ship run-1?', timeoutAt: T0 + 10 + 3_600_000 });
    expect(grant.dispatches.find((d) => d.task === 'deploy')!.at).toBe(T0 + 60_000);
    const reject = simulate(gate.replace('%T%', 'approve'), () => ok, { controls: [{ at: T0 + 60_000, event: () => ({ runId: 'run-1', at: T0 + 60_000, type: 'approval.rejected', task: 'review', by: 'dave', reason: 'not today' }) }] });
    expect(reject.state.failureReason).toBe("task 'review' failed: rejected by dave: not today");
    const timeout = simulate(gate.replace('%T%', 'approve'), () => ok);
    expect(timeout.state.status).toBe('succeeded');
    expect(timeout.state.instances.get('review')!.approval!.by).toBe('timeout');
  });
});

describe('the reducer is idempotent and replayable', () => {
  const spec = '  failFast: false\n  tasks:\n    - { name: a, run: x, retry: { attempts: 3, delay: 1s } }\n    - { name: b, run: x, needs: [a], forEach: [1, 2, 3], compensate: { run: u } }\n    - { name: c, run: x, needs: [b] }\n    - { name: d, run: x }\n  onFailure:\n    - { name: z, run: x }\n';

  it('duplicate and late events change nothing', () => {
    const sim = simulate(spec, () => ok);
    const replay = initialRunState(sim.plan, 'run-1');
    for (const e of sim.events) {
      expect(applyRunEvent(replay, sim.plan, e)).toBe(true);
      const before = JSON.stringify(snapshotRun(replay));
      expect(applyRunEvent(replay, sim.plan, e)).toBe(false);
      expect(JSON.stringify(snapshotRun(replay))).toBe(before);
    }
    expect(snapshotRun(replay)).toEqual(snapshotRun(sim.state));
    // A report for an attempt that is not the current one is ignored.
    expect(applyRunEvent(replay, sim.plan, { runId: 'run-1', at: T0, type: 'task.failed', task: 'a', attempt: 1, error: 'late', retryable: true })).toBe(false);
  });

  it('for random outcomes, replaying the recorded events rebuilds the same state, and nothing throws', () => {
    fc.assert(
      fc.property(fc.array(fc.record({ ok: fc.boolean(), retryable: fc.boolean(), durationMs: fc.integer({ min: 1, max: 5000 }) }), { minLength: 1, maxLength: 30 }), (outcomes) => {
        let i = 0;
        const sim = simulate(spec, () => outcomes[i++ % outcomes.length]!);
        expect(['succeeded', 'failed']).toContain(sim.state.status);
        const replay = initialRunState(sim.plan, 'run-1');
        for (const e of sim.events) applyRunEvent(replay, sim.plan, e);
        expect(snapshotRun(replay)).toEqual(snapshotRun(sim.state));
      }),
      { numRuns: 150 },
    );
  });
});

describe('a result reported without task.started', () => {
  it('takes the attempt from queued to its end, keeping when it started', async () => {
    const { buildRunPlan } = await import('../../engine/run/RunPlan.js');
    const { workflowOf } = await import('./simulateRun.js');
    const plan = buildRunPlan(workflowOf('  tasks:\n    - { name: a, agent: noop }\n    - { name: b, agent: noop }\n'), { maxParallel: 10 });
    const s = initialRunState(plan, 'r');
    applyRunEvent(s, plan, { runId: 'r', at: T0, type: 'run.started', workflow: 'sim', params: {}, trigger: 'test' });
    for (const t of ['a', 'b']) applyRunEvent(s, plan, { runId: 'r', at: T0, type: 'task.queued', task: t, attempt: 1 });
    expect(applyRunEvent(s, plan, { runId: 'r', at: T0 + 30, type: 'task.succeeded', task: 'a', attempt: 1, outputs: {}, startedAt: T0 + 10 })).toBe(true);
    expect(applyRunEvent(s, plan, { runId: 'r', at: T0 + 40, type: 'task.failed', task: 'b', attempt: 1, error: 'x', retryable: false, startedAt: T0 + 20 })).toBe(true);
    const a = s.instances.get('a')!;
    const b = s.instances.get('b')!;
    expect([a.status, a.startedAt, a.finishedAt, a.attempts[0]!.startedAt]).toEqual(['succeeded', T0 + 10, T0 + 30, T0 + 10]);
    expect([b.status, b.startedAt, b.attempts[0]!.startedAt]).toEqual(['failed', T0 + 20, T0 + 20]);
  });
});
