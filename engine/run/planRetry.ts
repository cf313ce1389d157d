import { CaravanError } from '../errors/CaravanError.js';
import type { ReusedOutcome, RunEvent, TaskStatus } from './RunEvent.js';
import type { RunPlan } from './RunPlan.js';
import type { RunState } from './RunState.js';
import { applyRunEvent, initialRunState } from './reduceRun.js';

/** Why a task of the earlier run runs again in its retry. */
export type RerunReason =
  | { why: 'failed' | 'cancelled' | 'not-started' }
  /** Skipped because something failed or the run was stopping (not because its own `when` was false). */
  | { why: 'skipped'; reason: string }
  /** Its effect was undone by its saga compensation when the earlier run failed. */
  | { why: 'compensated' }
  /** Named by `--from`. */
  | { why: 'from' }
  /** Downstream of a task that runs again: its inputs may change. */
  | { why: 'downstream'; of: string };

export interface RetrySelection {
  /** The instances carried over, by instance key (`name`, or `name[i]` for a forEach item). */
  reuse: Record<string, ReusedOutcome>;
  /** Main tasks that run again, in the workflow's order, each with why. */
  rerun: Array<{ task: string } & RerunReason>;
  /**
   * Main tasks skipped because their `when` was false in a healthy run: decided again (with
   * the same inputs), and they do not make their dependants run again.
   */
  redecided: string[];
  /** How the earlier run ended. */
  status: RunState['status'];
}

export interface RetryOptions {
  /** Rerun this task and everything downstream of it, even if they succeeded. */
  from?: string;
}

/**
 * Decides what a retry of a finished run reuses and what it runs again. Pure: it replays the
 * earlier run's events through the reducer and reads the DAG.
 *
 * A main task runs again when it failed, was cancelled, never started, was skipped because of
 * a failure (or a cancel or the deadline), had its effect undone by compensation, or is the
 * `from` task; so does everything downstream of such a task, since its inputs may change
 * (Argo's `retry` resets a node's descendants the same way). Every other main task that
 * succeeded is carried over with its outputs. A forEach task that runs again because some of
 * its own items failed (and not because of a task upstream, nor `from`) carries over the
 * items that succeeded; the scheduler reuses one only if the new expansion has the same item
 * at that index. An approval gate is carried over like any task: approved before and nothing
 * upstream runs again. onFailure and finally tasks are never carried over: they run whenever
 * their phase comes.
 */
export function planRetry(plan: RunPlan, events: readonly RunEvent[], options: RetryOptions = {}): RetrySelection {
  const { state, healthySkips } = replay(plan, events);
  const main = [...plan.tasks.values()].filter((t) => !t.onFailure && !t.finally).sort((a, b) => a.topoIndex - b.topoIndex);
  if (options.from !== undefined && !main.some((t) => t.name === options.from)) {
    const other = plan.tasks.get(options.from);
    // Quoted back to whoever asked (a terminal, an API client): never more than a name's length.
    const named = options.from.slice(0, 80);
    const why = other !== undefined ? `'${named}' is ${other.finally ? 'a finally' : 'an onFailure'} task, which runs again in every retry when its phase comes` : `no task '${named}'`;
    throw new CaravanError('TASK_NOT_FOUND', `--from: ${why}; tasks of ${state.workflow}: ${main.map((t) => t.name).join(', ')}`, { data: { task: named, tasks: main.map((t) => t.name) } });
  }
  const compensated = new Set<string>();
  for (const key of state.compensations) {
    const c = state.instances.get(key);
    if (c !== undefined && c.status !== 'pending') compensated.add(c.task);
  }

  const reasons = new Map<string, RerunReason>();
  const redecided: string[] = [];
  for (const t of main) {
    const g = state.groups.get(t.name)!;
    const own = ownReason(t.name, g.status, g.reason, state, compensated, healthySkips);
    if (options.from === t.name) reasons.set(t.name, { why: 'from' });
    else if (own !== undefined) reasons.set(t.name, own);
    else if (g.status === 'skipped') redecided.push(t.name);
  }
  if (reasons.size === 0 && state.status === 'succeeded') {
    throw new CaravanError('NOTHING_TO_RETRY', `run ${state.runId} of ${state.workflow} succeeded: nothing failed, so nothing to retry (rerun a task and what follows it with --from <task>; tasks: ${main.map((t) => t.name).join(', ')})`, { data: { runId: state.runId, status: state.status } });
  }
  // Downstream of a task that runs again, in topological order so that `of` names the nearest.
  const tainted = new Map<string, string>();
  for (const t of main) {
    if (!reasons.has(t.name) && !tainted.has(t.name)) continue;
    for (const d of t.dependents) if (!tainted.has(d)) tainted.set(d, tainted.get(t.name) ?? t.name);
  }
  const rerun: RetrySelection['rerun'] = [];
  const reuse: Record<string, ReusedOutcome> = {};
  for (const t of main) {
    const upstream = tainted.get(t.name);
    const reason = reasons.get(t.name) ?? (upstream !== undefined ? { why: 'downstream' as const, of: upstream } : undefined);
    if (reason !== undefined) {
      rerun.push({ task: t.name, ...reason });
      // Its own items failed, nothing above it changes: the items that succeeded stand.
      if (upstream === undefined && (reason.why === 'failed' || reason.why === 'cancelled' || reason.why === 'skipped') && t.spec.forEach !== undefined) carryOver(state, t.name, reuse);
      continue;
    }
    if (state.groups.get(t.name)!.status === 'succeeded') carryOver(state, t.name, reuse);
  }
  return { reuse, rerun, redecided: redecided.filter((n) => !tainted.has(n)), status: state.status };
}

