import { eventSubject, runSubjects, type Bus } from './Bus.js';
import type { Clock, TimerHandle } from './Clock.js';
import type { Executor } from './Executor.js';
import { eventId, isFinal, type RunEvent } from './RunEvent.js';
import type { RunPlan } from './RunPlan.js';
import type { RunState } from './RunState.js';
import { applyRunEvent, initialRunState } from './reduceRun.js';
import { contextFor, scheduleRun, type Dispatch } from './scheduleRun.js';

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

  constructor(private readonly deps: RunEngineDeps) {
    this.state = initialRunState(deps.plan, deps.runId);
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

  /** Resolves with the final state once the run has succeeded, failed or been cancelled. */
  done(): Promise<RunState> {
    return this.finished;
  }

  start(params: Record<string, unknown>, trigger: string, commit?: string): void {
    const now = this.deps.clock.now();
    const deadline = this.deps.plan.deadlineMs !== undefined ? now + this.deps.plan.deadlineMs : undefined;
    this.record({ runId: this.deps.runId, at: now, type: 'run.started', workflow: this.deps.plan.workflow.metadata.name, params, trigger, ...(commit !== undefined ? { commit } : {}), ...(deadline !== undefined ? { deadline } : {}) });
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
    this.unsubscribe = this.deps.bus.subscribe(runSubjects(this.deps.plan.workflow.metadata.name, this.deps.runId), (event, meta) => {
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
   * reattach (Nomad: the allocation may still be running and reports on the stream);
   * otherwise they died with the process, so each is recorded as lost and started again at
   * once (outside the retry budget: the loss was not the task's fault).
   */
  resume(events: readonly RunEvent[], reason = 'the engine stopped while this attempt was running'): void {
    for (const e of events) applyRunEvent(this.state, this.deps.plan, e);
    if (isFinal(this.state.status)) {
      this.finish();
      return;
    }
    const now = this.deps.clock.now();
    const reattach = this.deps.executor.reattach?.bind(this.deps.executor);
    for (const key of [...this.state.active]) {
      const inst = this.state.instances.get(key)!;
      if (reattach !== undefined) {
        const task = this.deps.plan.tasks.get(inst.task)!;
        const dispatch: Dispatch = { instance: key, task: inst.task, attempt: inst.attempt, kind: inst.kind, context: contextFor(this.state, this.deps.plan, task, { ...inst, attempt: inst.attempt - 1 }) };
        if (inst.index !== undefined) dispatch.index = inst.index;
        if (inst.item !== undefined) dispatch.item = inst.item;
        reattach({ runId: this.deps.runId, plan: this.deps.plan, dispatch });
      } else {
        this.record({ runId: this.deps.runId, at: now, type: 'task.failed', task: key, attempt: inst.attempt, error: `lost: ${reason}`, retryable: true, lost: true });
      }
    }
    this.startTicking();
    // Reports that were waiting on the stream (an attempt that finished while no engine
    // listened) are applied now, after the replay, so they find their attempt.
    this.accept();
    this.step();
  }

  approve(task: string, by: string): boolean {
    return this.control({ runId: this.deps.runId, at: this.deps.clock.now(), type: 'approval.granted', task, by });
  }

  reject(task: string, by: string, reason?: string): boolean {
    return this.control({ runId: this.deps.runId, at: this.deps.clock.now(), type: 'approval.rejected', task, by, ...(reason !== undefined ? { reason } : {}) });
  }

  pause(by: string): boolean {
    return this.control({ runId: this.deps.runId, at: this.deps.clock.now(), type: 'run.paused', by });
  }

  resumeRun(by: string): boolean {
    return this.control({ runId: this.deps.runId, at: this.deps.clock.now(), type: 'run.resumed', by });
  }

  cancel(by: string, reason?: string): boolean {
    const active = [...this.state.active].map((k) => [k, this.state.instances.get(k)!.attempt] as const);
    const ok = this.control({ runId: this.deps.runId, at: this.deps.clock.now(), type: 'run.cancelled', by, ...(reason !== undefined ? { reason } : {}) });
    if (ok) for (const [k, attempt] of active) this.deps.executor.cancel(this.deps.runId, k, attempt);
    return ok;
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
    this.inbox = [];
    if (this.wakeTimer !== undefined) this.deps.clock.clearTimer(this.wakeTimer);
    if (this.tickTimer !== undefined) this.deps.clock.clearTimer(this.tickTimer);
    this.unsubscribe?.();
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
    for (const e of batch) this.record(e);
    this.step();
  }

  /** Applies an event and tells listeners; false when the reducer ignored it. */
  private record(e: RunEvent): boolean {
    if (!applyRunEvent(this.state, this.deps.plan, e)) return false;
    for (const l of this.listeners) l(e, this.state);
    if (this.deps.publishDecisions !== false && !AGENT_EVENTS.has(e.type)) {
      const task = 'task' in e ? e.task : undefined;
      this.deps.bus.publish(eventSubject(this.deps.plan.workflow.metadata.name, this.deps.runId, task), e, { msgId: eventId(e), origin: 'engine' });
    }
    return true;
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
