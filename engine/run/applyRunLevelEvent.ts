import type { RunEvent } from './RunEvent.js';
import type { RunPlan } from './RunPlan.js';
import type { RunState } from './RunState.js';
import { enterCompensation, enterFinally, enterOnFailure, makeReady } from './finishGroup.js';

/**
 * Events about the run as a whole rather than one task: its start, its phases on the way to
 * failure (failing, compensation), its end, and the circuit breakers its tasks share.
 */
export type RunLevelEvent = Extract<RunEvent, { type: 'run.started' | 'run.failing' | 'run.finalizing' | 'run.succeeded' | 'run.failed' | `compensation.${string}` | `breaker.${string}` }>;

/**
 * Applies one run-level event (reduceRun's run family). The scheduler decides these; the
 * reducer only checks that each fits the phase the run is in.
 */
export function applyRunLevelEvent(state: RunState, plan: RunPlan, e: RunLevelEvent): boolean {
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
      if (e.retry !== undefined) {
        state.retryOf = e.retry.of;
        for (const [key, outcome] of Object.entries(e.retry.reuse)) state.reuse.set(key, outcome);
      }
      for (const r of plan.mainRoots) makeReady(state, plan, r);
      return true;
    case 'run.failing':
      if (state.phase !== 'main') return false;
      state.failureReason ??= e.reason;
      enterCompensation(state, plan);
      return true;
    case 'run.finalizing':
      if (plan.finallyRoots.length === 0 || (state.phase !== 'main' && state.phase !== 'onFailure')) return false;
      state.outcome = e.outcome;
      enterFinally(state, plan);
      return true;
    case 'compensation.started':
      return true;
    case 'compensation.finished': {
      // Compensations run one at a time, in order: only the current one can finish.
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
    case 'run.succeeded':
      state.status = 'succeeded';
      if (e.outputs !== undefined) state.outputs = e.outputs;
      state.finishedAt = e.at;
      state.phase = 'done';
      return true;
    case 'run.failed':
      state.status = 'failed';
      state.failureReason ??= e.reason;
      state.finishedAt = e.at;
      state.phase = 'done';
      return true;
  }
}
