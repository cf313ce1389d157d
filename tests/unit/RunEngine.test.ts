import { describe, expect, it } from 'vitest';
import { InMemoryBus } from '../../engine/local/InMemoryBus.js';
import { eventSubject, type Bus } from '../../engine/run/Bus.js';
import { FakeClock } from '../../engine/run/Clock.js';
import type { Executor, StartRequest } from '../../engine/run/Executor.js';
import { MemoryLogger } from '../../engine/run/Logger.js';
import type { Metrics } from '../../engine/run/Metrics.js';
import { RunEngine } from '../../engine/run/RunEngine.js';
import { eventId, type RunEvent } from '../../engine/run/RunEvent.js';
import { buildRunPlan } from '../../engine/run/RunPlan.js';
import { TIMEOUT_GRACE_MS, type Dispatch } from '../../engine/run/scheduleRun.js';
import { T0, workflowOf } from './simulateRun.js';

/**
 * The engine itself on a fake clock: its tick and wake timers, its batching of reports from
 * the bus, its calls to the executor and its control methods. The scheduler's decisions
 * alone are covered by runScheduler.test.ts through the discrete-event simulation.
 */

type Behaviour = { ok: true; afterMs: number; outputs?: Record<string, string> } | { ok: false; afterMs: number; error: string; retryable?: boolean } | { hang: true; beatEveryMs?: number };
type AgentReport = { type: 'task.started' } | { type: 'task.heartbeat' } | { type: 'task.succeeded'; outputs: Record<string, string> } | { type: 'task.failed'; error: string; retryable: boolean };

/**
 * An executor that acts like an agent on the fake clock: it reports task.started at once,
 * then heartbeats or a result after the time its behaviour says, on the bus.
 */
class FakeExecutor implements Executor {
  readonly starts: Array<{ instance: string; attempt: number; kind: Dispatch['kind']; at: number }> = [];
  readonly cancels: Array<{ instance: string; attempt: number; at: number }> = [];
  private readonly timers = new Map<string, Array<{ id: number }>>();

  constructor(
    private readonly bus: Bus,
    private readonly clock: FakeClock,
    private readonly behave: (d: Dispatch) => Behaviour,
  ) {}

  start(req: StartRequest): void {
    const d = req.dispatch;
    this.starts.push({ instance: d.instance, attempt: d.attempt, kind: d.kind, at: this.clock.now() });
    const key = `${d.instance}#${d.attempt}`;
    const report = (r: AgentReport): void => this.report(req, r);
    report({ type: 'task.started' });
    const b = this.behave(d);
    const timers: Array<{ id: number }> = [];
    if ('hang' in b) {
      const beat = (): void => {
        report({ type: 'task.heartbeat' });
        timers.push(this.clock.setTimer(beat, b.beatEveryMs!));
      };
      if (b.beatEveryMs !== undefined) timers.push(this.clock.setTimer(beat, b.beatEveryMs));
    } else {
      timers.push(this.clock.setTimer(() => report(b.ok ? { type: 'task.succeeded', outputs: b.outputs ?? {} } : { type: 'task.failed', error: b.error, retryable: b.retryable ?? true }), b.afterMs));
    }
    this.timers.set(key, timers);
  }

  cancel(_runId: string, instance: string, attempt: number): void {
    this.cancels.push({ instance, attempt, at: this.clock.now() });
    for (const t of this.timers.get(`${instance}#${attempt}`) ?? []) this.clock.clearTimer(t);
  }

  async close(): Promise<void> {}

  /** Publishes a report for an attempt as its agent would: origin agent, de-duplicated by event id. */
  report(req: StartRequest, r: AgentReport, at = this.clock.now()): void {
    const e = { ...r, runId: req.runId, at, task: req.dispatch.instance, attempt: req.dispatch.attempt } as RunEvent;
    this.bus.publish(eventSubject(req.plan.workflow.metadata.name, req.runId, req.dispatch.instance), e, { msgId: eventId(e), origin: 'agent' });
  }
}

