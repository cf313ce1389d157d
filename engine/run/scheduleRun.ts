import { parseDuration } from '../spec/parseDuration.js';
import { CaravanError } from '../errors/CaravanError.js';
import { evaluateCondition, evaluateSingle, interpolate, type ExpressionContext } from './evaluate.js';
import { evaluateRunOutputs } from './evaluateRunOutputs.js';
import { forEachItems } from './forEachItems.js';
import { isTaskDone, type ReusedOutcome, type RunEvent } from './RunEvent.js';
import type { PlannedTask, RunPlan } from './RunPlan.js';
import type { InstanceState, RunState } from './RunState.js';
import { backoffDelay } from './retryPolicy.js';
import { bucketsOf } from './applyTaskEvent.js';
import { isStopping, statusValues } from './statusValues.js';

/** How long past its timeout a silent attempt is given before the engine fails it itself. */
export const TIMEOUT_GRACE_MS = 30_000;
export const DEFAULT_APPROVAL_TIMEOUT_MS = 24 * 3_600_000;

/** An attempt the executor must start. */
export interface Dispatch {
  instance: string;
  task: string;
  attempt: number;
  kind: 'task' | 'compensate';
  index?: number;
  item?: unknown;
  context: ExpressionContext;
}

export interface Decision {
  /** Apply these, in order, through reduceRun before dispatching. */
  events: RunEvent[];
  dispatch: Dispatch[];
  /** Attempts the executor must stop. */
  cancel: Array<{ instance: string; attempt: number }>;
  /** The earliest time the scheduler wants to be asked again, if nothing happens before. */
  wakeAt?: number;
}

export interface ScheduleOptions {
  /** Woken by a timer rather than an event: also look for attempts that went silent. */
  timerPass?: boolean;
}

/**
 * Decides what happens next in a run. Pure: it reads the state, the plan and `now`, and
 * returns events to record and attempts to start or stop. Call it again after applying its
 * events until it returns no events; each call only looks at what changed (the ready,
 * runnable and retrying sets), so a step costs the same whatever the size of the run.
 */
export function scheduleRun(state: RunState, plan: RunPlan, now: number, options: ScheduleOptions = {}): Decision {
  const d: Decision = { events: [], dispatch: [], cancel: [] };
  if (state.phase === 'done' || state.status === 'succeeded' || state.status === 'failed' || state.status === 'cancelled') return d;
  const emit = (e: RunEvent): void => { d.events.push(e); };
  const base = { runId: state.runId, at: now };

  if (state.deadline !== undefined && now >= state.deadline && state.phase === 'main') {
    failEverything(state, plan, d, base, 'run deadline exceeded');
  }
  if (options.timerPass === true) checkTimeouts(state, plan, d, base, now);
  for (const key of state.waitingApprovals) {
    const inst = state.instances.get(key)!;
    const timeoutAt = inst.approval?.timeoutAt;
    if (timeoutAt !== undefined && now >= timeoutAt) {
      const onTimeout = plan.tasks.get(inst.task)?.spec.approval?.onTimeout ?? 'reject';
      emit(onTimeout === 'approve' ? { ...base, type: 'approval.granted', task: key, by: 'timeout' } : { ...base, type: 'approval.rejected', task: key, by: 'timeout', reason: 'no decision before the approval timeout' });
    }
  }

  const stopping = isStopping(state, plan);
  for (const name of state.blocked) {
    const g = state.groups.get(name)!;
    emit({ ...base, type: 'task.skipped', task: name, reason: g.reason ?? 'a need did not succeed' });
  }
  // A fail-fast run that is failing starts nothing new, except the tasks whose `when` still
  // holds with success() false (always(), failure()...): they asked to run in this case.
  const keeps = stopping ? stillWanted(state, plan) : undefined;
  if (keeps !== undefined) {
    const reason = `run is failing (${state.failureReason})`;
    for (const name of state.ready) if (!plan.tasks.get(name)!.statusCheck) emit({ ...base, type: 'task.skipped', task: name, reason });
    for (const key of [...state.runnable, ...state.retrying]) if (!keeps(state.instances.get(key)!.task)) emit({ ...base, type: 'task.skipped', task: key, reason });
  }

  if (state.status === 'running') {
    // A retry's carried-over instances end at once, taking no capacity.
    for (const key of state.reusable) emit(reusedEvent(state, base, key, state.reuse.get(key)!));
    for (const name of state.ready) if (keeps === undefined || plan.tasks.get(name)!.statusCheck) decideReady(state, plan, d, base, now, name);
    for (const key of state.retrying) {
      const inst = state.instances.get(key)!;
      if (inst.kind === 'compensate' || (keeps !== undefined && !keeps(inst.task))) continue;
      if (inst.retryAt === undefined) {
        const delay = inst.lost === true ? 0 : retryDelay(state.runId, key, inst.attempt, plan.tasks.get(inst.task)!);
        emit({ ...base, type: 'task.retry-scheduled', task: key, attempt: inst.attempt + 1, retryAt: now + delay });
      } else if (inst.retryAt > now) {
        wake(d, inst.retryAt);
      }
    }
  }

  const opening = openBreakers(state, plan, d, base, now);
  if (state.status === 'running') startCandidates(state, plan, d, base, now, opening, keeps);

  if (state.phase === 'compensating' && state.status !== 'paused') compensate(state, plan, d, base, now);
  const hasFinally = plan.finallyRoots.length > 0;
  if (state.phase === 'main' && state.mainDone === state.mainTotal && d.events.length === 0) {
    if (state.failureReason !== undefined) emit({ ...base, type: 'run.failing', reason: state.failureReason });
    else emit(hasFinally ? { ...base, type: 'run.finalizing', outcome: 'succeeded' } : succeeded(state, plan, base));
  }
  if (state.phase === 'onFailure' && state.failureDone === state.failureTotal && d.events.length === 0) {
    emit(hasFinally ? { ...base, type: 'run.finalizing', outcome: 'failed' } : { ...base, type: 'run.failed', reason: state.failureReason ?? 'failed' });
  }
  if (state.phase === 'finally' && state.finallyDone === state.finallyTotal && d.events.length === 0) emit(closingEvent(state, plan, base));
  if (state.deadline !== undefined && state.phase === 'main') wake(d, state.deadline);
  for (const key of state.waitingApprovals) {
    const t = state.instances.get(key)!.approval?.timeoutAt;
    if (t !== undefined) wake(d, t);
  }
  return d;
}

