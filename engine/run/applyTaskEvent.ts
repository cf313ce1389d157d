import { isTaskDone, type RunEvent } from './RunEvent.js';
import type { ExpressionContext } from './evaluate.js';
import type { RunPlan } from './RunPlan.js';
import { retryRefusal } from './retryPolicy.js';
import type { InstanceState, RunState } from './RunState.js';
import { addPlainInstance, enqueueInstance, finishGroup, inPhase, instanceDone, newInstance } from './finishGroup.js';

/** What happens to a task and its attempts: readiness, fan-out, queueing and the agents' reports. */
export type TaskEvent = Extract<RunEvent, { type: `task.${string}` }>;

/**
 * Applies one task or attempt event (reduceRun's task family). Reports for an attempt that is
 * not the instance's current one, or for an instance already finished, change nothing and
 * return false.
 */
export function applyTaskEvent(state: RunState, plan: RunPlan, e: TaskEvent): boolean {
  switch (e.type) {
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
        const inst = newInstance(key, g.name, 'task', index, item);
        state.instances.set(key, inst);
        enqueueInstance(state, inst);
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
      const inst = currentAttempt(state, e.task, e.attempt);
      if (inst === undefined || inst.status !== 'queued') return false;
      inst.pendingReason = e.reason;
      return true;
    }
    case 'task.started': {
      const inst = currentAttempt(state, e.task, e.attempt);
      if (inst === undefined || inst.status !== 'queued') return false;
      delete inst.pendingReason;
      inst.status = 'running';
      inst.startedAt ??= e.at;
      lastAttempt(inst).startedAt = e.at;
      lastAttempt(inst).status = 'running';
      return true;
    }
    case 'task.heartbeat': {
      const inst = currentAttempt(state, e.task, e.attempt);
      if (inst === undefined || (inst.status !== 'running' && inst.status !== 'queued')) return false;
      inst.lastHeartbeat = e.at;
      return true;
    }
    case 'task.log':
      // Logs change no state, but belong in the record while the attempt is live.
      return state.instances.get(e.task)?.attempt === e.attempt;
    case 'task.succeeded': {
      const inst = currentAttempt(state, e.task, e.attempt);
      if (inst === undefined || (inst.status !== 'running' && inst.status !== 'queued')) return false;
      releaseInstance(state, plan, inst);
      inst.status = 'succeeded';
      inst.outputs = e.outputs;
      if (e.exitCode !== undefined) inst.exitCode = e.exitCode;
      inst.startedAt ??= e.startedAt ?? e.at;
      inst.finishedAt = e.at;
      if (e.startedAt !== undefined) lastAttempt(inst).startedAt ??= e.startedAt;
      Object.assign(lastAttempt(inst), { status: 'succeeded', finishedAt: e.at }, e.exitCode !== undefined ? { exitCode: e.exitCode } : {});
      const key = inst.kind === 'task' ? plan.tasks.get(inst.task)?.breaker?.key : undefined;
      const b = key !== undefined ? state.breakers.get(key) : undefined;
      // A success resets the failure count; after the breaker opened it is the probe that
      // closes it, which the scheduler records as breaker.closed.
      if (b?.openUntil !== undefined) b.probeSucceeded = true;
      else if (key !== undefined) state.breakers.delete(key);
      instanceDone(state, plan, inst);
      return true;
    }
    case 'task.failed': {
      const inst = currentAttempt(state, e.task, e.attempt);
      if (inst === undefined || (inst.status !== 'running' && inst.status !== 'queued')) return false;
      releaseInstance(state, plan, inst);
      const t = plan.tasks.get(inst.task)!;
      const policy = inst.kind === 'compensate' ? t.compensateRetry : t.retry;
      const lost = e.lost === true;
      const group = state.groups.get(inst.task);
      const inBudget = e.attempt < policy.attempts;
      // A lost attempt is not the task's failure: it starts again whatever the policy says.
      const refusal = e.retryable && !lost && inBudget ? retryRefusal(policy, e, inst.attempts[0]?.queuedAt ?? e.at, () => retryContext(state, e.attempt)) : undefined;
      const retry = e.retryable && (lost || (inBudget && refusal === undefined)) && state.phase !== 'done' && !(inst.kind === 'task' && group !== undefined && !inPhase(state, group));
      if (lost) inst.lost = true;
      else delete inst.lost;
      inst.error = refusal !== undefined ? `${e.error} (not retried: ${refusal})` : e.error;
      if (e.code !== undefined) inst.errorCode = e.code;
      else delete inst.errorCode;
      if (e.exitCode !== undefined) inst.exitCode = e.exitCode;
      if (e.startedAt !== undefined) {
        inst.startedAt ??= e.startedAt;
        lastAttempt(inst).startedAt ??= e.startedAt;
      }
      Object.assign(lastAttempt(inst), { status: 'failed', finishedAt: e.at, error: e.error }, e.exitCode !== undefined ? { exitCode: e.exitCode } : {});
      // Only a task's own attempts count against its breaker; a compensation undoes, it is never held.
      if (t.breaker !== undefined && inst.kind === 'task') {
        const b = state.breakers.get(t.breaker.key) ?? { failures: 0 };
        b.failures++;
        state.breakers.set(t.breaker.key, b);
      }
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
        state.reusable.delete(inst.key);
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
    case 'task.reused': {
      let inst = state.instances.get(e.task);
      if (inst === undefined) {
        // An approval gate carried over: decided in place of asking again, so no instance yet.
        const g = state.groups.get(e.task);
        if (g === undefined || g.status !== 'pending' || !state.ready.has(g.name) || !state.reuse.has(g.name)) return false;
        state.ready.delete(g.name);
        inst = newInstance(g.name, g.name, 'task');
        state.instances.set(inst.key, inst);
        g.instances.push(inst.key);
        if (e.approvedBy !== undefined) inst.approval = { requestedAt: e.at, by: e.approvedBy };
      } else if (!state.reusable.delete(inst.key)) {
        return false;
      }
      inst.status = 'succeeded';
      inst.outputs = e.outputs;
      inst.reusedFrom = e.from;
      if (e.exitCode !== undefined) inst.exitCode = e.exitCode;
      inst.startedAt = e.at;
      inst.finishedAt = e.at;
      instanceDone(state, plan, inst);
      return true;
    }
    case 'task.cancelled': {
      const inst = state.instances.get(e.task);
      if (inst === undefined || isTaskDone(inst.status) || e.attempt !== inst.attempt) return false;
      if (state.active.has(inst.key)) releaseInstance(state, plan, inst);
      state.runnable.delete(inst.key);
      state.retrying.delete(inst.key);
      state.waitingApprovals.delete(inst.key);
      inst.status = 'cancelled';
      inst.error = e.reason;
      inst.finishedAt = e.at;
      if (inst.attempts.length > 0) Object.assign(lastAttempt(inst), { status: 'cancelled', finishedAt: e.at });
      instanceDone(state, plan, inst);
      return true;
    }
  }
}

