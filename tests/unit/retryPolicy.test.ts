import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { applyRunEvent, initialRunState } from '../../engine/run/reduceRun.js';
import { backoffDelay, DEFAULT_RETRY, type ResolvedRetry } from '../../engine/run/retryPolicy.js';
import { buildRunPlan } from '../../engine/run/RunPlan.js';
import { snapshotRun } from '../../engine/run/RunState.js';
import type { RunSnapshot } from '../../engine/run/RunSnapshot.js';
import { validateText } from '../../engine/spec/validateWorkflows.js';
import { workflow } from '../harness/gitRepo.js';
import { simulate, T0, workflowOf, type Outcome, type Simulation } from './simulateRun.js';

const ok: Outcome = { ok: true };
const exit = (code: number): Outcome => ({ ok: false, error: `exited with code ${code}`, exitCode: code, failure: 'exit' });
const oom: Outcome = { ok: false, error: 'Nomad allocation 1a2b3c4d OOM killed', failure: 'infrastructure' };

/** The delays the scheduler chose, in order. */
const delays = (sim: Simulation): number[] => sim.events.flatMap((e) => (e.type === 'task.retry-scheduled' ? [e.retryAt - e.at] : []));
/** Outcomes in turn, then the last one forever. */
const inTurn = (...outcomes: Outcome[]): (() => Outcome) => {
  let n = 0;
  return () => outcomes[Math.min(n++, outcomes.length - 1)]!;
};

function check(spec: string): string[] {
  return validateText('w.yaml', workflow('demo', spec)).diagnostics.map((d) => `${d.line}:${d.col} ${d.code} ${d.message}`);
}

describe('backoff: factor, cap and jitter', () => {
  it('grows by factor (default 2) and is capped at maxDelay', () => {
    const two = simulate('  tasks:\n    - { name: a, run: x, retry: { attempts: 4, delay: 1s, jitter: false } }\n', inTurn(exit(1), exit(1), exit(1), ok));
    expect(delays(two)).toEqual([1000, 2000, 4000]);
    const three = simulate('  tasks:\n    - { name: a, run: x, retry: { attempts: 6, delay: 1s, factor: 3, maxDelay: 30s, jitter: false } }\n', inTurn(exit(1), exit(1), exit(1), exit(1), exit(1), ok));
    expect(delays(three)).toEqual([1000, 3000, 9000, 27000, 30000]);
    expect(three.dispatches.map((d) => d.at - T0)).toEqual([0, 1010, 4020, 13030, 40040, 70050]);
  });

  it('inherits factor from spec.defaults.retry, and a task overrides it', () => {
    const sim = simulate('  defaults:\n    retry: { attempts: 3, delay: 1s, factor: 5, jitter: false }\n  tasks:\n    - { name: a, run: x }\n    - { name: b, run: x, retry: { factor: 1.5 } }\n', (d) => (d.attempt < 3 ? exit(1) : ok));
    const by = (task: string): number[] => sim.events.flatMap((e) => (e.type === 'task.retry-scheduled' && e.task === task ? [e.retryAt - e.at] : []));
    expect(by('a')).toEqual([1000, 5000]);
    expect(by('b')).toEqual([1000, 1500]);
  });

  it('jitter spreads a delay by at most 20% and never past maxDelay, the same on every replay', () => {
    fc.assert(fc.property(
      fc.integer({ min: 0, max: 100_000 }), fc.integer({ min: 0, max: 600_000 }), fc.double({ min: 1, max: 100, noNaN: true }), fc.integer({ min: 1, max: 100 }), fc.constantFrom('exponential', 'linear', 'fixed'), fc.string(),
      (delayMs, extra, factor, n, backoff, runId) => {
        const r: ResolvedRetry = { ...DEFAULT_RETRY, delayMs, maxDelayMs: delayMs + extra, factor, backoff: backoff as ResolvedRetry['backoff'] };
        const raw = backoff === 'fixed' ? delayMs : backoff === 'linear' ? delayMs * n : delayMs * factor ** (n - 1);
        const capped = Math.min(Number.isFinite(raw) ? raw : Infinity, r.maxDelayMs);
        const d = backoffDelay(r, runId, 'task', n);
        expect(d).toBeLessThanOrEqual(r.maxDelayMs);
        expect(d).toBeGreaterThanOrEqual(Math.floor(capped * 0.8));
        expect(d).toBeLessThanOrEqual(Math.ceil(capped * 1.2));
        expect(backoffDelay(r, runId, 'task', n)).toBe(d);
      },
    ));
  });

  it('with jitter, a delay at the cap spreads below it rather than sitting on it', () => {
    const r: ResolvedRetry = { ...DEFAULT_RETRY, delayMs: 10_000, maxDelayMs: 10_000 };
    const ds = Array.from({ length: 50 }, (_, i) => backoffDelay(r, `run-${i}`, 'a', 3));
    expect(Math.max(...ds)).toBeLessThanOrEqual(10_000);
    expect(Math.min(...ds)).toBeGreaterThanOrEqual(8_000);
    expect(new Set(ds).size).toBeGreaterThan(10);
  });
});