/**
 * How a run with finally tasks ends once they did: as its outcome before them, except that a
 * failed finally task fails a run that had succeeded.
 */
function closingEvent(state: RunState, plan: RunPlan, base: Base): RunEvent {
  if (state.outcome === 'cancelled') return { ...base, type: 'run.cancelled', by: state.cancelledBy ?? 'caravan', ...(state.cancelReason !== undefined ? { reason: state.cancelReason } : {}) };
  if (state.outcome === 'failed') return { ...base, type: 'run.failed', reason: state.failureReason ?? 'failed' };
  if (state.finallyFailure !== undefined) return { ...base, type: 'run.failed', reason: state.finallyFailure };
  return succeeded(state, plan, base);
}

/**
 * The end of a run that succeeded: with the workflow's `spec.outputs` evaluated over its main
 * and finally tasks (secret params read as `***`: an output is recorded in Git), or failed
 * with the reason one of them could not be.
 */
function succeeded(state: RunState, plan: RunPlan, base: Base): RunEvent {
  const declared = plan.workflow.spec.outputs;
  if (declared === undefined) return { ...base, type: 'run.succeeded' };
  const reads = [...plan.tasks.values()].filter((t) => !t.onFailure).map((t) => t.name);
  const ctx = contextFor({ ...state, secretParams: {} }, plan, { reads, onFailure: false, finally: false }, undefined);
  const r = evaluateRunOutputs(declared, ctx);
  return r.ok ? { ...base, type: 'run.succeeded', outputs: r.outputs } : { ...base, type: 'run.failed', reason: r.reason };
}

/**
 * While a fail-fast run stops: whether a task's instances may still start, that is whether
 * its `when` has a status function and holds now. Asked once per task per pass.
 */
function stillWanted(state: RunState, plan: RunPlan): (task: string) => boolean {
  const known = new Map<string, boolean>();
  return (task) => {
    let ok = known.get(task);
    if (ok === undefined) {
      const t = plan.tasks.get(task)!;
      try {
        ok = t.statusCheck && evaluateCondition(t.spec.when!, contextFor(state, plan, t, undefined), statusValues(state, plan, t));
      } catch {
        ok = false;
      }
      known.set(task, ok);
    }
    return ok;
  };
}

