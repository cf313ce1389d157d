import { isFinal, type RunEvent } from './RunEvent.js';
import type { RunPlan } from './RunPlan.js';
import type { GroupState, RunState } from './RunState.js';
import { applyControlEvent } from './applyControlEvent.js';
import { applyRunLevelEvent } from './applyRunLevelEvent.js';
import { applyTaskEvent } from './applyTaskEvent.js';

export { bucketsOf } from './applyTaskEvent.js';

/** The empty state a run starts from; `run.started` fills it in. */
export function initialRunState(plan: RunPlan, runId: string): RunState {
  const groups = new Map<string, GroupState>();
  for (const t of plan.tasks.values()) {
    groups.set(t.name, { name: t.name, status: 'pending', onFailure: t.onFailure, finally: t.finally, remainingNeeds: t.needs.length, instances: [], expanded: false, done: 0, failed: 0, cancelled: 0 });
  }
  const failureTotal = [...plan.tasks.values()].filter((t) => t.onFailure).length;
  const finallyTotal = [...plan.tasks.values()].filter((t) => t.finally).length;
  return {
    runId,
    workflow: plan.workflow.metadata.name,
    params: {},
    secretParams: {},
    trigger: 'manual',
    reuse: new Map(),
    status: 'running',
    phase: 'main',
    startedAt: 0,
    startedAtIso: '',
    groups,
    instances: new Map(),
    ready: new Set(),
    blocked: new Set(),
    reusable: new Set(),
    runnable: new Set(),
    retrying: new Set(),
    active: new Set(),
    activeByBucket: new Map(),
    waitingApprovals: new Set(),
    breakers: new Map(),
    breakerOf: new Map([...plan.tasks.values()].filter((t) => t.breaker !== undefined).map((t) => [t.name, t.breaker!.key])),
    failures: [],
    compensations: [],
    compensationIndex: 0,
    mainTotal: plan.tasks.size - failureTotal - finallyTotal,
    mainDone: 0,
    failureTotal,
    failureDone: 0,
    finallyTotal,
    finallyDone: 0,
    seq: 0,
  };
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

/**
 * Hands the event to its family's reducer. The cases are spelt out rather than tested by
 * prefix so that TypeScript narrows each family's events and flags a new event type that no
 * family handles (the switch must stay exhaustive).
 */
function apply(state: RunState, plan: RunPlan, e: RunEvent): boolean {
  switch (e.type) {
    case 'task.ready':
    case 'task.expanded':
    case 'task.queued':
    case 'task.pending':
    case 'task.started':
    case 'task.heartbeat':
    case 'task.log':
    case 'task.succeeded':
    case 'task.failed':
    case 'task.retry-scheduled':
    case 'task.skipped':
    case 'task.cancelled':
    case 'task.reused':
      return applyTaskEvent(state, plan, e);
    case 'approval.requested':
    case 'approval.granted':
    case 'approval.rejected':
    case 'approval.refused':
    case 'run.paused':
    case 'run.resumed':
    case 'run.cancelling':
    case 'run.cancelled':
      return applyControlEvent(state, plan, e);
    case 'run.started':
    case 'run.failing':
    case 'run.finalizing':
    case 'compensation.started':
    case 'compensation.finished':
    case 'breaker.opened':
    case 'breaker.closed':
    case 'run.succeeded':
    case 'run.failed':
      return applyRunLevelEvent(state, plan, e);
    case 'checkpoint':
      return false;
  }
}
