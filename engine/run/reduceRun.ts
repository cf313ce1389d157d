import { isFinal, isTaskDone, type RunEvent } from './RunEvent.js';
import type { PlannedTask, RunPlan } from './RunPlan.js';
import type { GroupState, InstanceState, RunState } from './RunState.js';

/** Consecutive failures that open a circuit breaker. */
export const BREAKER_THRESHOLD = 5;

/** The empty state a run starts from; `run.started` fills it in. */
export function initialRunState(plan: RunPlan, runId: string): RunState {
  const groups = new Map<string, GroupState>();
  for (const t of plan.tasks.values()) {
    groups.set(t.name, { name: t.name, status: 'pending', onFailure: t.onFailure, remainingNeeds: t.needs.length, instances: [], expanded: false, done: 0, failed: 0, cancelled: 0 });
  }
  const mainTotal = [...plan.tasks.values()].filter((t) => !t.onFailure).length;
  return {
    runId,
    workflow: plan.workflow.metadata.name,
    params: {},
    trigger: 'manual',
    status: 'running',
    phase: 'main',
    startedAt: 0,
    startedAtIso: '',
    groups,
    instances: new Map(),
    ready: new Set(),
    blocked: new Set(),
    runnable: new Set(),
    retrying: new Set(),
    active: new Set(),
    activeByBucket: new Map(),
    waitingApprovals: new Set(),
    breakers: new Map(),
    compensations: [],
    compensationIndex: 0,
    mainTotal,
    mainDone: 0,
    failureTotal: plan.tasks.size - mainTotal,
    failureDone: 0,
    seq: 0,
  };
}

/** The buckets an instance counts against: its pool or breaker, and its task (for parallelism). */
export function bucketsOf(plan: RunPlan, inst: InstanceState): string[] {
  const t = plan.tasks.get(inst.task);
  if (t === undefined) return [];
  return inst.kind === 'compensate' ? [t.breakerKey] : [t.breakerKey, `task:${t.name}`];
}

/**
 * Applies one event. Deterministic and free of I/O and clocks: replaying the same events
 * gives the same state. It updates `state` in place and returns it, because copying a
 * 10,000-task state per event would make runs quadratic. Duplicate and late events change
 * nothing: an event for an older attempt, or for an instance already finished, is ignored.
 */
export function reduceRun(state: RunState, plan: RunPlan, e: RunEvent): RunState {
  applyRunEvent(state, plan, e);
  return state;
}

/** reduceRun, telling whether the event changed anything (the engine records only those). */
export function applyRunEvent(state: RunState, plan: RunPlan, e: RunEvent): boolean {
  if (isFinal(state.status) || e.type === 'checkpoint') return false;
  const before = state.seq;
  state.seq++;
  const applied = apply(state, plan, e);
  if (!applied) state.seq = before;
  return applied;
}