describe('retry.on: which failures are retried', () => {
  const spec = (on: string): string => `  tasks:\n    - { name: a, run: x, retry: { attempts: 3, delay: 1s, on: ${on} } }\n`;

  it('any (the default) retries exits, timeouts and infrastructure failures alike', () => {
    const sim = simulate('  tasks:\n    - { name: a, run: x, retry: { attempts: 3, delay: 1s } }\n', inTurn(exit(1), oom, ok));
    expect(sim.state.status).toBe('succeeded');
    expect(sim.dispatches).toHaveLength(3);
  });

  it('exit retries a non-zero exit and fails at once on an infrastructure failure, saying why', () => {
    const retried = simulate(spec('exit'), inTurn(exit(1), ok));
    expect(retried.state.status).toBe('succeeded');
    expect(retried.dispatches).toHaveLength(2);
    const notRetried = simulate(spec('exit'), inTurn(oom));
    expect(notRetried.dispatches).toHaveLength(1);
    expect(notRetried.state.status).toBe('failed');
    expect(notRetried.state.instances.get('a')!.error).toBe('Nomad allocation 1a2b3c4d OOM killed (not retried: retry.on is exit and this was an infrastructure failure)');
    // The attempt's own record keeps the agent's words.
    expect(notRetried.state.instances.get('a')!.attempts[0]!.error).toBe('Nomad allocation 1a2b3c4d OOM killed');
  });

  it('infrastructure retries a lost allocation or OOM kill, not a non-zero exit', () => {
    expect(simulate(spec('infrastructure'), inTurn(oom, oom, ok)).state.status).toBe('succeeded');
    const sim = simulate(spec('infrastructure'), inTurn(exit(2)));
    expect(sim.dispatches).toHaveLength(1);
    expect(sim.state.failureReason).toBe("task 'a' failed: exited with code 2 (not retried: retry.on is infrastructure and this was an exit failure)");
  });

  it('a list picks several kinds; an attempt silent past its timeout is a timeout failure', () => {
    let n = 0;
    const sim = simulate('  tasks:\n    - { name: a, run: x, timeout: 1m, retry: { attempts: 3, delay: 1s, on: [exit, timeout] } }\n', () => (++n === 1 ? { ok: true, hang: true } : n === 2 ? exit(1) : ok));
    expect(sim.state.status).toBe('succeeded');
    expect(sim.dispatches).toHaveLength(3);
    const infra = simulate('  tasks:\n    - { name: a, run: x, retry: { attempts: 3, delay: 1s, on: [exit, timeout] } }\n', inTurn(oom));
    expect(infra.dispatches).toHaveLength(1);
  });

  it('a report without a failure kind (an older journal, a plugin) counts as an exit failure', () => {
    const sim = simulate(spec('infrastructure'), inTurn({ ok: false, error: 'plugin says no' }));
    expect(sim.dispatches).toHaveLength(1);
    expect(simulate(spec('exit'), inTurn({ ok: false, error: 'plugin says no' }, ok)).dispatches).toHaveLength(2);
  });

  it('never makes a failure marked not retryable retried', () => {
    const sim = simulate(spec('any'), inTurn({ ok: false, error: 'command not found (exit 127)', exitCode: 127, failure: 'exit', retryable: false }));
    expect(sim.dispatches).toHaveLength(1);
    expect(sim.state.instances.get('a')!.error).toBe('command not found (exit 127)');
  });
});

