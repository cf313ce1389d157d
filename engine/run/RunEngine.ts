import { eventSubject, runSubjects, type Bus } from './Bus.js';
import type { Clock, TimerHandle } from './Clock.js';
import type { Executor } from './Executor.js';
import { noopLogger, type Logger } from './Logger.js';
import { noopMetrics, triggerKind, type AttemptOutcome, type Metrics, type RunOutcome } from './Metrics.js';
import { eventId, isFinal, type RetryOrigin, type RunEvent } from './RunEvent.js';
import type { RunPlan } from './RunPlan.js';
import type { RunState } from './RunState.js';
import { applyRunEvent, initialRunState } from './reduceRun.js';
import { contextFor, scheduleRun, type Dispatch } from './scheduleRun.js';

/** What a secret param's value is recorded as. */
export const SECRET_PARAM_MASK = '***';

/** Receives every event the engine applied, in order (progress display, journal, audit). */
export type RunListener = (event: RunEvent, state: RunState) => void;

/** How many waiting reports make the engine apply them without waiting for the microtask. */
const DRAIN_EVERY = 32;

/** Event types an executor or agent reports; everything else is decided by the engine. */
const AGENT_EVENTS = new Set<RunEvent['type']>(['task.pending', 'task.started', 'task.heartbeat', 'task.log', 'task.succeeded', 'task.failed']);

export interface RunEngineDeps {
  plan: RunPlan;
  runId: string;
  executor: Executor;
  bus: Bus;
  clock: Clock;
  /** How often to look for silent attempts (timeouts past their grace). */
  tickMs?: number;
  /**
   * Also publish the engine's own decisions (queued, skipped, retry...) on the bus, for other
   * observers such as a JetStream stream. Off for the embedded default, where observers use
   * onEvent and nobody else listens.
   */
  publishDecisions?: boolean;
  /**
   * Where the run's milestones go (start, end, controls, failed attempts), at info; nothing
   * per event. The engine binds workflow and run to it. Default: none.
   */
  logger?: Logger;
  /** Counts runs and attempts as they end, and the coordination latency per batch of reports. Default: none. */
  metrics?: Metrics;
}

/**
 * Drives one run: it applies events through the reducer, asks the scheduler what to do,
 * records the scheduler's events, and starts or stops attempts on the executor. Agents'
 * reports arrive on the bus and are applied in batches, followed by one scheduling pass.
 */
export class RunEngine {
  readonly state: RunState;
  private readonly listeners: RunListener[] = [];
  private readonly flushers: Array<() => void> = [];
  private unsubscribe: (() => void) | undefined;
  private inbox: RunEvent[] = [];
  private draining = false;
  private wakeTimer: TimerHandle | undefined;
  private wakeAt: number | undefined;
  private tickTimer: TimerHandle | undefined;
  private finished: Promise<RunState>;
  private resolveFinished!: (s: RunState) => void;
  private rejectFinished!: (e: Error) => void;
  private relinquished = false;
  private stepping = false;
  private readonly log: Logger;
  private readonly metrics: Metrics;
  private readonly workflow: string;
  /** Breakers of this run counted open in the metrics (handed back when the run ends). */
  private breakersOpen = 0;

  constructor(private readonly deps: RunEngineDeps) {
    this.state = initialRunState(deps.plan, deps.runId);
    this.workflow = deps.plan.workflow.metadata.name;
    this.log = (deps.logger ?? noopLogger).child({ workflow: this.workflow, run: deps.runId });
    this.metrics = deps.metrics ?? noopMetrics;
    this.finished = new Promise((resolve, reject) => {
      this.resolveFinished = resolve;
      this.rejectFinished = reject;
    });
    // Relinquishing can happen before anyone awaits done(); whoever does still sees the error.
    this.finished.catch(() => undefined);
  }

  onEvent(listener: RunListener): void {
    this.listeners.push(listener);
  }

  /**
   * Called after each batch of recorded events and before any attempt is started or
   * stopped because of them: the place to make the record durable (write-ahead).
   */
  onFlush(flush: () => void): void {
    this.flushers.push(flush);
  }

  private flush(): void {
    for (const f of this.flushers) f();
  }