/** Every hook call, in order, for assertions. */
class RecordingMetrics implements Metrics {
  readonly calls: Array<[string, ...unknown[]]> = [];
  runStarted(...a: Parameters<Metrics['runStarted']>): void { this.calls.push(['runStarted', ...a]); }
  runFinished(...a: Parameters<Metrics['runFinished']>): void { this.calls.push(['runFinished', ...a]); }
  attemptFinished(...a: Parameters<Metrics['attemptFinished']>): void { this.calls.push(['attemptFinished', ...a]); }
  coordinationLatency(...a: Parameters<Metrics['coordinationLatency']>): void { this.calls.push(['coordinationLatency', ...a]); }
  breakersOpenChanged(...a: Parameters<Metrics['breakersOpenChanged']>): void { this.calls.push(['breakersOpenChanged', ...a]); }
  busPublishRetried(...a: Parameters<Metrics['busPublishRetried']>): void { this.calls.push(['busPublishRetried', ...a]); }
  checkpointWritten(...a: Parameters<Metrics['checkpointWritten']>): void { this.calls.push(['checkpointWritten', ...a]); }
  // The controller's and the adapters' hooks: a run engine never calls them.
  backendRequest(...a: Parameters<Metrics['backendRequest']>): void { this.calls.push(['backendRequest', ...a]); }
  knownWorkflows(...a: Parameters<Metrics['knownWorkflows']>): void { this.calls.push(['knownWorkflows', ...a]); }
  syncFinished(...a: Parameters<Metrics['syncFinished']>): void { this.calls.push(['syncFinished', ...a]); }
  leader(...a: Parameters<Metrics['leader']>): void { this.calls.push(['leader', ...a]); }
  webhookReceived(...a: Parameters<Metrics['webhookReceived']>): void { this.calls.push(['webhookReceived', ...a]); }
  scheduleFired(...a: Parameters<Metrics['scheduleFired']>): void { this.calls.push(['scheduleFired', ...a]); }
  poolsObserved(...a: Parameters<Metrics['poolsObserved']>): void { this.calls.push(['poolsObserved', ...a]); }
  of(hook: keyof Metrics): unknown[][] {
    return this.calls.filter((c) => c[0] === hook).map((c) => c.slice(1));
  }
}

/** Lets the in-memory bus deliver and the engine apply what it delivered. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function setup(spec: string, behave: (d: Dispatch) => Behaviour, runId = 'run-1') {
  const clock = new FakeClock(T0);
  const bus = new InMemoryBus();
  const executor = new FakeExecutor(bus, clock, behave);
  const metrics = new RecordingMetrics();
  const logger = new MemoryLogger();
  const plan = buildRunPlan(workflowOf(spec), { maxParallel: 10 });
  const engine = new RunEngine({ plan, runId, executor, bus, clock, metrics, logger });
  const events: RunEvent[] = [];
  engine.onEvent((e) => events.push(e));
  /** Moves the clock a second at a time, letting reports through after each second. */
  const advance = async (ms: number): Promise<void> => {
    for (let done = 0; done < ms; done += 1000) {
      clock.advance(Math.min(1000, ms - done));
      await settle();
    }
  };
  const started = async (): Promise<void> => {
    engine.start({}, 'test');
    await settle();
  };
  return { clock, bus, executor, metrics, logger, plan, engine, events, advance, started };
}

const starts = (x: FakeExecutor): Array<[string, number, number]> => x.starts.map((s) => [s.instance, s.attempt, s.at - T0]);
const cancels = (x: FakeExecutor): Array<[string, number, number]> => x.cancels.map((c) => [c.instance, c.attempt, c.at - T0]);

