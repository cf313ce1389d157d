import { expect } from 'vitest';
import { applyRunEvent, initialRunState } from '../../engine/run/reduceRun.js';
import type { RetryOrigin, RunEvent } from '../../engine/run/RunEvent.js';
import { buildRunPlan, type RunPlan } from '../../engine/run/RunPlan.js';
import type { RunState } from '../../engine/run/RunState.js';
import { scheduleRun, type Dispatch } from '../../engine/run/scheduleRun.js';
import { validateText } from '../../engine/spec/validateWorkflows.js';
import type { FailureKind, Workflow } from '../../engine/spec/Workflow.js';
import { workflow } from '../harness/gitRepo.js';

export const T0 = Date.UTC(2026, 10, 21, 12, 0, 0);

export interface Outcome {
  ok: boolean;
  outputs?: Record<string, string>;
  error?: string;
  retryable?: boolean;
  exitCode?: number;
  /** What failed (retry.on); left out, as a plugin agent may, the reducer reads an exit failure. */
  failure?: FailureKind;
  durationMs?: number;
  /** Never report back (a lost agent). */
  hang?: boolean;
}

export interface Control {
  at: number;
  event: (state: RunState) => RunEvent | undefined;
}

export interface Simulation {
  plan: RunPlan;
  state: RunState;
  events: RunEvent[];
  dispatches: Array<Dispatch & { at: number }>;
  cancels: Array<{ instance: string; attempt: number; at: number }>;
  /** Most attempts active at once. */
  peak: number;
}

export function workflowOf(spec: string, name = 'sim'): Workflow {
  const r = validateText('sim.yaml', workflow(name, spec));
  expect(r.diagnostics.filter((d) => d.severity === 'error')).toEqual([]);
  return r.workflow!;
}

/**
 * Drives the reducer and the scheduler alone, as a discrete-event simulation on a fake
 * timeline: no engine, no timers, no sleeps. `behave` decides each attempt's outcome.
 */
export function simulate(spec: string, behave: (d: Dispatch) => Outcome, options: { params?: Record<string, unknown>; maxParallel?: number; controls?: Control[]; limit?: number; retry?: RetryOrigin } = {}): Simulation {
  const plan = buildRunPlan(workflowOf(spec), { maxParallel: options.maxParallel ?? 100 });
  const state = initialRunState(plan, 'run-1');
  const events: RunEvent[] = [];
  const dispatches: Simulation['dispatches'] = [];
  const cancels: Simulation['cancels'] = [];
  let pending: Array<{ at: number; event: RunEvent }> = [];
  const controls = [...(options.controls ?? [])].sort((a, b) => a.at - b.at);
  let now = T0;
  let peak = 0;
  const apply = (e: RunEvent): void => {
    if (applyRunEvent(state, plan, e)) events.push(e);
    peak = Math.max(peak, state.active.size);
  };
  const params: Record<string, unknown> = {};
  for (const [k, p] of Object.entries(plan.workflow.spec.params ?? {})) if (p.default !== undefined) params[k] = p.default;
  apply({ runId: 'run-1', at: now, type: 'run.started', workflow: plan.workflow.metadata.name, params: { ...params, ...options.params }, trigger: 'test', ...(plan.deadlineMs !== undefined ? { deadline: now + plan.deadlineMs } : {}), ...(options.retry !== undefined ? { retry: options.retry } : {}) });
  for (let i = 0; i < (options.limit ?? 100_000); i++) {
    const d = scheduleRun(state, plan, now, { timerPass: true });
    for (const e of d.events) apply(e);
    for (const c of d.cancel) {
      cancels.push({ ...c, at: now });
      pending = pending.filter((p) => !('task' in p.event && p.event.task === c.instance && 'attempt' in p.event && p.event.attempt === c.attempt));
    }
    for (const x of d.dispatch) {
      dispatches.push({ ...x, at: now });
      const o = behave(x);
      const base = { runId: 'run-1', task: x.instance, attempt: x.attempt };
      pending.push({ at: now, event: { ...base, at: now, type: 'task.started' } });
      if (o.hang === true) continue;
      const end = now + (o.durationMs ?? 10);
      pending.push({ at: end, event: o.ok ? { ...base, at: end, type: 'task.succeeded', outputs: o.outputs ?? {} } : { ...base, at: end, type: 'task.failed', error: o.error ?? 'boom', retryable: o.retryable ?? true, ...(o.exitCode !== undefined ? { exitCode: o.exitCode } : {}), ...(o.failure !== undefined ? { failure: o.failure } : {}) } });
    }
    if (state.status === 'succeeded' || state.status === 'failed' || state.status === 'cancelled') break;
    if (d.events.length > 0 || d.dispatch.length > 0) continue;
    const next = Math.min(...pending.map((p) => p.at), d.wakeAt ?? Infinity, controls[0]?.at ?? Infinity, now + 1000);
    if (next === Infinity) break;
    now = Math.max(now, next);
    pending.sort((a, b) => a.at - b.at);
    while (pending.length > 0 && pending[0]!.at <= now) apply(pending.shift()!.event);
    while (controls.length > 0 && controls[0]!.at <= now) {
      const e = controls.shift()!.event(state);
      if (e !== undefined) apply(e);
    }
  }
  return { plan, state, events, dispatches, cancels, peak };
}

/** `type task` lines of the events, for readable order assertions. */
export function trace(sim: Simulation, types?: RunEvent['type'][]): string[] {
  return sim.events.filter((e) => types === undefined || types.includes(e.type)).map((e) => ('task' in e ? `${e.type} ${e.task}` : 'key' in e ? `${e.type} ${e.key}` : e.type));
}
