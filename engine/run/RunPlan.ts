import { buildDag } from '../graph/buildDag.js';
import { collectReferences, findTemplates, parseExpression, statusFunctionsIn } from '../spec/parseExpression.js';
import { parseDuration } from '../spec/parseDuration.js';
import { resolveCircuitBreaker, type ResolvedBreaker } from '../spec/resolveCircuitBreaker.js';
import type { TaskSpec, Workflow } from '../spec/Workflow.js';
import { DEFAULT_RETRY, resolveRetry, type ResolvedRetry } from './retryPolicy.js';

export type TaskKind = 'agent' | 'pool' | 'approval' | 'workflow';

export type { ResolvedRetry };

export interface PlannedTask {
  name: string;
  spec: TaskSpec;
  kind: TaskKind;
  needs: string[];
  dependents: string[];
  /** Position in a topological order of its DAG; compensation runs in decreasing order. */
  topoIndex: number;
  onFailure: boolean;
  /** A `spec.finally` task: it runs last, whatever the outcome. */
  finally: boolean;
  retry: ResolvedRetry;
  /** The compensation's policy: its own retry over the task's, with one attempt unless it says. */
  compensateRetry: ResolvedRetry;
  timeoutMs: number | undefined;
  /** `pool:<name>` for a pool task (its capacity), else `agent:<type>` (no limit). */
  capacityKey: string;
  /** The circuit breaker the task's attempts count against and wait for, if it has one. */
  breaker: ResolvedBreaker | undefined;
  /** Tasks whose status or outputs this task's expressions read: only they go in its context. */
  reads: string[];
  /**
   * Its `when` calls a status function (`success()`, `always()`...): it is decided by that
   * condition however its needs ended. Without one, `when` means `success() && <when>`, and a
   * need that did not succeed skips the task at once (GitHub Actions' model).
   */
  statusCheck: boolean;
}

/** The static shape of a run, derived once from the workflow; the reducer and scheduler share it. */
export interface RunPlan {
  workflow: Workflow;
  tasks: Map<string, PlannedTask>;
  mainRoots: string[];
  failureRoots: string[];
  /** Roots of `spec.finally`; empty when the workflow has none, and a run then ends as it always did. */
  finallyRoots: string[];
  failFast: boolean;
  deadlineMs: number | undefined;
  maxParallel: number;
  /** Running-task limit of each pool: count x concurrency. */
  poolLimits: Map<string, number>;
  /** The circuit breakers the tasks use, by key: how many failures open each, and for how long. */
  breakers: Map<string, ResolvedBreaker>;
}

export interface PlanOptions {
  /** Upper bound on tasks running at once in one run (the workflow may set a lower one). */
  maxParallel: number;
}

function kindOf(t: TaskSpec): TaskKind {
  if (t.approval !== undefined) return 'approval';
  if (t.workflow !== undefined) return 'workflow';
  if (t.pool !== undefined) return 'pool';
  return 'agent';
}

function agentType(t: TaskSpec): string {
  return t.agent ?? (t.http !== undefined ? 'http' : t.sleep !== undefined ? 'sleep' : 'shell');
}

/** Task names read through `tasks.X` anywhere in the task's strings. */
function readsOf(t: TaskSpec, known: Set<string>): string[] {
  const out = new Set<string>();
  const visit = (v: unknown): void => {
    if (typeof v === 'string') {
      const sources: string[] = [];
      if (v.includes('${{')) {
        const scan = findTemplates(v);
        if (scan.ok) sources.push(...scan.templates.map((x) => x.source));
      }
      for (const src of sources) {
        const p = parseExpression(src);
        if (p.ok) for (const r of collectReferences(p.expr)) if (r.context === 'tasks' && r.segments[0] !== undefined && known.has(r.segments[0])) out.add(r.segments[0]);
      }
    } else if (Array.isArray(v)) v.forEach(visit);
    else if (v !== null && typeof v === 'object') Object.values(v).forEach(visit);
  };
  visit(t);
  // `when` may be a bare expression without ${{ }}.
  if (t.when !== undefined && !t.when.includes('${{')) {
    const p = parseExpression(t.when);
    if (p.ok) for (const r of collectReferences(p.expr)) if (r.context === 'tasks' && r.segments[0] !== undefined && known.has(r.segments[0])) out.add(r.segments[0]);
  }
  return [...out];
}