/** A task whose needs are met but that needs a decision: `when`, forEach or an approval gate. */
function decideReady(state: RunState, plan: RunPlan, d: Decision, base: Base, now: number, name: string): void {
  const t = plan.tasks.get(name)!;
  const ctx = contextFor(state, plan, t, undefined);
  if (t.spec.when !== undefined) {
    let ok: boolean;
    const status = statusValues(state, plan, t);
    try {
      ok = evaluateCondition(t.spec.when, ctx, status);
    } catch (err) {
      failBeforeStart(d, base, name, err);
      return;
    }
    if (!ok) {
      const why = t.statusCheck ? ` (success() ${status.success}, failure() ${status.failure}, cancelled() ${status.cancelled})` : '';
      d.events.push({ ...base, type: 'task.skipped', task: name, reason: `when '${t.spec.when.trim()}' is false${why}` });
      return;
    }
  }
  if (t.kind === 'approval') {
    // Approved in the run this one retries, and nothing it depends on runs again: not asked twice.
    const earlier = state.reuse.get(name);
    if (earlier !== undefined) {
      d.events.push(reusedEvent(state, base, name, earlier));
      return;
    }
    const a = t.spec.approval!;
    const timeout = a.timeout !== undefined ? (parseDuration(a.timeout) ?? DEFAULT_APPROVAL_TIMEOUT_MS) : DEFAULT_APPROVAL_TIMEOUT_MS;
    let message: string | undefined;
    try {
      message = a.message !== undefined ? interpolate(a.message, ctx) : undefined;
    } catch (err) {
      failBeforeStart(d, base, name, err);
      return;
    }
    d.events.push({ ...base, type: 'approval.requested', task: name, timeoutAt: now + timeout, ...(message !== undefined ? { message } : {}) });
    return;
  }
  if (t.spec.forEach !== undefined) {
    let items: unknown;
    try {
      items = Array.isArray(t.spec.forEach) ? t.spec.forEach : evaluateSingle(t.spec.forEach, ctx);
    } catch (err) {
      failBeforeStart(d, base, name, err);
      return;
    }
    const list = forEachItems(items);
    if (!list.ok) {
      failBeforeStart(d, base, name, new CaravanError('EXPRESSION_FAILED', `forEach must yield a list or a string holding a JSON array, got ${list.got}: ${(JSON.stringify(items) ?? 'undefined').slice(0, 80)}`, { data: { task: name } }));
      return;
    }
    d.events.push({ ...base, type: 'task.expanded', task: name, items: list.items });
    return;
  }
  d.events.push({ ...base, type: 'task.ready', task: name });
}

function reusedEvent(state: RunState, base: Base, key: string, earlier: ReusedOutcome): RunEvent {
  return { ...base, type: 'task.reused', task: key, from: state.retryOf ?? '', outputs: earlier.outputs, ...(earlier.exitCode !== undefined ? { exitCode: earlier.exitCode } : {}), ...(earlier.approvedBy !== undefined ? { approvedBy: earlier.approvedBy } : {}) };
}

function wake(d: Decision, at: number): void {
  if (d.wakeAt === undefined || at < d.wakeAt) d.wakeAt = at;
}

type Base = { runId: string; at: number };

function failBeforeStart(d: Decision, base: Base, name: string, err: unknown): void {
  const message = err instanceof Error ? err.message : String(err);
  d.events.push({ ...base, type: 'task.queued', task: name, attempt: 1 });
  d.events.push({ ...base, type: 'task.failed', task: name, attempt: 1, error: message, retryable: false });
}

/** The delay before the retry after failed attempt `failedAttempt` of a task (see backoffDelay). */
export function retryDelay(runId: string, key: string, failedAttempt: number, t: PlannedTask): number {
  return backoffDelay(t.retry, runId, key, failedAttempt);
}

function bucketLimit(plan: RunPlan, bucket: string): number {
  if (bucket.startsWith('pool:')) return plan.poolLimits.get(bucket.slice(5)) ?? Infinity;
  if (bucket.startsWith('task:')) return plan.tasks.get(bucket.slice(5))?.spec.parallelism ?? Infinity;
  return Infinity;
}

/** Attempts waiting for capacity, oldest first: due retries, then new instances. */
function* candidates(state: RunState, plan: RunPlan, now: number): Generator<{ key: string; inst: InstanceState; task: PlannedTask; attempt: number }> {
  for (const key of state.retrying) {
    const inst = state.instances.get(key)!;
    if (inst.kind === 'task' && inst.retryAt !== undefined && inst.retryAt <= now) yield { key, inst, task: plan.tasks.get(inst.task)!, attempt: inst.attempt + 1 };
  }
  for (const key of state.runnable) {
    const inst = state.instances.get(key)!;
    yield { key, inst, task: plan.tasks.get(inst.task)!, attempt: inst.attempt + 1 };
  }
}