describe('timeouts and retries on the clock', () => {
  it('fails a silent attempt at its timeout plus grace on a tick, cancels it, and retries after the exponential backoff', async () => {
    const t = setup('  tasks:\n    - { name: a, run: x, timeout: 1m, retry: { attempts: 3, backoff: exponential, delay: 10s, jitter: false } }\n', (d) => (d.attempt < 3 ? { hang: true } : { ok: true, afterMs: 5000 }));
    await t.started();
    await t.advance(300_000);
    const silent = 60_000 + TIMEOUT_GRACE_MS;
    // Attempt 1 times out at 90 s, waits 10 s; attempt 2 times out 90 s after its start, waits 20 s.
    expect(starts(t.executor)).toEqual([['a', 1, 0], ['a', 2, silent + 10_000], ['a', 3, 2 * silent + 30_000]]);
    expect(cancels(t.executor)).toEqual([['a', 1, silent], ['a', 2, 2 * silent + 10_000]]);
    expect(t.events.filter((e) => e.type === 'task.retry-scheduled').map((e) => (e.type === 'task.retry-scheduled' ? [e.attempt, e.at - T0, e.retryAt - T0] : []))).toEqual([[2, silent, silent + 10_000], [3, 2 * silent + 10_000, 2 * silent + 30_000]]);
    const state = await t.engine.done();
    expect(state.status).toBe('succeeded');
    expect(state.finishedAt! - T0).toBe(2 * silent + 35_000);
    expect(state.instances.get('a')!.attempts.map((a) => [a.status, a.error ?? null])).toEqual([
      ['failed', 'timed out after 60000 ms with no report from the agent'],
      ['failed', 'timed out after 60000 ms with no report from the agent'],
      ['succeeded', null],
    ]);
    // The run stopped ticking and waking: nothing is left on the clock.
    expect(t.clock.pending).toBe(0);

    // The trigger `test` is none of the known kinds: one bounded value, not the raw string.
    expect(t.metrics.of('runStarted')).toEqual([['sim', 'other']]);
    expect(t.metrics.of('attemptFinished')).toEqual([['sim', 'failed', 90], ['sim', 'failed', 90], ['sim', 'succeeded', 5]]);
    expect(t.metrics.of('runFinished')).toEqual([['sim', 'succeeded', 215]]);
    expect(t.logger.lines('info').map((l) => [l.msg, l.fields.task ?? null, l.fields.attempt ?? null, l.fields.willRetry ?? null])).toEqual([
      ['run started', null, null, null],
      ['attempt failed', 'a', 1, true],
      ['attempt failed', 'a', 2, true],
      ['run finished', null, null, null],
    ]);
    expect(t.logger.lines('warn')).toEqual([]);
    expect(t.logger.entries.every((l) => l.fields.workflow === 'sim' && l.fields.run === 'run-1')).toBe(true);
  });

  it('records heartbeats but does not let them extend the timeout (there is no heartbeat-absence rule)', async () => {
    const t = setup('  tasks:\n    - { name: a, run: x, timeout: 1m }\n', () => ({ hang: true, beatEveryMs: 7000 }));
    await t.started();
    await t.advance(120_000);
    const state = await t.engine.done();
    expect(state.status).toBe('failed');
    expect(cancels(t.executor)).toEqual([['a', 1, 60_000 + TIMEOUT_GRACE_MS]]);
    // Beats at 7, 14 ... 84 s were applied; the cancel stopped the agent before the next one.
    expect(state.instances.get('a')!.lastHeartbeat! - T0).toBe(84_000);
    expect(t.events.filter((e) => e.type === 'task.heartbeat').map((e) => e.at - T0)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((n) => n * 7000));
    expect(t.metrics.of('runFinished')).toEqual([['sim', 'failed', 90]]);
  });
});

