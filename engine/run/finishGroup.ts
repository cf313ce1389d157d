import type { RunPlan } from './RunPlan.js';
import type { GroupState, InstanceState, RunState } from './RunState.js';

/**
 * How a run moves forward when something ends: an instance ends, its group may end, and the
 * group's dependents become ready or blocked; a failing run enters its compensation and
 * onFailure phases. Shared by the reducer's event families (reduceRun), which stay free of
 * this bookkeeping.
 */

/**
 * A group reached its end: counts it, keeps the first failure as the run's reason, and tells
 * each dependent that one need ended (ready once all succeeded, blocked by any other end).
 */
export function finishGroup(state: RunState, plan: RunPlan, g: GroupState, status: GroupState['status']): void {
  g.status = status;
  if (g.onFailure) state.failureDone++;
  else if (g.finally) state.finallyDone++;
  else state.mainDone++;
  if (status === 'failed' && !g.onFailure) {
    const inst = g.instances.map((k) => state.instances.get(k)).find((i) => i?.status === 'failed');
    const reason = `${g.finally ? 'finally ' : ''}task '${g.name}' failed${inst?.error !== undefined ? `: ${inst.error}` : ''}`;
    if (g.finally) state.finallyFailure ??= reason;
    else state.failureReason ??= reason;
  }
  const t = plan.tasks.get(g.name);
  // What the status functions of tasks below this one will see (GitHub Actions looks at
  // every ancestor, not only the direct needs).
  const needs = (t?.needs ?? []).map((n) => state.groups.get(n)).filter((n) => n !== undefined);
  const own = status === 'succeeded' ? undefined : `'${g.name}' ${status === 'skipped' ? 'was skipped' : status}`;
  const notSucceeded = own ?? needs.find((n) => n.notSucceeded !== undefined)?.notSucceeded;
  const failedUpstream = status === 'failed' ? g.name : needs.find((n) => n.failedUpstream !== undefined)?.failedUpstream;
  if (notSucceeded !== undefined) g.notSucceeded = notSucceeded;
  if (failedUpstream !== undefined) g.failedUpstream = failedUpstream;
  for (const d of t?.dependents ?? []) {
    const dg = state.groups.get(d);
    if (dg === undefined || dg.status !== 'pending') continue;
    if (plan.tasks.get(d)?.statusCheck === true) {
      // Its `when` decides, once every need has ended, however they ended.
      dg.remainingNeeds--;
      if (dg.remainingNeeds === 0 && inPhase(state, dg)) makeReady(state, plan, d);
    } else if (notSucceeded === undefined) {
      dg.remainingNeeds--;
      if (dg.remainingNeeds === 0 && !state.blocked.has(d) && inPhase(state, dg)) makeReady(state, plan, d);
    } else {
      // The implied success() is false: skipped without looking at its `when`.
      dg.reason ??= own ?? `${notSucceeded} (before '${g.name}')`;
      state.ready.delete(d);
      state.blocked.add(d);
    }
  }
}

/** Whether the group's tasks run in the run's current phase (each group is a DAG of its own). */
export function inPhase(state: RunState, g: GroupState): boolean {
  return g.finally ? state.phase === 'finally' : g.onFailure ? state.phase === 'onFailure' : state.phase === 'main';
}

/** An instance of a task ended: its group ends with it (plain task) or with its last item (forEach). */
export function instanceDone(state: RunState, plan: RunPlan, inst: InstanceState): void {
  if (inst.kind === 'compensate') return;
  const g = state.groups.get(inst.task);
  if (g === undefined) return;
  g.done++;
  if (inst.status === 'failed') g.failed++;
  if (inst.status === 'failed' && !g.onFailure && !g.finally) state.failures.push({ task: inst.key, error: inst.error ?? '' });
  if (inst.status === 'cancelled') g.cancelled++;
  if (!g.expanded && g.instances.length === 1) {
    finishGroup(state, plan, g, inst.status === 'succeeded' ? 'succeeded' : inst.status);
  } else if (g.expanded && g.done === g.instances.length) {
    finishGroup(state, plan, g, g.failed > 0 ? 'failed' : g.cancelled > 0 ? 'cancelled' : 'succeeded');
  }
}

/** Needs met: a plain task goes straight to the runnable queue; anything to decide goes to `ready`. */
export function makeReady(state: RunState, plan: RunPlan, name: string): void {
  const t = plan.tasks.get(name);
  const g = state.groups.get(name);
  if (t === undefined || g === undefined || g.status !== 'pending') return;
  if (t.spec.when !== undefined || t.spec.forEach !== undefined || t.kind === 'approval') state.ready.add(name);
  else {
    state.ready.delete(name);
    addPlainInstance(state, g);
  }
}

/** The one instance of a task that neither fans out nor waits for a person. */
export function addPlainInstance(state: RunState, g: GroupState): void {
  if (g.instances.length > 0) return;
  const inst = newInstance(g.name, g.name, 'task');
  state.instances.set(inst.key, inst);
  g.instances.push(inst.key);
  enqueueInstance(state, inst);
}

/**
 * A new instance waits for capacity (runnable), or, in a retry that carries it over from the
 * run it retries, for the scheduler to record it as reused. A forEach item is carried over
 * only if it is the same item at the same index as before: a changed list runs it again.
 */
export function enqueueInstance(state: RunState, inst: InstanceState): void {
  const earlier = state.reuse.size > 0 ? state.reuse.get(inst.key) : undefined;
  if (earlier !== undefined && JSON.stringify(earlier.item) === JSON.stringify(inst.item)) state.reusable.add(inst.key);
  else state.runnable.add(inst.key);
}

export function newInstance(key: string, task: string, kind: 'task' | 'compensate', index?: number, item?: unknown): InstanceState {
  const inst: InstanceState = { key, task, kind, status: 'pending', attempt: 0, attempts: [], outputs: {} };
  if (index !== undefined) inst.index = index;
  if (item !== undefined) inst.item = item;
  return inst;
}

/**
 * The run is failing: the succeeded instances that declare a compensation are undone in
 * reverse topological order (saga), then the onFailure tasks run.
 */
export function enterCompensation(state: RunState, plan: RunPlan): void {
  state.phase = 'compensating';
  const done = [...state.instances.values()].filter((i) => {
    const t = plan.tasks.get(i.task);
    return i.kind === 'task' && i.status === 'succeeded' && t?.spec.compensate !== undefined && !t.onFailure && !t.finally;
  });
  done.sort((a, b) => plan.tasks.get(b.task)!.topoIndex - plan.tasks.get(a.task)!.topoIndex || (b.index ?? 0) - (a.index ?? 0));
  for (const i of done) {
    const key = `${i.key}:compensate`;
    const c = newInstance(key, i.task, 'compensate', i.index, i.item);
    state.instances.set(key, c);
    state.compensations.push(key);
  }
  if (state.compensations.length === 0) enterOnFailure(state, plan);
}

/** Compensation is over (or there was none): the onFailure tasks' roots become ready. */
export function enterOnFailure(state: RunState, plan: RunPlan): void {
  state.phase = 'onFailure';
  for (const r of plan.failureRoots) makeReady(state, plan, r);
}

/**
 * The main tasks (and any compensation and onFailure tasks) are over, or the run was
 * cancelled: the finally tasks' roots become ready. `state.outcome` is already set.
 */
export function enterFinally(state: RunState, plan: RunPlan): void {
  state.phase = 'finally';
  for (const r of plan.finallyRoots) makeReady(state, plan, r);
}