function startCandidates(state: RunState, plan: RunPlan, d: Decision, base: Base, now: number, opening: Set<string>, keeps: ((task: string) => boolean) | undefined): void {
  let free = plan.maxParallel - state.active.size;
  if (free <= 0) return;
  const taken = new Map<string, number>();
  const full = new Set<string>(opening);
  for (const c of candidates(state, plan, now)) {
    if (free <= 0) break;
    if (keeps !== undefined && !keeps(c.task.name)) continue;
    const buckets = bucketsOf(plan, c.inst);
    if (buckets.some((b) => full.has(b))) continue;
    let ok = true;
    for (const b of buckets) {
      if ((state.activeByBucket.get(b) ?? 0) + (taken.get(b) ?? 0) >= bucketLimit(plan, b)) {
        full.add(b);
        ok = false;
      }
    }
    const key = c.task.breaker?.key;
    const breaker = key !== undefined ? state.breakers.get(key) : undefined;
    if (key === undefined || breaker === undefined || breaker.probeSucceeded === true) {
      // no breaker, or one that closes in this pass
    } else if (breaker.openUntil !== undefined) {
      if (breaker.openUntil > now) {
        ok = false;
        full.add(key);
        wake(d, breaker.openUntil);
      } else if ((state.activeByBucket.get(key) ?? 0) + (taken.get(key) ?? 0) > 0) {
        ok = false; // half-open: one probe at a time
        full.add(key);
      }
    } else if (breaker.failures >= c.task.breaker!.failures) {
      ok = false; // opens in this pass
      full.add(key);
    }
    if (!ok) continue;
    for (const b of buckets) taken.set(b, (taken.get(b) ?? 0) + 1);
    free--;
    d.events.push({ ...base, type: 'task.queued', task: c.key, attempt: c.attempt });
    const dispatch: Dispatch = { instance: c.key, task: c.task.name, attempt: c.attempt, kind: 'task', context: contextFor(state, plan, c.task, c.inst) };
    if (c.inst.index !== undefined) dispatch.index = c.inst.index;
    if (c.inst.item !== undefined) dispatch.item = c.inst.item;
    d.dispatch.push(dispatch);
  }
}

/**
 * Breakers that open (or re-open after a failed probe) now, whose keys are returned: nothing
 * of theirs starts in this pass. A breaker whose probe succeeded closes.
 */
function openBreakers(state: RunState, plan: RunPlan, d: Decision, base: Base, now: number): Set<string> {
  const opening = new Set<string>();
  for (const [key, b] of state.breakers) {
    if (b.probeSucceeded === true) {
      d.events.push({ ...base, type: 'breaker.closed', key });
      continue;
    }
    const settings = plan.breakers.get(key);
    if (settings === undefined || b.failures < settings.failures) continue;
    const neverOpened = b.openUntil === undefined;
    const probeFailed = b.openUntil !== undefined && b.openUntil <= now && b.failures > (b.failuresAtOpen ?? 0);
    if (neverOpened || probeFailed) {
      d.events.push({ ...base, type: 'breaker.opened', key, until: now + settings.cooldownMs, failures: b.failures });
      opening.add(key);
    }
  }
  return opening;
}

function checkTimeouts(state: RunState, plan: RunPlan, d: Decision, base: Base, now: number): void {
  for (const key of state.active) {
    const inst = state.instances.get(key)!;
    const t = plan.tasks.get(inst.task)!;
    const timeout = inst.kind === 'compensate' ? (t.spec.compensate?.timeout !== undefined ? parseDuration(t.spec.compensate.timeout) : t.timeoutMs) : t.timeoutMs;
    const since = inst.attempts[inst.attempts.length - 1]?.startedAt;
    if (timeout === undefined || since === undefined) continue;
    if (now >= since + timeout + TIMEOUT_GRACE_MS) {
      d.events.push({ ...base, type: 'task.failed', task: key, attempt: inst.attempt, error: `timed out after ${timeout} ms with no report from the agent`, retryable: true, failure: 'timeout' });
      d.cancel.push({ instance: key, attempt: inst.attempt });
    }
  }
}