/** Whether a `when` (with or without `${{ }}`) calls a status function. */
function usesStatusFunction(when: string | undefined): boolean {
  if (when === undefined) return false;
  const scan = findTemplates(when);
  const source = scan.ok && scan.templates.length === 1 ? scan.templates[0]!.source : when;
  const p = parseExpression(source);
  return p.ok && statusFunctionsIn(p.expr).length > 0;
}

export function buildRunPlan(workflow: Workflow, options: PlanOptions): RunPlan {
  const spec = workflow.spec;
  const defaults = spec.defaults ?? {};
  const baseRetry = resolveRetry(defaults.retry, DEFAULT_RETRY);
  const defaultTimeout = defaults.timeout !== undefined ? parseDuration(defaults.timeout) : undefined;
  const all = [
    ...spec.tasks.map((t) => [t, 'tasks'] as const),
    ...(spec.onFailure ?? []).map((t) => [t, 'onFailure'] as const),
    ...(spec.finally ?? []).map((t) => [t, 'finally'] as const),
  ];
  const known = new Set(all.map(([t]) => t.name));
  const tasks = new Map<string, PlannedTask>();
  const breakers = new Map<string, ResolvedBreaker>();
  for (const [t, group] of all) {
    const retry = resolveRetry(t.retry, baseRetry);
    // Validation refuses a scope that does not fit, and tasks sharing a key that disagree.
    const resolved = resolveCircuitBreaker(t, defaults);
    const breaker = resolved.ok ? resolved.breaker : undefined;
    if (breaker !== undefined && !breakers.has(breaker.key)) breakers.set(breaker.key, breaker);
    tasks.set(t.name, {
      name: t.name,
      spec: t,
      kind: kindOf(t),
      needs: [...(t.needs ?? [])],
      dependents: [],
      topoIndex: 0,
      onFailure: group === 'onFailure',
      finally: group === 'finally',
      retry,
      compensateRetry: resolveRetry(t.compensate?.retry, { ...retry, attempts: 1 }),
      timeoutMs: t.timeout !== undefined ? parseDuration(t.timeout) : defaultTimeout,
      capacityKey: t.pool !== undefined ? `pool:${t.pool}` : `agent:${agentType(t)}`,
      breaker,
      reads: readsOf(t, known),
      statusCheck: usesStatusFunction(t.when),
    });
  }
  for (const t of tasks.values()) for (const n of t.needs) tasks.get(n)?.dependents.push(t.name);
  for (const group of [spec.tasks, spec.onFailure ?? [], spec.finally ?? []]) {
    const dag = buildDag(group.map((t) => ({ name: t.name, needs: t.needs ?? [] })));
    let i = 0;
    for (const gen of dag.generations) for (const name of gen) tasks.get(name)!.topoIndex = i++;
  }
  const poolLimits = new Map<string, number>();
  for (const [name, p] of Object.entries(spec.pools ?? {})) poolLimits.set(name, p.count * (p.concurrency ?? 1));
  const limit = spec.concurrency?.maxParallelTasks;
  return {
    workflow,
    tasks,
    mainRoots: spec.tasks.filter((t) => (t.needs ?? []).length === 0).map((t) => t.name),
    failureRoots: (spec.onFailure ?? []).filter((t) => (t.needs ?? []).length === 0).map((t) => t.name),
    finallyRoots: (spec.finally ?? []).filter((t) => (t.needs ?? []).length === 0).map((t) => t.name),
    failFast: spec.failFast ?? true,
    deadlineMs: spec.timeout !== undefined ? parseDuration(spec.timeout) : undefined,
    maxParallel: limit !== undefined ? Math.min(limit, options.maxParallel) : options.maxParallel,
    poolLimits,
    breakers,
  };
}
