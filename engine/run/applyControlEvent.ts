import { isTaskDone, type RunEvent } from './RunEvent.js';
import type { RunPlan } from './RunPlan.js';
import type { RunState } from './RunState.js';
import { lastAttempt } from './applyTaskEvent.js';
import { enterFinally, instanceDone, newInstance } from './finishGroup.js';

/** What people decide about a run: approval gates, pause, unpause and cancel. */
export type ControlEvent = Extract<RunEvent, { type: `approval.${string}` | 'run.paused' | 'run.resumed' | 'run.cancelling' | 'run.cancelled' }>;

/**
 * Applies one approval or control event (reduceRun's control family). A decision on a gate
 * that is not waiting changes nothing; pausing a paused run, or unpausing a running one, is
 * recorded but changes nothing either.
 */
export function applyControlEvent(state: RunState, plan: RunPlan, e: ControlEvent): boolean {
  switch (e.type) {
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
      Object.assign(lastAttempt(inst), { status: inst.status, finishedAt: e.at });
      instanceDone(state, plan, inst);
      return true;
    }
    case 'approval.refused':
      // Nothing changes: recorded only while the gate waits, so a refusal is never out of place.
      return state.instances.get(e.task)?.status === 'waiting';
    case 'run.paused':
      if (state.status === 'running') state.status = 'paused';
      return true;
    case 'run.resumed':
      if (state.status === 'paused') state.status = 'running';
      return true;
    case 'run.cancelling':
      // A second cancel stops the finally tasks too: the engine sends run.cancelled for it.
      if (plan.finallyRoots.length === 0 || state.phase === 'done' || state.outcome === 'cancelled') return false;
      state.cancelReason = e.reason ?? `cancelled by ${e.by}`;
      state.cancelledBy = e.by;
      state.outcome = 'cancelled';
      // A cancel outranks a pause: the finally tasks are what is left to do.
      if (state.status === 'paused') state.status = 'running';
      // Finally tasks already under way carry on; anything before them stops now.
      if (state.phase !== 'finally') {
        cancelOpen(state, e.at, false);
        enterFinally(state, plan);
      }
      return true;
    case 'run.cancelled':
      state.status = 'cancelled';
      state.cancelReason ??= e.reason ?? `cancelled by ${e.by}`;
      state.finishedAt = e.at;
      state.phase = 'done';
      cancelOpen(state, e.at, true);
      return true;
  }
}

/**
 * Everything still open ends at once: instances and groups are cancelled (the finally tasks
 * too, unless they are still to run), and nothing is left waiting to start or to be decided.
 * The engine stops the running attempts.
 */
function cancelOpen(state: RunState, at: number, withFinally: boolean): void {
  for (const inst of state.instances.values()) {
    if (!isTaskDone(inst.status)) {
      inst.status = 'cancelled';
      inst.finishedAt = at;
    }
  }
  for (const g of state.groups.values()) if (!isTaskDone(g.status) && (withFinally || !g.finally)) g.status = 'cancelled';
  state.active.clear();
  state.activeByBucket.clear();
  state.runnable.clear();
  state.reusable.clear();
  state.retrying.clear();
  state.waitingApprovals.clear();
  state.ready.clear();
  state.blocked.clear();
}