describe('control: cancel, pause and unpause', () => {
  it('cancel stops every running attempt on the executor, ends the run and starts nothing more', async () => {
    const t = setup('  tasks:\n    - { name: a, run: x }\n    - { name: b, run: x }\n    - { name: c, run: x, needs: [a] }\n', () => ({ hang: true }));
    await t.started();
    await t.advance(5000);
    expect(t.engine.cancel('alice', 'wrong data')).toBe(true);
    expect(cancels(t.executor)).toEqual([['a', 1, 5000], ['b', 1, 5000]]);
    const state = await t.engine.done();
    expect([state.status, state.cancelReason, state.finishedAt! - T0]).toEqual(['cancelled', 'wrong data', 5000]);
    expect(t.engine.cancel('alice')).toBe(false);
    // A late success from an agent that did not stop in time changes nothing.
    t.executor.report({ runId: 'run-1', plan: t.plan, dispatch: { instance: 'a', task: 'a', attempt: 1, kind: 'task', context: { params: {}, tasks: {}, run: { id: 'run-1', workflow: 'sim', commit: '', trigger: 'test', startedAt: '', attempt: 1 } } } }, { type: 'task.succeeded', outputs: {} });
    await t.advance(60_000);
    expect(starts(t.executor)).toEqual([['a', 1, 0], ['b', 1, 0]]);
    expect(state.instances.get('a')!.status).toBe('cancelled');
    expect(t.events.at(-1)!.type).toBe('run.cancelled');
    expect(t.clock.pending).toBe(0);
    expect(t.metrics.of('attemptFinished')).toEqual([['sim', 'cancelled', 5], ['sim', 'cancelled', 5]]);
    expect(t.metrics.of('runFinished')).toEqual([['sim', 'cancelled', 5]]);
    expect(t.logger.lines('info').find((l) => l.msg === 'run cancelled')?.fields).toMatchObject({ by: 'alice', reason: 'wrong data' });
  });

  it('with finally tasks, cancel stops the main attempts, starts the finally tasks, and a second cancel stops them', async () => {
    const t = setup('  tasks:\n    - { name: a, run: x }\n    - { name: b, run: x, needs: [a] }\n  finally:\n    - { name: f, run: x }\n    - { name: g, run: x, needs: [f] }\n', (d) => (d.task === 'f' ? { hang: true } : d.task === 'g' ? { ok: true, afterMs: 1000 } : { hang: true }));
    await t.started();
    await t.advance(5000);
    expect(t.engine.cancel('alice', 'wrong data')).toBe(true);
    expect(cancels(t.executor)).toEqual([['a', 1, 5000]]);
    expect(starts(t.executor)).toEqual([['a', 1, 0], ['f', 1, 5000]]);
    expect(t.engine.state.status).toBe('running');
    expect(t.logger.lines('info').find((l) => l.msg === 'run cancelling: its finally tasks run first')?.fields).toMatchObject({ by: 'alice', reason: 'wrong data' });
    await t.advance(10_000);
    expect(t.engine.cancel('bob')).toBe(true);
    expect(cancels(t.executor)).toEqual([['a', 1, 5000], ['f', 1, 15_000]]);
    const state = await t.engine.done();
    expect([state.status, state.cancelReason, state.finishedAt! - T0]).toEqual(['cancelled', 'wrong data', 15_000]);
    expect(t.events.map((e) => e.type).filter((x) => x.startsWith('run.'))).toEqual(['run.started', 'run.cancelling', 'run.cancelled']);
    expect(t.metrics.of('runFinished')).toEqual([['sim', 'cancelled', 15]]);
    expect(t.clock.pending).toBe(0);
  });

  it('with finally tasks, one cancel ends the run once they are done', async () => {
    const t = setup('  tasks:\n    - { name: a, run: x }\n  finally:\n    - { name: f, run: "echo ${{ run.status }}" }\n', (d) => (d.task === 'f' ? { ok: true, afterMs: 2000 } : { hang: true }));
    await t.started();
    await t.advance(1000);
    expect(t.engine.cancel('alice')).toBe(true);
    await t.advance(3000);
    const state = await t.engine.done();
    expect([state.status, state.cancelReason, state.finishedAt! - T0, state.instances.get('f')!.status]).toEqual(['cancelled', 'cancelled by alice', 3000, 'succeeded']);
    expect(t.events.at(-1)).toMatchObject({ type: 'run.cancelled', by: 'alice' });
    expect(t.metrics.of('runFinished')).toEqual([['sim', 'cancelled', 3]]);
  });

  it('pause lets running attempts finish but starts nothing new; unpause dispatches at once', async () => {
    const t = setup('  tasks:\n    - { name: a, run: x }\n    - { name: b, run: x, needs: [a] }\n', () => ({ ok: true, afterMs: 10_000 }));
    await t.started();
    await t.advance(5000);
    expect(t.engine.pause('ops')).toBe(true);
    await t.advance(55_000);
    expect(t.engine.state.status).toBe('paused');
    expect(t.engine.state.instances.get('a')!.status).toBe('succeeded');
    expect(starts(t.executor)).toEqual([['a', 1, 0]]);
    expect(t.executor.cancels).toEqual([]);
    expect(t.engine.unpause('ops')).toBe(true);
    expect(starts(t.executor)).toEqual([['a', 1, 0], ['b', 1, 60_000]]);
    await t.advance(10_000);
    const state = await t.engine.done();
    expect([state.status, state.finishedAt! - T0]).toEqual(['succeeded', 70_000]);
    expect(t.logger.lines('info').map((l) => [l.msg, l.fields.by ?? null])).toEqual([['run started', null], ['run paused', 'ops'], ['run unpaused', 'ops'], ['run finished', null]]);
  });
});