describe('retry.when: an expression over the failed attempt', () => {
  it('retries only while it holds, reading attempt.exitCode', () => {
    const spec = '  tasks:\n    - { name: a, run: x, retry: { attempts: 5, delay: 1s, when: "${{ attempt.exitCode == 75 }}" } }\n';
    const sim = simulate(spec, inTurn(exit(75), exit(75), exit(1)));
    expect(sim.dispatches).toHaveLength(3);
    expect(sim.state.failureReason).toBe("task 'a' failed: exited with code 1 (not retried: retry.when 'attempt.exitCode == 75' is false)");
  });

  it('reads attempt.number, attempt.failure, attempt.error, params and run, with or without ${{ }}', () => {
    const spec = "  params:\n    limit: { type: integer, default: 3 }\n  tasks:\n    - { name: a, run: x, retry: { attempts: 10, delay: 1s, when: \"attempt.number < params.limit && attempt.failure == 'exit' && !contains(attempt.error, 'fatal') && run.workflow == 'sim'\" } }\n";
    expect(simulate(spec, inTurn(exit(1))).dispatches).toHaveLength(3);
    expect(simulate(spec, inTurn(exit(1)), { params: { limit: 5 } }).dispatches).toHaveLength(5);
    expect(simulate(spec, inTurn(oom)).dispatches).toHaveLength(1);
    expect(simulate(spec, inTurn({ ...exit(1), error: 'fatal: disk' })).dispatches).toHaveLength(1);
  });

  it('a lost attempt starts again whatever retry.on and retry.when say: the loss was not the task\'s', () => {
    const plan = buildRunPlan(workflowOf('  tasks:\n    - { name: a, run: x, retry: { attempts: 2, on: exit, when: "false" } }\n'), { maxParallel: 4 });
    const state = initialRunState(plan, 'run-2');
    applyRunEvent(state, plan, { runId: 'run-2', at: T0, type: 'run.started', workflow: 'sim', params: {}, trigger: 'test' });
    applyRunEvent(state, plan, { runId: 'run-2', at: T0, type: 'task.queued', task: 'a', attempt: 1 });
    applyRunEvent(state, plan, { runId: 'run-2', at: T0 + 5, type: 'task.failed', task: 'a', attempt: 1, error: 'lost: engine stopped', retryable: true, lost: true, failure: 'infrastructure' });
    expect(state.instances.get('a')!.status).toBe('retrying');
    // The same failure not lost is the task's: retry.on exit declines it.
    const other = initialRunState(plan, 'run-3');
    applyRunEvent(other, plan, { runId: 'run-3', at: T0, type: 'run.started', workflow: 'sim', params: {}, trigger: 'test' });
    applyRunEvent(other, plan, { runId: 'run-3', at: T0, type: 'task.queued', task: 'a', attempt: 1 });
    applyRunEvent(other, plan, { runId: 'run-3', at: T0 + 5, type: 'task.failed', task: 'a', attempt: 1, error: 'killed by SIGKILL', retryable: true, failure: 'infrastructure' });
    expect(other.instances.get('a')!.status).toBe('failed');
  });
});

describe('retry.maxDuration', () => {
  it('starts no retry once it has passed since the first attempt', () => {
    const sim = simulate('  tasks:\n    - { name: a, run: x, retry: { attempts: 10, backoff: fixed, delay: 10s, jitter: false, maxDuration: 25s } }\n', inTurn(exit(1)));
    // Failures at 10ms, 10.02s and 20.03s are retried; the one at 30.04s is past 25s.
    expect(sim.dispatches.map((d) => d.at - T0)).toEqual([0, 10_010, 20_020, 30_030]);
    expect(sim.state.failureReason).toBe("task 'a' failed: exited with code 1 (not retried: retry.maxDuration 25s has passed since the first attempt)");
  });
});

