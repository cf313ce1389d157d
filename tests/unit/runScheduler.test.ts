import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { applyRunEvent, initialRunState } from '../../engine/run/reduceRun.js';
import { snapshotRun } from '../../engine/run/RunState.js';
import { BREAKER_COOLDOWN_MS, TIMEOUT_GRACE_MS, retryDelay } from '../../engine/run/scheduleRun.js';
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
    expect(bad.state.failureReason).toBe('task \'e\' failed: forEach must yield a list, got {"not":"a list"}');
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

  it('opens after 5 consecutive failures of an agent type, and half-opens with one probe after the cool-down', () => {
    const sim = simulate('  failFast: false\n  tasks:\n' + Array.from({ length: 8 }, (_, i) => `    - { name: t${i}, agent: http, http: { url: "http://x" } }\n`).join(''), () => ({ ok: false, error: 'down', retryable: false }), { maxParallel: 1 });
    const opened = sim.events.filter((e) => e.type === 'breaker.opened');
    // Opened by the fifth failure, then again by each failed probe.
    expect(opened.map((e) => (e.type === 'breaker.opened' ? [e.key, e.until - e.at] : []))).toEqual(Array.from({ length: 4 }, () => ['agent:http', BREAKER_COOLDOWN_MS]));
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