describe('approvals', () => {
  const gate = '  tasks:\n    - { name: build, run: x }\n    - { name: review, needs: [build], approval: { timeout: 1h, onTimeout: reject } }\n    - { name: deploy, run: x, needs: [review] }\n';
  const quick = (): Behaviour => ({ ok: true, afterMs: 1000 });

  it('waits for a grant, then dispatches what it gates at the time of the grant', async () => {
    const t = setup(gate, quick);
    await t.started();
    await t.advance(600_000);
    expect(t.events.find((e) => e.type === 'approval.requested')).toMatchObject({ task: 'review', at: T0 + 1000, timeoutAt: T0 + 1000 + 3_600_000 });
    expect(starts(t.executor)).toEqual([['build', 1, 0]]);
    expect(t.engine.approve('nope', 'carol')).toBe(false);
    expect(t.engine.approve('review', 'carol')).toBe(true);
    expect(t.engine.approve('review', 'carol')).toBe(false);
    expect(starts(t.executor)).toEqual([['build', 1, 0], ['deploy', 1, 600_000]]);
    await t.advance(1000);
    const state = await t.engine.done();
    expect(state.status).toBe('succeeded');
    expect(state.instances.get('review')!.outputs).toEqual({ approvedBy: 'carol' });
    // The gate is not an attempt: only build and deploy count.
    expect(t.metrics.of('attemptFinished')).toEqual([['sim', 'succeeded', 1], ['sim', 'succeeded', 1]]);
  });

  it('a rejection fails the run and skips what the gate guards', async () => {
    const t = setup(gate, quick);
    await t.started();
    await t.advance(2000);
    expect(t.engine.reject('review', 'dave', 'not today')).toBe(true);
    const state = await t.engine.done();
    expect(state.status).toBe('failed');
    expect(state.failureReason).toBe("task 'review' failed: rejected by dave: not today");
    expect(state.groups.get('deploy')!.status).toBe('skipped');
    expect(starts(t.executor)).toEqual([['build', 1, 0]]);
    expect(t.metrics.of('runFinished')).toEqual([['sim', 'failed', 2]]);
  });

  it('with no decision, the engine wakes at the approval timeout and applies onTimeout', async () => {
    const t = setup(gate, quick);
    await t.started();
    await t.advance(3_600_000 + 1000);
    const state = await t.engine.done();
    expect(state.status).toBe('failed');
    expect(t.events.find((e) => e.type === 'approval.rejected')).toMatchObject({ by: 'timeout', at: T0 + 1000 + 3_600_000 });
  });
});