describe('circuit breakers', () => {
  const flaky = (breaker: string): string => `  ${breaker}tasks:\n    - { name: flaky, run: "exit 1", retry: { attempts: 7, delay: 100ms, factor: 1, jitter: false } }\n`;

  it('are off for shell tasks unless configured: seven attempts of a flaky task wait only for their backoff', () => {
    const sim = simulate(flaky(''), inTurn(exit(1), exit(1), exit(1), exit(1), exit(1), exit(1), ok));
    expect(sim.state.status).toBe('succeeded');
    expect(sim.events.filter((e) => e.type.startsWith('breaker.'))).toEqual([]);
    expect(sim.plan.tasks.get('flaky')!.breaker).toBeUndefined();
    expect(sim.dispatches.map((d) => d.at - T0)).toEqual([0, 110, 220, 330, 440, 550, 660]);
  });

  it('when configured, open after `failures` failures, hold the task for `cooldown`, and say so in the snapshot', () => {
    let during: RunSnapshot | undefined;
    const sim = simulate(flaky('defaults:\n    circuitBreaker: { failures: 3, cooldown: 10s }\n  '), inTurn(exit(1), exit(1), exit(1), exit(1), ok), {
      controls: [{ at: T0 + 5_000, event: (s) => { during = snapshotRun(s); return undefined; } }],
    });
    expect(sim.state.status).toBe('succeeded');
    const opened = sim.events.filter((e) => e.type === 'breaker.opened');
    expect(opened.map((e) => (e.type === 'breaker.opened' ? [e.key, e.failures, e.until - e.at] : []))).toEqual([['agent:shell', 3, 10_000], ['agent:shell', 4, 10_000]]);
    // Three attempts, then a probe at the end of each cool-down; the second probe succeeds.
    expect(sim.dispatches.map((d) => d.at - T0)).toEqual([0, 110, 220, opened[0]!.at - T0 + 10_000, opened[1]!.at - T0 + 10_000]);
    expect(sim.events.at(-2)).toMatchObject({ type: 'breaker.closed', key: 'agent:shell' });
    const until = new Date(opened[0]!.type === 'breaker.opened' ? opened[0]!.until : 0).toISOString();
    expect(during!.tasks['flaky']).toMatchObject({ status: 'retrying', attempts: 3, heldBy: { breaker: 'agent:shell', until } });
    expect(during!.breakers).toEqual([{ key: 'agent:shell', failures: 3, openUntil: until }]);
    expect(snapshotRun(sim.state).breakers).toBeUndefined();
  });

  it('a task can turn off the workflow\'s breaker, and the http default', () => {
    const sim = simulate(flaky('defaults:\n    circuitBreaker: true\n  ').replace('factor: 1, jitter: false }', 'factor: 1, jitter: false }, circuitBreaker: false'), inTurn(exit(1)));
    expect(sim.events.filter((e) => e.type.startsWith('breaker.'))).toEqual([]);
    const http = simulate('  failFast: false\n  tasks:\n' + Array.from({ length: 6 }, (_, i) => `    - { name: t${i}, http: { url: "http://x" }, circuitBreaker: false }\n`).join(''), () => ({ ok: false, error: 'down', retryable: false }), { maxParallel: 1 });
    expect(http.events.filter((e) => e.type.startsWith('breaker.'))).toEqual([]);
  });

  it('protect one host for http tasks, a pool for pool tasks, an agent type otherwise', () => {
    const spec = `  failFast: false
  defaults:
    circuitBreaker: { failures: 2, cooldown: 1m }
  pools:
    p: { count: 1 }
  tasks:
    - { name: a1, http: { url: "https://user:pw@A.example:8443/x" } }
    - { name: a2, http: { url: "https://a.example:8443/\${{ params.path }}" } }
    - { name: b, http: { url: "https://b.example/y" } }
    - { name: q, run: x, pool: p }
    - { name: s, run: x }
  params:
    path: { type: string, default: z }
`;
    const sim = simulate(spec, () => ({ ok: false, error: 'down', retryable: false }), { maxParallel: 1 });
    const keys = Object.fromEntries([...sim.plan.tasks.values()].map((t) => [t.name, t.breaker?.key]));
    // Credentials never make it into a key: it shows in progress lines and run.json.
    expect(keys).toEqual({ a1: 'host:a.example:8443', a2: 'host:a.example:8443', b: 'host:b.example', q: 'pool:p', s: 'agent:shell' });
    const opened = sim.events.flatMap((e) => (e.type === 'breaker.opened' ? [e.key] : []));
    expect(opened).toEqual(['host:a.example:8443']);
  });

  it('replaying the journal of a run with retries, retry.when and a breaker rebuilds the same state', () => {
    fc.assert(fc.property(fc.array(fc.constantFrom<Outcome>(ok, exit(1), exit(75), oom), { minLength: 1, maxLength: 12 }), (outcomes) => {
      const spec = "  failFast: false\n  defaults:\n    circuitBreaker: { failures: 2, cooldown: 5s }\n    retry: { attempts: 4, delay: 1s, on: [exit, infrastructure], when: \"attempt.exitCode != 1 || attempt.number < 2\" }\n  tasks:\n    - { name: f, run: x, forEach: [1, 2, 3] }\n";
      let n = 0;
      const sim = simulate(spec, () => outcomes[n++ % outcomes.length]!);
      const replay = initialRunState(sim.plan, 'run-1');
      for (const e of sim.events) applyRunEvent(replay, sim.plan, e);
      expect(snapshotRun(replay)).toEqual(snapshotRun(sim.state));
      expect(replay.breakers).toEqual(sim.state.breakers);
    }), { numRuns: 40 });
  });
});