/** Why a task runs again because of how it itself ended; undefined if it need not. */
function ownReason(name: string, status: TaskStatus, reason: string | undefined, state: RunState, compensated: Set<string>, healthySkips: Set<string>): RerunReason | undefined {
  if (compensated.has(name)) return { why: 'compensated' };
  switch (status) {
    case 'succeeded': {
      // A forEach whose items were skipped as the run stopped ends "succeeded" without them.
      const all = state.groups.get(name)!.instances.every((k) => state.instances.get(k)?.status === 'succeeded');
      return all ? undefined : { why: 'skipped', reason: 'some of its items were skipped' };
    }
    case 'failed':
      return { why: 'failed' };
    case 'cancelled':
      return { why: 'cancelled' };
    case 'skipped':
      return healthySkips.has(name) ? undefined : { why: 'skipped', reason: reason ?? 'skipped' };
    default:
      return { why: 'not-started' };
  }
}

/** The succeeded instances of a task, as the retry reuses them. */
function carryOver(state: RunState, name: string, into: Record<string, ReusedOutcome>): void {
  for (const key of state.groups.get(name)!.instances) {
    const i = state.instances.get(key);
    if (i === undefined || i.status !== 'succeeded') continue;
    const approvedBy = i.approval?.by;
    into[key] = { outputs: { ...i.outputs }, ...(i.item !== undefined ? { item: i.item } : {}), ...(i.exitCode !== undefined ? { exitCode: i.exitCode } : {}), ...(approvedBy !== undefined ? { approvedBy } : {}) };
  }
}

/**
 * The earlier run's final state, and the tasks skipped while nothing had gone wrong: no
 * failure, no cancel, before the deadline. Only a false `when` (or a need skipped that way)
 * skips a task then, and deciding it again with the same inputs gives the same answer.
 */
function replay(plan: RunPlan, events: readonly RunEvent[]): { state: RunState; healthySkips: Set<string> } {
  const started = events.find((e) => e.type === 'run.started');
  const state = initialRunState(plan, started?.runId ?? '');
  const healthySkips = new Set<string>();
  for (const e of events) {
    const healthy = state.phase === 'main' && state.failureReason === undefined && state.outcome === undefined && state.status !== 'cancelled' && (state.deadline === undefined || e.at < state.deadline);
    const group = e.type === 'task.skipped' ? state.groups.get(e.task) : undefined;
    if (applyRunEvent(state, plan, e) && healthy && group !== undefined && group.failedUpstream === undefined) healthySkips.add(group.name);
  }
  if (started === undefined) throw new CaravanError('RUN_NOT_FOUND', 'the run has no run.started event to retry from', { data: {} });
  return { state, healthySkips };
}
