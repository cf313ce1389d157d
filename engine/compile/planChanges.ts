import type { TaskDag } from '../graph/buildDag.js';
import type { FileResult } from '../spec/validateWorkflows.js';
import type { Workflow } from '../spec/Workflow.js';
import { compileWorkflow } from './compileWorkflow.js';
import type { CompileOptions } from './CompileOptions.js';
import { diffJobs, type FieldChange } from './diffJobs.js';
import type { CompiledJob } from './NomadJob.js';
import { canonicalJson } from './specHash.js';

export interface JobChange {
  id: string;
  kind: 'task' | 'compensate' | 'pool';
  source: string;
  action: 'create' | 'update' | 'destroy';
  fields: FieldChange[];
  /**
   * Set when the plan was checked against a cluster: the job's JobModifyIndex there, which a
   * controller applying this plan enforces on register (check-and-set); 0 when the job does
   * not exist, which Nomad reads as "register only if still absent".
   */
  modifyIndex?: number;
}

export interface WorkflowChange {
  name: string;
  file: string;
  change: 'added' | 'changed' | 'removed';
  jobs: JobChange[];
  /** Tasks whose definition changed without a job of their own (pooled, approvals, sub-workflows). */
  engineTasks: string[];
  /** Top-level parts of the workflow that differ, e.g. ["metadata.description", "spec.triggers"]. */
  sections: string[];
  /** The new DAG, one generation per entry (empty for a removed workflow). */
  generations: string[][];
  workflow: Workflow | undefined;
  /** The base's version (undefined for an added workflow), for the diagram of what changed. */
  baseWorkflow: Workflow | undefined;
}

export interface Plan {
  base: string;
  head: string;
  /** The Nomad address the jobs' indexes were read from; undefined when not checked against a cluster. */
  cluster?: string;
  workflows: WorkflowChange[];
  summary: { added: number; changed: number; removed: number; unchanged: number; create: number; update: number; destroy: number };
}

interface Side {
  byName: Map<string, { file: FileResult; workflow: Workflow; dag: TaskDag; jobs: CompiledJob[] }>;
}

function side(files: readonly FileResult[], options: Partial<CompileOptions>): Side {
  const byName: Side['byName'] = new Map();
  for (const f of files) {
    if (f.workflow === undefined || f.dag === undefined) continue;
    byName.set(f.workflow.metadata.name, { file: f, workflow: f.workflow, dag: f.dag, jobs: compileWorkflow(f.workflow, options) });
  }
  return { byName };
}

/**
 * What merging would change: workflows added, changed and removed, and for each the Nomad
 * jobs to create, update (with the fields) or destroy. Both sides must be valid.
 */
export function planChanges(base: readonly FileResult[], head: readonly FileResult[], labels: { base: string; head: string }, options: Partial<CompileOptions> = {}): Plan {
  const b = side(base, options);
  const h = side(head, options);
  const names = [...new Set([...b.byName.keys(), ...h.byName.keys()])].sort();
  const workflows: WorkflowChange[] = [];
  let unchanged = 0;
  for (const name of names) {
    const before = b.byName.get(name);
    const after = h.byName.get(name);
    if (before !== undefined && after !== undefined && canonicalJson(before.workflow) === canonicalJson(after.workflow)) {
      unchanged++;
      continue;
    }
    const jobs = diffJobSets(before?.jobs ?? [], after?.jobs ?? []);
    workflows.push({
      name,
      file: (after ?? before)!.file.file,
      change: before === undefined ? 'added' : after === undefined ? 'removed' : 'changed',
      jobs,
      engineTasks: before !== undefined && after !== undefined ? engineTaskChanges(before.workflow, after.workflow) : [],
      sections: before !== undefined && after !== undefined ? changedSections(before.workflow, after.workflow) : [],
      generations: after?.dag.generations ?? [],
      workflow: after?.workflow,
      baseWorkflow: before?.workflow,
    });
  }
  const all = workflows.flatMap((w) => w.jobs);
  return {
    base: labels.base,
    head: labels.head,
    workflows,
    summary: {
      added: workflows.filter((w) => w.change === 'added').length,
      changed: workflows.filter((w) => w.change === 'changed').length,
      removed: workflows.filter((w) => w.change === 'removed').length,
      unchanged,
      create: all.filter((j) => j.action === 'create').length,
      update: all.filter((j) => j.action === 'update').length,
      destroy: all.filter((j) => j.action === 'destroy').length,
    },
  };
}

function diffJobSets(before: CompiledJob[], after: CompiledJob[]): JobChange[] {
  const out: JobChange[] = [];
  const old = new Map(before.map((j) => [j.id, j]));
  for (const j of after) {
    const prev = old.get(j.id);
    if (prev === undefined) out.push({ id: j.id, kind: j.kind, source: j.source, action: 'create', fields: [] });
    else if (prev.job.Meta['caravan.spec-hash'] !== j.job.Meta['caravan.spec-hash']) out.push({ id: j.id, kind: j.kind, source: j.source, action: 'update', fields: diffJobs(prev.job, j.job) });
    old.delete(j.id);
  }
  for (const j of old.values()) out.push({ id: j.id, kind: j.kind, source: j.source, action: 'destroy', fields: [] });
  const order = { destroy: 0, create: 1, update: 2 };
  return out.sort((a, b) => order[a.action] - order[b.action] || (a.id < b.id ? -1 : 1));
}

function changedSections(before: Workflow, after: Workflow): string[] {
  const out: string[] = [];
  for (const part of ['metadata', 'spec'] as const) {
    const a = before[part] as unknown as Record<string, unknown>;
    const b = after[part] as unknown as Record<string, unknown>;
    for (const k of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) {
      if (canonicalJson(a[k]) !== canonicalJson(b[k])) out.push(`${part}.${k}`);
    }
  }
  return out;
}

/** Tasks that run without a job of their own and changed: the only place a reviewer sees them. */
function engineTaskChanges(before: Workflow, after: Workflow): string[] {
  const prev = new Map([...before.spec.tasks, ...(before.spec.onFailure ?? []), ...(before.spec.finally ?? [])].map((t) => [t.name, canonicalJson(t)]));
  const out: string[] = [];
  for (const t of [...after.spec.tasks, ...(after.spec.onFailure ?? []), ...(after.spec.finally ?? [])]) {
    const runsInEngineOrPool = t.pool !== undefined || t.approval !== undefined || t.workflow !== undefined;
    if (runsInEngineOrPool && prev.get(t.name) !== canonicalJson(t)) out.push(t.name);
  }
  return out;
}