describe('picking up a run and measuring coordination', () => {
  it('an attempt in flight when the last engine stopped is lost and started again at once, outside the retry budget', async () => {
    const t = setup('  tasks:\n    - { name: a, run: x }\n', () => ({ ok: true, afterMs: 3000 }));
    t.clock.advance(20_000);
    const before: RunEvent[] = [
      { runId: 'run-1', at: T0, type: 'run.started', workflow: 'sim', params: {}, trigger: 'test' },
      { runId: 'run-1', at: T0, type: 'task.queued', task: 'a', attempt: 1 },
      { runId: 'run-1', at: T0 + 2000, type: 'task.started', task: 'a', attempt: 1 },
    ];
    t.engine.recover(before);
    expect(t.events[0]).toMatchObject({ type: 'task.failed', task: 'a', attempt: 1, lost: true, retryable: true });
    expect(starts(t.executor)).toEqual([['a', 2, 20_000]]);
    await settle();
    await t.advance(3000);
    expect((await t.engine.done()).status).toBe('succeeded');
    // A run picked up is not started again; the lost attempt ran 18 s before the engine died.
    expect(t.metrics.of('runStarted')).toEqual([]);
    expect(t.metrics.of('attemptFinished')).toEqual([['sim', 'lost', 18], ['sim', 'succeeded', 3]]);
    expect(t.metrics.of('runFinished')).toEqual([['sim', 'succeeded', 23]]);
  });

  it('observes the time from a task\'s success to the engine dispatching what it unblocked, once per batch holding a success', async () => {
    const t = setup('  tasks:\n    - { name: a, run: x }\n    - { name: b, run: x, needs: [a] }\n', (d) => (d.task === 'a' ? { hang: true } : { ok: true, afterMs: 1000 }));
    await t.started();
    const latencies = t.metrics.of('coordinationLatency').length;
    const a = { runId: 'run-1', plan: t.plan, dispatch: { instance: 'a', task: 'a', attempt: 1, kind: 'task' as const, context: { params: {}, tasks: {}, run: { id: 'run-1', workflow: 'sim', commit: '', trigger: 'test', startedAt: '', attempt: 1 } } } };
    t.executor.report(a, { type: 'task.succeeded', outputs: {} });
    // The report takes 250 ms to reach the engine.
    t.clock.advance(250);
    await settle();
    expect(starts(t.executor)).toEqual([['a', 1, 0], ['b', 1, 250]]);
    // b's own task.started was applied too, but a start unblocks nothing: not observed.
    expect(t.metrics.of('coordinationLatency').slice(latencies)).toEqual([[0.25]]);
    t.clock.advance(100);
    const b = { ...a, dispatch: { ...a.dispatch, instance: 'b', task: 'b' } };
    t.executor.report(b, { type: 'task.heartbeat' }, t.clock.now() + 5000);
    await settle();
    expect(t.metrics.of('coordinationLatency').slice(latencies)).toEqual([[0.25]]);
    expect(t.engine.state.instances.get('b')!.lastHeartbeat! - T0).toBe(5350);
    // A success from an agent whose clock runs ahead counts as zero, not as a negative time.
    t.executor.report(b, { type: 'task.succeeded', outputs: {} }, t.clock.now() + 5000);
    await settle();
    expect(t.metrics.of('coordinationLatency').slice(latencies)).toEqual([[0.25], [0]]);
    // The same success again (a redelivery) is ignored by the reducer and not observed again.
    t.executor.report(b, { type: 'task.succeeded', outputs: {} }, t.clock.now() + 5000);
    await settle();
    expect(t.metrics.of('coordinationLatency').slice(latencies)).toEqual([[0.25], [0]]);
  });
});