function apply(state: RunState, plan: RunPlan, e: RunEvent): boolean {
  switch (e.type) {
    case 'run.started':
      if (state.startedAt !== 0) return false;
      state.workflow = e.workflow;
      state.params = e.params;
      state.trigger = e.trigger;
      state.startedAt = e.at;
      state.startedAtIso = new Date(e.at).toISOString();
      if (e.commit !== undefined) state.commit = e.commit;
      if (e.deadline !== undefined) state.deadline = e.deadline;
      for (const r of plan.mainRoots) makeReady(state, plan, r);
      return true;
    case 'task.ready': {
      const g = state.groups.get(e.task);
      if (g === undefined || g.status !== 'pending' || !state.ready.has(g.name)) return false;
      state.ready.delete(g.name);
      addPlainInstance(state, g);
      return true;
    }
    case 'task.expanded': {
      const g = state.groups.get(e.task);
      if (g === undefined || g.expanded || g.status !== 'pending') return false;
      g.expanded = true;
      g.status = 'running';
      state.ready.delete(g.name);
      e.items.forEach((item, index) => {
        const key = `${g.name}[${index}]`;
        g.instances.push(key);
        state.instances.set(key, newInstance(key, g.name, 'task', index, item));
        state.runnable.add(key);
      });
      if (e.items.length === 0) finishGroup(state, plan, g, 'succeeded');
      return true;
    }
    case 'task.queued': {
      let inst = state.instances.get(e.task);
      if (inst === undefined) {
        const g = state.groups.get(e.task);
        if (g === undefined || g.status !== 'pending' || e.attempt !== 1) return false;
        inst = newInstance(g.name, g.name, 'task');
        state.instances.set(inst.key, inst);
        g.instances.push(inst.key);
        g.status = 'running';
        state.ready.delete(g.name);
      }
      if (isTaskDone(inst.status) || e.attempt !== inst.attempt + 1 || inst.status === 'queued' || inst.status === 'running') return false;
      inst.attempt = e.attempt;
      inst.status = 'queued';
      const group = state.groups.get(inst.task);
      if (group !== undefined && group.status === 'pending' && inst.kind === 'task') group.status = 'running';
      inst.attempts.push({ attempt: e.attempt, queuedAt: e.at, status: 'queued' });
      delete inst.retryAt;
      state.runnable.delete(inst.key);
      state.retrying.delete(inst.key);
      state.active.add(inst.key);
      for (const b of bucketsOf(plan, inst)) state.activeByBucket.set(b, (state.activeByBucket.get(b) ?? 0) + 1);
      return true;
    }
    case 'task.pending': {
      const inst = current(state, e.task, e.attempt);
      if (inst === undefined || inst.status !== 'queued') return false;
      inst.pendingReason = e.reason;
      return true;
    }
    case 'task.started': {
      const inst = current(state, e.task, e.attempt);
      if (inst === undefined || inst.status !== 'queued') return false;
      delete inst.pendingReason;
      inst.status = 'running';
      inst.startedAt ??= e.at;
      last(inst).startedAt = e.at;
      last(inst).status = 'running';
      return true;
    }
    case 'task.heartbeat': {
      const inst = current(state, e.task, e.attempt);
      if (inst === undefined || (inst.status !== 'running' && inst.status !== 'queued')) return false;
      inst.lastHeartbeat = e.at;
      return true;
    }
    case 'task.log':
      // Logs change no state, but belong in the record while the attempt is live.
      return state.instances.get(e.task)?.attempt === e.attempt;
    case 'task.succeeded': {
      const inst = current(state, e.task, e.attempt);
      if (inst === undefined || (inst.status !== 'running' && inst.status !== 'queued')) return false;
      release(state, plan, inst);
      inst.status = 'succeeded';
      inst.outputs = e.outputs;
      if (e.exitCode !== undefined) inst.exitCode = e.exitCode;
      inst.startedAt ??= e.startedAt ?? e.at;
      inst.finishedAt = e.at;
      if (e.startedAt !== undefined) last(inst).startedAt ??= e.startedAt;
      Object.assign(last(inst), { status: 'succeeded', finishedAt: e.at }, e.exitCode !== undefined ? { exitCode: e.exitCode } : {});
      const key = plan.tasks.get(inst.task)?.breakerKey;
      const b = key !== undefined ? state.breakers.get(key) : undefined;
      // A success resets the failure count; after the breaker opened it is the probe that
      // closes it, which the scheduler records as breaker.closed.
      if (b?.openUntil !== undefined) b.probeSucceeded = true;
      else if (key !== undefined) state.breakers.delete(key);
      instanceDone(state, plan, inst);
      return true;
    }
    case 'task.failed': {
      const inst = current(state, e.task, e.attempt);
      if (inst === undefined || (inst.status !== 'running' && inst.status !== 'queued')) return false;
      release(state, plan, inst);
      const t = plan.tasks.get(inst.task)!;
      const attempts = inst.kind === 'compensate' ? compensateAttempts(t) : t.retry.attempts;
      const lost = e.lost === true;
      const retry = e.retryable && (lost || e.attempt < attempts) && state.phase !== 'done' && !(inst.kind === 'task' && state.phase !== 'main' && !t.onFailure);
      if (lost) inst.lost = true;
      else delete inst.lost;
      inst.error = e.error;
      if (e.exitCode !== undefined) inst.exitCode = e.exitCode;
      if (e.startedAt !== undefined) {
        inst.startedAt ??= e.startedAt;
        last(inst).startedAt ??= e.startedAt;
      }
      Object.assign(last(inst), { status: 'failed', finishedAt: e.at, error: e.error }, e.exitCode !== undefined ? { exitCode: e.exitCode } : {});
      const b = state.breakers.get(t.breakerKey) ?? { failures: 0 };
      b.failures++;
      state.breakers.set(t.breakerKey, b);
      if (retry) {
        inst.status = 'retrying';
        state.retrying.add(inst.key);
      } else {
        inst.status = 'failed';
        inst.finishedAt = e.at;
        instanceDone(state, plan, inst);
      }
      return true;
    }
    case 'task.retry-scheduled': {
      const inst = state.instances.get(e.task);
      if (inst === undefined || inst.status !== 'retrying' || e.attempt !== inst.attempt + 1) return false;
      inst.retryAt = e.retryAt;
      return true;
    }
    case 'task.skipped': {
      const inst = state.instances.get(e.task);
      if (inst !== undefined) {
        if (inst.status !== 'pending' && inst.status !== 'retrying') return false;
        state.runnable.delete(inst.key);
        state.retrying.delete(inst.key);
        inst.status = 'skipped';
        inst.error = e.reason;
        inst.finishedAt = e.at;
        const owner = state.groups.get(inst.task);
        if (owner !== undefined && !owner.expanded) owner.reason ??= e.reason;
        instanceDone(state, plan, inst);
        return true;
      }
      const g = state.groups.get(e.task);
      if (g === undefined || g.status !== 'pending') return false;
      state.ready.delete(g.name);
      state.blocked.delete(g.name);
      g.reason = e.reason;
      finishGroup(state, plan, g, 'skipped');
      return true;
    }
    case 'task.cancelled': {
      const inst = state.instances.get(e.task);
      if (inst === undefined || isTaskDone(inst.status) || e.attempt !== inst.attempt) return false;
      if (state.active.has(inst.key)) release(state, plan, inst);
      state.runnable.delete(inst.key);
      state.retrying.delete(inst.key);
      state.waitingApprovals.delete(inst.key);
      inst.status = 'cancelled';
      inst.error = e.reason;
      inst.finishedAt = e.at;
      if (inst.attempts.length > 0) Object.assign(last(inst), { status: 'cancelled', finishedAt: e.at });
      instanceDone(state, plan, inst);
      return true;
    }
    case 'approval.requested': {
      const g = state.groups.get(e.task);
      if (g === undefined || g.status !== 'pending') return false;
      const inst = newInstance(g.name, g.name, 'task');
      inst.status = 'waiting';
      inst.attempt = 1;
      inst.attempts.push({ attempt: 1, queuedAt: e.at, status: 'waiting' });
      inst.approval = { requestedAt: e.at, ...(e.timeoutAt !== undefined ? { timeoutAt: e.timeoutAt } : {}) };
      state.instances.set(inst.key, inst);
      g.instances.push(inst.key);
      g.status = 'running';
      state.ready.delete(g.name);
      state.waitingApprovals.add(inst.key);
      return true;
    }
    case 'approval.granted':
    case 'approval.rejected': {
      const inst = state.instances.get(e.task);
      if (inst === undefined || inst.status !== 'waiting') return false;
      state.waitingApprovals.delete(inst.key);
      inst.approval = { ...inst.approval!, by: e.by };
      inst.finishedAt = e.at;
      if (e.type === 'approval.granted') {
        inst.status = 'succeeded';
        inst.outputs = { approvedBy: e.by };
      } else {
        inst.status = 'failed';
        inst.error = `rejected by ${e.by}${e.reason !== undefined ? `: ${e.reason}` : ''}`;
      }
      Object.assign(last(inst), { status: inst.status, finishedAt: e.at });
      instanceDone(state, plan, inst);
      return true;
    }
    case 'compensation.started':
      return true;
    case 'compensation.finished': {
      const key = state.compensations[state.compensationIndex];
      if (state.phase !== 'compensating' || key !== e.task) return false;
      state.compensationIndex++;
      if (state.compensationIndex >= state.compensations.length) enterOnFailure(state, plan);
      return true;
    }
    case 'breaker.opened': {
      const b = state.breakers.get(e.key) ?? { failures: 0 };
      b.openUntil = e.until;
      b.failuresAtOpen = b.failures;
      state.breakers.set(e.key, b);
      return true;
    }
    case 'breaker.closed':
      state.breakers.delete(e.key);
      return true;
    case 'run.failing':
      if (state.phase !== 'main') return false;
      state.failureReason ??= e.reason;
      enterCompensation(state, plan);
      return true;
    case 'run.paused':
      if (state.status === 'running') state.status = 'paused';
      return true;
    case 'run.resumed':
      if (state.status === 'paused') state.status = 'running';
      return true;
    case 'run.cancelled':
      state.status = 'cancelled';
      state.cancelReason = e.reason ?? `cancelled by ${e.by}`;
      state.finishedAt = e.at;
      state.phase = 'done';
      for (const inst of state.instances.values()) {
        if (!isTaskDone(inst.status)) {
          inst.status = 'cancelled';
          inst.finishedAt = e.at;
        }
      }
      for (const g of state.groups.values()) if (!isTaskDone(g.status)) g.status = 'cancelled';
      state.active.clear();
      state.runnable.clear();
      state.retrying.clear();
      state.waitingApprovals.clear();
      return true;
    case 'run.succeeded':
      state.status = 'succeeded';
      state.finishedAt = e.at;
      state.phase = 'done';
      return true;
    case 'run.failed':
      state.status = 'failed';
      state.failureReason ??= e.reason;
      state.finishedAt = e.at;
      state.phase = 'done';
      return true;
    case 'checkpoint':
      return false;
  }
}