  /**
   * Takes the values of the params the workflow declares `secret: true` out of `params` (they
   * are recorded as `***`) and keeps them for expressions only. A recovered run gets them
   * again this way, before recover().
   */
  keepSecretParams(params: Record<string, unknown>): Record<string, unknown> {
    const declared = this.deps.plan.workflow.spec.params ?? {};
    const shown: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(params)) {
      if (declared[name]?.secret === true) {
        this.state.secretParams[name] = value;
        shown[name] = SECRET_PARAM_MASK;
      } else shown[name] = value;
    }
    return shown;
  }

  /** Resolves with the final state once the run has succeeded, failed or been cancelled. */
  done(): Promise<RunState> {
    return this.finished;
  }

  /**
   * Starts the run. `retry` makes it a retry of an earlier run: the instances it names are
   * recorded as reused (task.reused) when their turn comes, and never dispatched.
   */
  start(params: Record<string, unknown>, trigger: string, commit?: string, retry?: RetryOrigin): void {
    const now = this.deps.clock.now();
    params = this.keepSecretParams(params);
    const deadline = this.deps.plan.deadlineMs !== undefined ? now + this.deps.plan.deadlineMs : undefined;
    this.record({ runId: this.deps.runId, at: now, type: 'run.started', workflow: this.workflow, params, trigger, ...(commit !== undefined ? { commit } : {}), ...(deadline !== undefined ? { deadline } : {}), ...(retry !== undefined ? { retry } : {}) });
    this.startTicking();
    this.accept();
    this.step();
  }

  /**
   * Subscribes to the run's reports once the engine can apply them (after the replay, on
   * resume). A durable stream keeps what arrived before; subscribing earlier would let the
   * bus acknowledge reports that a crash in between would then lose.
   */
  private accept(): void {
    this.unsubscribe = this.deps.bus.subscribe(runSubjects(this.workflow, this.deps.runId), (event, meta) => {
      if (meta.origin === 'engine' || !AGENT_EVENTS.has(event.type)) return;
      this.inbox.push(event);
      // Reports are applied in batches, one scheduling pass each. A bus that hands over a
      // whole socket read at once (hundreds of messages) would make the first of them wait
      // for the last: past DRAIN_EVERY the batch is applied at once.
      if (this.inbox.length >= DRAIN_EVERY && !this.stepping) this.drain();
      else if (!this.draining) {
        this.draining = true;
        queueMicrotask(() => this.drain());
      }
    });
  }

  /**
   * Continues a run from its recorded events; finished tasks never run again. Attempts that
   * were in flight when the previous engine stopped are handed back to an executor that can
   * reattach (Nomad: the allocation may still be running and reports on the stream; local:
   * the shell worker may still run the job, or have recorded how it ended); otherwise they
   * count as lost and start again at once (outside the retry budget: the loss was not the
   * task's fault).
   */
  recover(events: readonly RunEvent[], reason = 'the engine stopped while this attempt was running'): void {
    for (const e of events) applyRunEvent(this.state, this.deps.plan, e);
    if (isFinal(this.state.status)) {
      this.finish();
      return;
    }
    const now = this.deps.clock.now();
    const reattach = this.deps.executor.reattach?.bind(this.deps.executor);
    this.log.info('run picked up from its record', { events: events.length, inFlight: this.state.active.size, reattach: reattach !== undefined });
    for (const key of [...this.state.active]) {
      const inst = this.state.instances.get(key)!;
      if (reattach !== undefined) {
        const task = this.deps.plan.tasks.get(inst.task)!;
        const dispatch: Dispatch = { instance: key, task: inst.task, attempt: inst.attempt, kind: inst.kind, context: contextFor(this.state, this.deps.plan, task, { ...inst, attempt: inst.attempt - 1 }) };
        if (inst.index !== undefined) dispatch.index = inst.index;
        if (inst.item !== undefined) dispatch.item = inst.item;
        reattach({ runId: this.deps.runId, plan: this.deps.plan, dispatch, logged: loggedLines(events, key, inst.attempt) });
      } else {
        this.record({ runId: this.deps.runId, at: now, type: 'task.failed', task: key, attempt: inst.attempt, error: `lost: ${reason}`, retryable: true, lost: true, failure: 'infrastructure' });
      }
    }
    this.startTicking();
    // Reports that were waiting on the stream (an attempt that finished while no engine
    // listened) are applied now, after the replay, so they find their attempt.
    this.accept();
    this.step();
  }

  /**
   * Approves a gate. `identities` are who the caller is (an OS user, a commit author's email
   * and name; default `by`): a gate with `approvers` takes a decision only from one of them,
   * and records any other as approval.refused (false is returned, and the gate keeps waiting).
   */
  approve(task: string, by: string, identities: readonly string[] = [by]): boolean {
    if (this.refused(task, by, identities)) return false;
    return this.control({ runId: this.deps.runId, at: this.deps.clock.now(), type: 'approval.granted', task, by });
  }

  /** Rejects a gate; `approvers` apply as for approve(). */
  reject(task: string, by: string, reason?: string, identities: readonly string[] = [by]): boolean {
    if (this.refused(task, by, identities)) return false;
    return this.control({ runId: this.deps.runId, at: this.deps.clock.now(), type: 'approval.rejected', task, by, ...(reason !== undefined ? { reason } : {}) });
  }

  private refused(task: string, by: string, identities: readonly string[]): boolean {
    const inst = this.state.instances.get(task);
    const approvers = inst !== undefined ? this.deps.plan.tasks.get(inst.task)?.spec.approval?.approvers : undefined;
    if (approvers === undefined || approvers.length === 0 || identities.some((i) => approvers.includes(i))) return false;
    const reason = `not in the approvers of ${task} (${approvers.join(', ')})`;
    this.control({ runId: this.deps.runId, at: this.deps.clock.now(), type: 'approval.refused', task, by, reason });
    return true;
  }

  pause(by: string): boolean {
    return this.control({ runId: this.deps.runId, at: this.deps.clock.now(), type: 'run.paused', by });
  }

  unpause(by: string): boolean {
    return this.control({ runId: this.deps.runId, at: this.deps.clock.now(), type: 'run.resumed', by });
  }

  /**
   * Cancels the run: every running attempt is stopped and nothing else of the main tasks,
   * compensation or onFailure starts. A workflow with finally tasks runs them first (or lets
   * those under way finish: run.cancelling) and ends cancelled after them; a second cancel
   * stops them too.
   */
  cancel(by: string, reason?: string): boolean {
    if (this.relinquished) return false;
    const active = [...this.state.active].map((k) => {
      const inst = this.state.instances.get(k)!;
      return [k, inst.attempt, inst.attempts[inst.attempts.length - 1]?.startedAt] as const;
    });
    const now = this.deps.clock.now();
    const graceful = this.deps.plan.finallyRoots.length > 0 && this.state.outcome !== 'cancelled';
    const ok = this.record({ runId: this.deps.runId, at: now, type: graceful ? 'run.cancelling' : 'run.cancelled', by, ...(reason !== undefined ? { reason } : {}) });
    if (!ok) return false;
    for (const [k, attempt, startedAt] of active) {
      // Only what the cancel ended: finally attempts under way carry on after a first cancel.
      if (this.state.active.has(k)) continue;
      // The cancel ends these attempts without an event of their own: they are counted here.
      this.metrics.attemptFinished(this.workflow, 'cancelled', startedAt !== undefined ? (now - startedAt) / 1000 : undefined);
      this.deps.executor.cancel(this.deps.runId, k, attempt);
    }
    // Stopped first, then the finally tasks are started (or the run ends).
    this.step();
    return true;
  }

  /**
   * Stops all leader work at once (leadership lost): nothing more is applied, scheduled,
   * started or timed out here. Attempts already running are left alone for the next leader,
   * which resumes the run from its record and reattaches to them. done() rejects with the
   * error given.
   */
  relinquish(error: Error): void {
    if (this.relinquished || isFinal(this.state.status)) return;
    this.relinquished = true;
    // Whoever awaits done() reports the error; this line only marks the moment in the log.
    this.log.info('run relinquished: another engine takes it over', { err: error });
    this.inbox = [];
    if (this.wakeTimer !== undefined) this.deps.clock.clearTimer(this.wakeTimer);
    if (this.tickTimer !== undefined) this.deps.clock.clearTimer(this.tickTimer);
    this.unsubscribe?.();
    // Its breakers are the next leader's to count now.
    this.countBreakers(0);
    this.rejectFinished(error);
  }

  private control(e: RunEvent): boolean {
    if (this.relinquished) return false;
    const ok = this.record(e);
    if (ok) this.step();
    return ok;
  }

  private drain(): void {
    this.draining = false;
    if (this.relinquished || this.inbox.length === 0) return;
    const batch = this.inbox;
    this.inbox = [];
    // From the oldest success in the batch: what the engine does with the other reports
    // (starts, heartbeats, logs) unblocks nothing, so it is not coordination.
    let oldestSuccess = Infinity;
    for (const e of batch) {
      if (this.record(e) && e.type === 'task.succeeded' && e.at < oldestSuccess) oldestSuccess = e.at;
    }
    this.step();
    // Agents' clocks are not the engine's: a report from a host running ahead counts as zero.
    if (oldestSuccess !== Infinity && this.metrics !== noopMetrics) this.metrics.coordinationLatency(Math.max(0, this.deps.clock.now() - oldestSuccess) / 1000);
  }

  /** Applies an event and tells listeners; false when the reducer ignored it. */
  private record(e: RunEvent): boolean {
    // A cancelled attempt counts only if it was queued or running (not an approval gate).
    const cancelsAttempt = e.type === 'task.cancelled' && this.state.active.has(e.task);
    if (!applyRunEvent(this.state, this.deps.plan, e)) return false;
    for (const l of this.listeners) l(e, this.state);
    if (this.deps.publishDecisions !== false && !AGENT_EVENTS.has(e.type)) {
      const task = 'task' in e ? e.task : undefined;
      this.deps.bus.publish(eventSubject(this.workflow, this.deps.runId, task), e, { msgId: eventId(e), origin: 'engine' });
    }
    this.observe(e, cancelsAttempt);
    // A success can close a half-open breaker without an event of its own.
    if (e.type === 'breaker.opened' || e.type === 'breaker.closed' || e.type === 'task.succeeded') this.countBreakers(isFinal(this.state.status) ? 0 : openBreakers(this.state));
    return true;
  }

  /** Tells the metrics how many of this run's breakers are open now, as a change. */
  private countBreakers(open: number): void {
    if (open === this.breakersOpen) return;
    this.metrics.breakersOpenChanged(open - this.breakersOpen);
    this.breakersOpen = open;
  }

  /** Metrics and log lines for the events that end something; every other event passes through. */
  private observe(e: RunEvent, cancelsAttempt: boolean): void {
    switch (e.type) {
      case 'task.succeeded':
        this.attemptEnded(e.task, 'succeeded', e.at);
        return;
      case 'task.failed': {
        this.attemptEnded(e.task, e.lost === true ? 'lost' : 'failed', e.at);
        const willRetry = this.state.instances.get(e.task)?.status === 'retrying';
        // info, not warn: a failing task is the workflow's news, recorded in the run; warn is
        // for trouble with Caravan itself (and a CLI shows warnings to the person running it).
        this.log.info('attempt failed', { task: e.task, attempt: e.attempt, error: e.error, exitCode: e.exitCode, retryable: e.retryable, lost: e.lost === true, willRetry });
        return;
      }
      case 'task.cancelled':
        if (cancelsAttempt) this.attemptEnded(e.task, 'cancelled', e.at);
        return;
      case 'approval.granted':
      case 'approval.rejected':
        this.log.info(e.type === 'approval.granted' ? 'approval granted' : 'approval rejected', { task: e.task, by: e.by, reason: e.type === 'approval.rejected' ? e.reason : undefined });
        return;
      case 'approval.refused':
        this.log.warn('approval refused', { task: e.task, by: e.by, reason: e.reason });
        return;
      case 'run.paused':
        this.log.info('run paused', { by: e.by });
        return;
      case 'run.resumed':
        this.log.info('run unpaused', { by: e.by });
        return;
      case 'run.started':
        this.metrics.runStarted(this.workflow, triggerKind(e.trigger));
        this.log.info('run started', { trigger: e.trigger, commit: e.commit, tasks: this.deps.plan.tasks.size });
        return;
      case 'run.succeeded':
        this.runEnded('succeeded', e.at);
        return;
      case 'run.failed':
        this.runEnded('failed', e.at);
        return;
      case 'run.cancelling':
        this.log.info('run cancelling: its finally tasks run first', { by: e.by, reason: e.reason });
        return;
      case 'run.cancelled':
        this.log.info('run cancelled', { by: e.by, reason: e.reason });
        this.runEnded('cancelled', e.at);
        return;
      default:
        return;
    }
  }

  private attemptEnded(key: string, status: AttemptOutcome, at: number): void {
    const inst = this.state.instances.get(key);
    const startedAt = inst?.attempts[inst.attempts.length - 1]?.startedAt;
    this.metrics.attemptFinished(this.workflow, status, startedAt !== undefined ? (at - startedAt) / 1000 : undefined);
  }

  private runEnded(status: RunOutcome, at: number): void {
    const durationMs = at - this.state.startedAt;
    this.metrics.runFinished(this.workflow, status, durationMs / 1000);
    this.countBreakers(0);
    const reason = this.state.failureReason ?? this.state.cancelReason;
    this.log.info('run finished', { status, durationMs, ...(status !== 'succeeded' && reason !== undefined ? { reason } : {}) });
  }

  private step(timerPass = false): void {
    if (this.stepping || this.relinquished) return;
    this.stepping = true;
    try {
      let wakeAt: number | undefined;
      let pass = timerPass;
      for (;;) {
        const d = scheduleRun(this.state, this.deps.plan, this.deps.clock.now(), { timerPass: pass });
        pass = false;
        if (d.wakeAt !== undefined) wakeAt = d.wakeAt;
        if (d.events.length === 0 && d.dispatch.length === 0 && d.cancel.length === 0) break;
        for (const e of d.events) this.record(e);
        this.flush();
        for (const c of d.cancel) this.deps.executor.cancel(this.deps.runId, c.instance, c.attempt);
        for (const x of d.dispatch) {
          if (this.relinquished) break;
          // Only attempts the reducer accepted as queued are started.
          const inst = this.state.instances.get(x.instance);
          if (inst?.status === 'queued' && inst.attempt === x.attempt) this.deps.executor.start({ runId: this.deps.runId, plan: this.deps.plan, dispatch: x });
        }
      }
      this.flush();
      if (isFinal(this.state.status)) {
        this.finish();
        return;
      }
      this.setWake(wakeAt);
    } finally {
      this.stepping = false;
    }
  }

  private setWake(at: number | undefined): void {
    if (at === this.wakeAt) return;
    if (this.wakeTimer !== undefined) this.deps.clock.clearTimer(this.wakeTimer);
    this.wakeTimer = undefined;
    this.wakeAt = at;
    if (at !== undefined) {
      this.wakeTimer = this.deps.clock.setTimer(() => {
        this.wakeTimer = undefined;
        this.wakeAt = undefined;
        this.step();
      }, at - this.deps.clock.now());
    }
  }

  private startTicking(): void {
    const ms = this.deps.tickMs ?? 1000;
    const tick = (): void => {
      this.tickTimer = undefined;
      if (isFinal(this.state.status)) return;
      this.step(true);
      if (!isFinal(this.state.status)) this.tickTimer = this.deps.clock.setTimer(tick, ms);
    };
    this.tickTimer = this.deps.clock.setTimer(tick, ms);
  }

  private finish(): void {
    if (this.wakeTimer !== undefined) this.deps.clock.clearTimer(this.wakeTimer);
    if (this.tickTimer !== undefined) this.deps.clock.clearTimer(this.tickTimer);
    this.unsubscribe?.();
    this.resolveFinished(this.state);
  }
}

/** How many log lines of one attempt were recorded, per stream. */
function loggedLines(events: readonly RunEvent[], task: string, attempt: number): { stdout: number; stderr: number } {
  const n = { stdout: 0, stderr: 0 };
  for (const e of events) if (e.type === 'task.log' && e.task === task && e.attempt === attempt) n[e.stream]++;
  return n;
}

/** Breakers open in a run: opened and not closed again (counting failures alone does not open one). */
function openBreakers(state: RunState): number {
  let n = 0;
  for (const b of state.breakers.values()) if (b.openUntil !== undefined) n++;
  return n;
}
