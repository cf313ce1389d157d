import type { StatusValues } from './evaluate.js';
import type { PlannedTask, RunPlan } from './RunPlan.js';
import type { RunState } from './RunState.js';

/** A fail-fast run after its first failure: only tasks that ask for it still start. */
export function isStopping(state: RunState, plan: RunPlan): boolean {
  return state.phase === 'main' && state.failureReason !== undefined && plan.failFast;
}

/**
 * What the status functions return in a task's `when`, as GitHub Actions defines them for
 * jobs: success() when every task it needs, directly or not, succeeded (a skipped one counts
 * against it); failure() when one of them failed; cancelled() when the run was cancelled. A
 * fail-fast run that is failing makes success() false everywhere, as a failed step does for
 * the later steps of an Actions job.
 */
export function statusValues(state: RunState, plan: RunPlan, t: PlannedTask): StatusValues {
  let success = !isStopping(state, plan);
  let failure = false;
  for (const n of t.needs) {
    const g = state.groups.get(n);
    if (g?.notSucceeded !== undefined) success = false;
    if (g?.failedUpstream !== undefined) failure = true;
  }
  return { success, failure, cancelled: state.status === 'cancelled' || state.outcome === 'cancelled' };
}