/** Needs met: a plain task goes straight to the runnable queue; anything to decide goes to `ready`. */
function makeReady(state: RunState, plan: RunPlan, name: string): void {
  const t = plan.tasks.get(name);
  const g = state.groups.get(name);
  if (t === undefined || g === undefined || g.status !== 'pending') return;
  if (t.spec.when !== undefined || t.spec.forEach !== undefined || t.kind === 'approval') state.ready.add(name);
  else {
    state.ready.delete(name);
    addPlainInstance(state, g);
  }
}

function addPlainInstance(state: RunState, g: GroupState): void {
  if (g.instances.length > 0) return;
  const inst = newInstance(g.name, g.name, 'task');
  state.instances.set(inst.key, inst);
  g.instances.push(inst.key);
  state.runnable.add(inst.key);
}

function newInstance(key: string, task: string, kind: 'task' | 'compensate', index?: number, item?: unknown): InstanceState {
  const inst: InstanceState = { key, task, kind, status: 'pending', attempt: 0, attempts: [], outputs: {} };
  if (index !== undefined) inst.index = index;
  if (item !== undefined) inst.item = item;
  return inst;
}

function current(state: RunState, key: string, attempt: number): InstanceState | undefined {
  const inst = state.instances.get(key);
  return inst !== undefined && inst.attempt === attempt ? inst : undefined;
}