describe('validation', () => {
  it('a retry.when reads attempt, params and run only, and is one expression', () => {
    expect(check('  tasks:\n    - name: a\n      run: x\n      retry: { attempts: 2, when: "${{ attempt.exitcod == 1 }}" }\n')).toEqual([
      "9:35 EXPR_UNKNOWN_PROPERTY in 'attempt.exitcod == 1': attempt has no property 'exitcod'; did you mean 'exitCode'?",
    ]);
    expect(check('  tasks:\n    - name: a\n      run: x\n      retry: { when: "tasks.a.status == \'failed\'" }\n')[0]).toMatch(/^9:\d+ EXPR_UNKNOWN_NAME in 'tasks\.a\.status == 'failed'': unrecognized named-value: 'tasks'.*; a retry\.when can read attempt, params and run$/);
    expect(check('  defaults:\n    retry: { when: "attempt.number < params.max" }\n  tasks:\n    - name: a\n      run: x\n')).toEqual([
      "7:20 EXPR_UNKNOWN_PARAM in 'attempt.number < params.max': unknown param 'max'",
    ]);
    expect(check('  tasks:\n    - name: a\n      run: x\n      retry: { when: "n=${{ attempt.number }}" }\n')).toEqual([
      '9:22 WHEN_NOT_SINGLE_EXPRESSION retry.when must be one expression, such as "${{ attempt.exitCode == 75 }}"; text around ${{ }} would make it always true',
    ]);
    expect(check('  tasks:\n    - name: a\n      run: x\n      retry: { when: "attempt.number < 3 && run.status == \'x\'" }\n')).toEqual([
      "9:22 EXPR_UNKNOWN_PROPERTY in 'attempt.number < 3 && run.status == 'x'': a retry.when cannot read run.status; use id, workflow, commit, trigger, startedAt, attempt",
    ]);
    expect(check('  tasks:\n    - name: a\n      run: x\n      retry: { attempts: 3, on: [exit, timeout], factor: 1.5, maxDuration: 1m, when: "${{ attempt.failure == \'exit\' }}" }\n')).toEqual([]);
  });

  it('factor only with exponential backoff; on takes the known kinds', () => {
    expect(check('  tasks:\n    - name: a\n      run: x\n      retry: { backoff: linear, factor: 3 }\n')).toEqual([
      '9:33 RETRY_FACTOR_UNUSED factor only shapes an exponential backoff, and this one is linear; remove factor or use backoff: exponential',
    ]);
    expect(check('  tasks:\n    - name: a\n      run: x\n      retry: { on: oom }\n')).toEqual([
      "9:20 SCHEMA_FORMAT retry.on of task 'a' ('oom') must match ^(any|exit|timeout|infrastructure)$",
    ]);
  });

  it('a breaker scope must fit its task, and tasks sharing a breaker agree on it', () => {
    expect(check('  tasks:\n    - name: a\n      run: x\n      circuitBreaker: { scope: pool }\n')).toEqual([
      "9:32 BREAKER_SCOPE_INVALID circuit breaker scope pool does not fit task 'a': the task runs in no pool; use agent",
    ]);
    expect(check('  tasks:\n    - name: a\n      http: { url: "${{ params.u }}" }\n      circuitBreaker: { scope: host }\n  params:\n    u: { type: string, default: "http://x" }\n')).toEqual([
      "9:32 BREAKER_SCOPE_INVALID circuit breaker scope host does not fit task 'a': the host of '${{ params.u }}' is only known at run time; use agent",
    ]);
    expect(check('  defaults:\n    circuitBreaker: { failures: 3 }\n  tasks:\n    - { name: a, run: x }\n    - { name: b, run: x, circuitBreaker: { failures: 9 } }\n')).toEqual([
      "10:42 BREAKER_SETTINGS_CONFLICT task 'b' shares circuit breaker agent:shell with task 'a' but sets other failures or cooldown; tasks sharing a breaker must agree (or give one another scope)",
    ]);
  });
});