function failEverything(state: RunState, plan: RunPlan, d: Decision, base: Base, reason: string): void {
  for (const key of state.active) {
    const inst = state.instances.get(key)!;
    d.events.push({ ...base, type: 'task.cancelled', task: key, attempt: inst.attempt, reason });
    d.cancel.push({ instance: key, attempt: inst.attempt });
  }
  for (const key of state.waitingApprovals) d.events.push({ ...base, type: 'task.cancelled', task: key, attempt: 1, reason });
  for (const key of [...state.runnable, ...state.retrying]) d.events.push({ ...base, type: 'task.skipped', task: key, reason });
  for (const g of state.groups.values()) {
    if (!g.onFailure && !g.finally && g.status === 'pending') d.events.push({ ...base, type: 'task.skipped', task: g.name, reason });
  }
  if (state.failureReason === undefined) d.events.push({ ...base, type: 'run.failing', reason });
  void plan;
}

function compensate(state: RunState, plan: RunPlan, d: Decision, base: Base, now: number): void {
  const key = state.compensations[state.compensationIndex];
  if (key === undefined) return;
  const inst = state.instances.get(key)!;
  const t = plan.tasks.get(inst.task)!;
  if (isTaskDone(inst.status)) {
    d.events.push({ ...base, type: 'compensation.finished', task: key, attempt: inst.attempt, ok: inst.status === 'succeeded', ...(inst.error !== undefined ? { error: inst.error } : {}) });
    return;
  }
  if (inst.status === 'pending') {
    d.events.push({ ...base, type: 'compensation.started', task: key, attempt: 1 });
  } else if (inst.status === 'retrying') {
    if (inst.retryAt === undefined) {
      const delay = backoffDelay(t.compensateRetry, state.runId, key, inst.attempt);
      d.events.push({ ...base, type: 'task.retry-scheduled', task: key, attempt: inst.attempt + 1, retryAt: now + delay });
      return;
    }
    if (inst.retryAt > now) {
      wake(d, inst.retryAt);
      return;
    }
  } else {
    return;
  }
  d.events.push({ ...base, type: 'task.queued', task: key, attempt: inst.attempt + 1 });
  const dispatch: Dispatch = { instance: key, task: inst.task, attempt: inst.attempt + 1, kind: 'compensate', context: contextFor(state, plan, t, inst) };
  if (inst.index !== undefined) dispatch.index = inst.index;
  if (inst.item !== undefined) dispatch.item = inst.item;
  d.dispatch.push(dispatch);
}

/** Only the tasks this task's expressions read go into its context. */
export function contextFor(state: RunState, plan: RunPlan, t: Pick<PlannedTask, 'reads' | 'onFailure' | 'finally'>, inst: InstanceState | undefined): ExpressionContext {
  const tasks: ExpressionContext['tasks'] = {};
  for (const name of t.reads) {
    const g = state.groups.get(name);
    if (g === undefined) continue;
    const instances = g.instances.map((k) => state.instances.get(k)!).filter((i) => i !== undefined);
    let outputs: Record<string, unknown> = {};
    if (g.expanded) {
      const keys = new Set(instances.flatMap((i) => Object.keys(i.outputs)));
      for (const k of keys) outputs[k] = instances.map((i) => i.outputs[k] ?? null);
    } else if (instances[0] !== undefined) {
      outputs = instances[0].outputs;
    }
    const first = instances[0];
    tasks[name] = { status: g.status, outputs, attempts: instances.reduce((n, i) => n + i.attempts.length, 0), ...(first?.exitCode !== undefined && !g.expanded ? { exitCode: first.exitCode } : {}) };
  }
  const secret = Object.keys(state.secretParams).length > 0;
  const ctx: ExpressionContext = {
    params: secret ? { ...state.params, ...state.secretParams } : state.params,
    tasks,
    run: { id: state.runId, workflow: state.workflow, commit: state.commit ?? '', trigger: state.trigger, startedAt: state.startedAtIso, attempt: inst?.attempt !== undefined ? inst.attempt + 1 : 1 },
  };
  // The outcome exists only once the main tasks are over; validation keeps it out of theirs.
  if (t.onFailure || t.finally) Object.assign(ctx.run, { status: state.outcome ?? 'failed', failures: [...state.failures] });
  if (inst?.item !== undefined) ctx.item = inst.item;
  if (secret) ctx.secrets = Object.values(state.secretParams).map((v) => (typeof v === 'string' ? v : JSON.stringify(v)));
  return ctx;
}