function last(inst: InstanceState): InstanceState['attempts'][number] {
  return inst.attempts[inst.attempts.length - 1]!;
}

function release(state: RunState, plan: RunPlan, inst: InstanceState): void {
  if (!state.active.delete(inst.key)) return;
  for (const b of bucketsOf(plan, inst)) state.activeByBucket.set(b, (state.activeByBucket.get(b) ?? 1) - 1);
}

function compensateAttempts(t: PlannedTask): number {
  return t.spec.compensate?.retry?.attempts ?? 1;
}

function instanceDone(state: RunState, plan: RunPlan, inst: InstanceState): void {
  if (inst.kind === 'compensate') return;
  const g = state.groups.get(inst.task);
  if (g === undefined) return;
  g.done++;
  if (inst.status === 'failed') g.failed++;
  if (inst.status === 'cancelled') g.cancelled++;
  if (!g.expanded && g.instances.length === 1) {
    finishGroup(state, plan, g, inst.status === 'succeeded' ? 'succeeded' : inst.status);
  } else if (g.expanded && g.done === g.instances.length) {
    finishGroup(state, plan, g, g.failed > 0 ? 'failed' : g.cancelled > 0 ? 'cancelled' : 'succeeded');
  }
}

function finishGroup(state: RunState, plan: RunPlan, g: GroupState, status: GroupState['status']): void {
  g.status = status;
  if (g.onFailure) state.failureDone++;
  else state.mainDone++;
  if (status === 'failed' && !g.onFailure && state.failureReason === undefined) {
    const inst = g.instances.map((k) => state.instances.get(k)).find((i) => i?.status === 'failed');
    state.failureReason = `task '${g.name}' failed${inst?.error !== undefined ? `: ${inst.error}` : ''}`;
  }
  for (const d of plan.tasks.get(g.name)?.dependents ?? []) {
    const dg = state.groups.get(d);
    if (dg === undefined || dg.status !== 'pending') continue;
    if (status === 'succeeded') {
      dg.remainingNeeds--;
      if (dg.remainingNeeds === 0 && !state.blocked.has(d) && (state.phase === 'main' ? !dg.onFailure : dg.onFailure)) makeReady(state, plan, d);
    } else {
      dg.reason ??= `'${g.name}' ${status === 'skipped' ? 'was skipped' : status}`;
      state.ready.delete(d);
      state.blocked.add(d);
    }
  }
}

function enterCompensation(state: RunState, plan: RunPlan): void {
  state.phase = 'compensating';
  const done = [...state.instances.values()].filter((i) => i.kind === 'task' && i.status === 'succeeded' && plan.tasks.get(i.task)?.spec.compensate !== undefined && !plan.tasks.get(i.task)!.onFailure);
  done.sort((a, b) => plan.tasks.get(b.task)!.topoIndex - plan.tasks.get(a.task)!.topoIndex || (b.index ?? 0) - (a.index ?? 0));
  for (const i of done) {
    const key = `${i.key}:compensate`;
    const c = newInstance(key, i.task, 'compensate', i.index, i.item);
    state.instances.set(key, c);
    state.compensations.push(key);
  }
  if (state.compensations.length === 0) enterOnFailure(state, plan);
}

function enterOnFailure(state: RunState, plan: RunPlan): void {
  state.phase = 'onFailure';
  for (const r of plan.failureRoots) makeReady(state, plan, r);
}