/**
 * The buckets an instance counts against: its pool (capacity), its breaker (one probe at a
 * time while half-open) and its task (forEach parallelism).
 */
export function bucketsOf(plan: RunPlan, inst: InstanceState): string[] {
  const t = plan.tasks.get(inst.task);
  if (t === undefined) return [];
  if (inst.kind === 'compensate') return [t.capacityKey];
  const breaker = t.breaker?.key;
  return breaker !== undefined && breaker !== t.capacityKey ? [t.capacityKey, breaker, `task:${t.name}`] : [t.capacityKey, `task:${t.name}`];
}

/** What a `retry.when` reads besides the attempt: the params and the run's fixed facts. */
function retryContext(state: RunState, attempt: number): ExpressionContext {
  const secret = Object.keys(state.secretParams).length > 0;
  return {
    params: secret ? { ...state.params, ...state.secretParams } : state.params,
    tasks: {},
    run: { id: state.runId, workflow: state.workflow, commit: state.commit ?? '', trigger: state.trigger, startedAt: state.startedAtIso, attempt },
  };
}

/** The instance, if `attempt` is its current attempt: reports for older attempts are late. */
function currentAttempt(state: RunState, key: string, attempt: number): InstanceState | undefined {
  const inst = state.instances.get(key);
  return inst !== undefined && inst.attempt === attempt ? inst : undefined;
}

export function lastAttempt(inst: InstanceState): InstanceState['attempts'][number] {
  return inst.attempts[inst.attempts.length - 1]!;
}

/** The instance stops counting against the run's, its pool's and its task's capacity. */
function releaseInstance(state: RunState, plan: RunPlan, inst: InstanceState): void {
  if (!state.active.delete(inst.key)) return;
  for (const b of bucketsOf(plan, inst)) state.activeByBucket.set(b, (state.activeByBucket.get(b) ?? 1) - 1);
}
