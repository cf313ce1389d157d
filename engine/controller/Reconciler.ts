import { compileWorkflow } from '../compile/compileWorkflow.js';
import type { CompileOptions } from '../compile/CompileOptions.js';
import type { CompiledJob, NomadJob } from '../compile/NomadJob.js';
import { CaravanError } from '../errors/CaravanError.js';
import type { Logger } from '../run/Logger.js';
import type { FileResult } from '../spec/validateWorkflows.js';
import type { NomadJobStub, PlanResult, RegisterResult } from '../nomad/NomadClient.js';

/** What the reconciler needs of Nomad (NomadClient has it). */
export interface ClusterJobs {
  listJobs(prefix?: string): Promise<{ value: NomadJobStub[]; index: number }>;
  readJob(id: string): Promise<NomadJob & { JobModifyIndex: number; Version: number; Stop?: boolean }>;
  planJob(job: NomadJob): Promise<PlanResult>;
  registerJob(job: NomadJob, modifyIndex?: number): Promise<RegisterResult>;
  deregisterJob(id: string, purge?: boolean): Promise<{ EvalID: string }>;
}

/** Job meta keys the controller stamps: whose job it is, from which commit, by whom. */
export const META = {
  repo: 'caravan.repo',
  workflow: 'caravan.workflow',
  commit: 'caravan.git-commit',
  controller: 'caravan.controller',
  leaderIndex: 'caravan.leader-index',
  specHash: 'caravan.spec-hash',
  prune: 'caravan.prune',
  poolCount: 'caravan.pool-count',
} as const;

/** The workflow label that keeps a workflow's jobs when it leaves Git (`caravan.io/prune: "false"`). */
export const PRUNE_LABEL = 'caravan.io/prune';

export interface JobFailure {
  id: string;
  workflow: string;
  reason: string;
}

export interface Drift {
  id: string;
  workflow: string;
  /** modified: changed outside Git; missing: stopped or deleted outside Git. */
  kind: 'modified' | 'missing';
  healed: boolean;
  note?: string;
}

export interface WorkflowSync {
  name: string;
  file: string;
  status: 'synced' | 'invalid' | 'failed';
  errors?: string[];
}

/** What one reconciliation did, for the sync report. */
export interface ReconcileResult {
  workflows: WorkflowSync[];
  /** Files that did not validate, with their errors (their workflows keep what is registered). */
  invalid: Array<{ file: string; errors: string[] }>;
  jobs: { created: string[]; updated: string[]; unchanged: string[]; pruned: string[]; failed: JobFailure[] };
  drift: Drift[];
  prune: { enabled: boolean; candidates: string[]; refused?: string };
  /** Nomad's job index after the reconciliation. */
  nomadIndex: number;
}

export interface ReconcilerOptions {
  cluster: ClusterJobs;
  /** Names the repository in every job's meta: a job is this controller's only if it matches. */
  repo: string;
  /** This controller's identity, stamped on what it registers. */
  controller: string;
  compile: Partial<CompileOptions>;
  prune: boolean;
  selfHeal: boolean;
  logger: Logger;
  /** Tries of self-heal for one job before it stops and says so (Argo CD's retry limit). */
  healLimit?: number;
  /** The first wait between heals of one job; doubled after each. */
  healBackoffMs?: number;
  now?: () => number;
}

interface Stamp {
  leaderIndex: number | undefined;
  /** False when the workflow opts out of prune. */
  prune: boolean;
}

interface Applied {
  index: number;
  specHash: string;
}

interface HealState {
  tries: number;
  notBefore: number;
}

/**
 * Makes Nomad hold what Git says, for the jobs this controller owns: it registers only what
 * changed, with check-and-set on the index it planned against; it never touches a job
 * without its ownership meta (this repository); an invalid workflow keeps its last good
 * version; drift (a job changed or stopped outside Git) is reported and, with self-heal, put
 * back a bounded number of times; prune is off unless asked, never touches dispatched
 * children or opted-out workflows, and never empties the cluster in one commit.
 */
export class Reconciler {
  private readonly applied = new Map<string, Applied>();
  /** Compiled jobs of each workflow definition (the controller hands the same object for an unchanged file). */
  private readonly compiled = new WeakMap<object, CompiledJob[]>();
  private readonly heals = new Map<string, HealState>();
  private readonly now: () => number;

  constructor(private readonly options: ReconcilerOptions) {
    this.now = options.now ?? Date.now;
  }

  async reconcile(commit: string, files: readonly FileResult[], extra: { allowPruneAll: boolean; leaderIndex?: number; listing?: { value: NomadJobStub[]; index: number } }): Promise<ReconcileResult> {
    const result: ReconcileResult = {
      workflows: [],
      invalid: [],
      jobs: { created: [], updated: [], unchanged: [], pruned: [], failed: [] },
      drift: [],
      prune: { enabled: this.options.prune, candidates: [] },
      nomadIndex: 0,
    };
    const desired = new Map<string, { compiled: CompiledJob; prune: boolean }>();
    const present = new Set<string>();
    for (const f of files) {
      if (f.workflow === undefined) {
        result.invalid.push({ file: f.file, errors: f.diagnostics.filter((d) => d.severity === 'error').map((d) => `${d.line !== undefined ? `line ${d.line}: ` : ''}${d.message}`) });
        continue;
      }
      const name = f.workflow.metadata.name;
      present.add(name);
      let compiled: CompiledJob[];
      try {
        // Without the commit: it is stamped on registration, so an unchanged workflow compiles once.
        compiled = this.compiled.get(f.workflow) ?? compileWorkflow(f.workflow, this.options.compile);
        this.compiled.set(f.workflow, compiled);
      } catch (e) {
        result.workflows.push({ name, file: f.file, status: 'invalid', errors: [(e as Error).message] });
        continue;
      }
      result.workflows.push({ name, file: f.file, status: 'synced' });
      const prune = f.workflow.metadata.labels?.[PRUNE_LABEL] !== 'false';
      for (const c of compiled) desired.set(c.id, { compiled: c, prune });
    }
    // The listing the controller just looked at (to see whether the cluster moved), if fresh.
    const listed = extra.listing ?? (await this.options.cluster.listJobs('caravan-'));
    // Dispatched children are runs, not definitions: never ours to change or prune.
    const byId = new Map(listed.value.filter((j) => j.ParentID === '').map((j) => [j.ID, j]));
    const failedWorkflows = new Set<string>();
    for (const [id, { compiled, prune }] of desired) {
      try {
        await this.apply(compiled, byId.get(id), commit, { leaderIndex: extra.leaderIndex, prune }, result);
      } catch (e) {
        failedWorkflows.add(compiled.workflow);
        result.jobs.failed.push({ id, workflow: compiled.workflow, reason: e instanceof Error ? e.message : String(e) });
      }
    }
    for (const w of result.workflows) {
      if (failedWorkflows.has(w.name)) w.status = 'failed';
    }
    await this.prune(byId, desired, present, result, extra.allowPruneAll);
    // The job index after this controller's own writes, with no third listing: the highest
    // index it registered at. A prune (whose index is not returned) moves the index once
    // more, which costs one extra look at the next interval.
    result.nomadIndex = Math.max(listed.index, this.highestApplied);
    return result;
  }

  /**
   * This controller's jobs as Nomad lists them, with Nomad's job index: it moves whenever any
   * job changes (a sync with the same index and commit has nothing to do). Handed back to
   * reconcile(), so a sync lists the jobs once.
   */
  listing(): Promise<{ value: NomadJobStub[]; index: number }> {
    return this.options.cluster.listJobs('caravan-');
  }

  /** The highest JobModifyIndex this controller registered at. */
  private get highestApplied(): number {
    let max = 0;
    for (const a of this.applied.values()) if (a.index > max) max = a.index;
    return max;
  }

  private owned(stub: NomadJobStub | undefined): boolean {
    return stub?.Meta?.[META.repo] === this.options.repo;
  }

  private stamp(compiled: CompiledJob, commit: string, how: Stamp): NomadJob {
    const job = structuredClone(compiled.job);
    job.Meta = { ...job.Meta, [META.repo]: this.options.repo, [META.controller]: this.options.controller, [META.commit]: commit };
    if (how.leaderIndex !== undefined) job.Meta[META.leaderIndex] = String(how.leaderIndex);
    // Kept on the job: once its workflow leaves Git, the label is gone with it.
    if (!how.prune) job.Meta[META.prune] = 'false';
    if (compiled.kind === 'pool') job.Meta[META.poolCount] = String(job.TaskGroups[0]?.Count ?? 0);
    return job;
  }

  private async apply(compiled: CompiledJob, stub: NomadJobStub | undefined, commit: string, how: Stamp, result: ReconcileResult): Promise<void> {
    const { cluster, logger } = this.options;
    const id = compiled.id;
    const log = { workflow: compiled.workflow, job: id, commit };
    if (stub !== undefined && !this.owned(stub)) {
      throw new CaravanError('JOB_NOT_OWNED', `Nomad job ${id} exists but is not this controller's (its meta does not name ${META.repo}=${this.options.repo}); it is left alone: stop it or rename the ${compiled.kind} '${compiled.source}'`, { data: { job: id } });
    }
    // Fencing: a job last written by a newer leader (a higher lock index) is not this one's
    // to change any more: it was deposed, and its write would come late.
    const theirs = Number(stub?.Meta?.[META.leaderIndex] ?? NaN);
    if (how.leaderIndex !== undefined && Number.isFinite(theirs) && theirs > how.leaderIndex) {
      throw new CaravanError('LEADERSHIP_LOST', `Nomad job ${id} was registered by a newer leader (lock index ${theirs}, this controller's is ${how.leaderIndex}); this controller is deposed and leaves it alone`, { data: { job: id, theirs, ours: how.leaderIndex } });
    }
    const specHash = compiled.job.Meta[META.specHash]!;
    const last = this.applied.get(id);
    let job = this.stamp(compiled, commit, how);
    if (stub === undefined || stub.Stop) {
      // Registered by this controller with this very spec, and gone since: removed outside Git.
      if (last !== undefined && last.specHash === specHash) {
        const healed = this.options.selfHeal && this.mayHeal(id);
        result.drift.push({ id, workflow: compiled.workflow, kind: 'missing', healed, ...this.healNote(id) });
        if (!healed) return;
      }
      const r = await cluster.registerJob(job, stub === undefined ? 0 : stub.JobModifyIndex);
      this.applied.set(id, { index: r.JobModifyIndex, specHash });
      (last !== undefined && last.specHash === specHash ? [] : result.jobs.created).push(id);
      logger.info(last !== undefined && last.specHash === specHash ? 'job put back (it was stopped or deleted outside Git)' : 'job registered', log);
      return;
    }
    const liveHash = stub.Meta?.[META.specHash];
    const gitCount = compiled.kind === 'pool' ? String(compiled.job.TaskGroups[0]?.Count ?? 0) : undefined;
    if (liveHash === specHash) {
      if (last !== undefined && last.index === stub.JobModifyIndex) {
        result.jobs.unchanged.push(id);
        this.heals.delete(id);
        return;
      }
      // Same spec hash, but the job moved since this controller registered it (or this
      // controller has not seen it yet): ask Nomad whether it differs from what Git says,
      // with the live job's own stamps and (for a pool) its live count, which is preserved.
      const live = await cluster.readJob(id);
      const probe = structuredClone(job);
      probe.Meta = { ...probe.Meta, ...pick(live.Meta ?? {}, [META.commit, META.controller, META.leaderIndex, META.poolCount]) };
      if (compiled.kind === 'pool') probe.TaskGroups[0]!.Count = live.TaskGroups[0]?.Count ?? probe.TaskGroups[0]!.Count;
      const plan = await cluster.planJob(probe);
      if (plan.Diff === undefined || plan.Diff.Type === 'None') {
        this.applied.set(id, { index: stub.JobModifyIndex, specHash });
        result.jobs.unchanged.push(id);
        this.heals.delete(id);
        return;
      }
      const healed = this.options.selfHeal && this.mayHeal(id);
      result.drift.push({ id, workflow: compiled.workflow, kind: 'modified', healed, ...this.healNote(id) });
      logger.warn(healed ? 'job changed outside Git: putting the Git version back' : 'job changed outside Git (drift; --self-heal would put it back)', log);
      if (!healed) return;
      job = probe;
      const r = await cluster.registerJob(job, stub.JobModifyIndex);
      this.applied.set(id, { index: r.JobModifyIndex, specHash });
      return;
    }
    // Changed in Git. A pool's count scaled outside Git stays, unless Git changed the count.
    if (gitCount !== undefined && stub.Meta?.[META.poolCount] === gitCount) {
      const live = await cluster.readJob(id);
      job.TaskGroups[0]!.Count = live.TaskGroups[0]?.Count ?? job.TaskGroups[0]!.Count;
    }
    const r = await cluster.registerJob(job, stub.JobModifyIndex);
    this.applied.set(id, { index: r.JobModifyIndex, specHash });
    this.heals.delete(id);
    result.jobs.updated.push(id);
    logger.info('job updated', log);
  }

  private mayHeal(id: string): boolean {
    const limit = this.options.healLimit ?? 3;
    const h = this.heals.get(id) ?? { tries: 0, notBefore: 0 };
    this.heals.set(id, h);
    if (h.tries >= limit || this.now() < h.notBefore) return false;
    h.tries++;
    h.notBefore = this.now() + (this.options.healBackoffMs ?? 30_000) * 2 ** (h.tries - 1);
    return true;
  }

  private healNote(id: string): { note?: string } {
    if (!this.options.selfHeal) return { note: 'self-heal is off' };
    const h = this.heals.get(id);
    const limit = this.options.healLimit ?? 3;
    if (h !== undefined && h.tries >= limit) return { note: `self-heal gave up after ${limit} tries: fix the job or the workflow` };
    return {};
  }

  private async prune(byId: Map<string, NomadJobStub>, desired: Map<string, unknown>, present: Set<string>, result: ReconcileResult, allowPruneAll: boolean): Promise<void> {
    const owned = [...byId.values()].filter((j) => this.owned(j) && !j.Stop);
    const candidates = owned.filter((j) => !desired.has(j.ID) && j.Meta?.[META.prune] !== 'false');
    // A workflow whose file does not validate keeps all its jobs: its name may be unknown, so
    // nothing is pruned at all while any file is invalid.
    const keep = (j: NomadJobStub): boolean => {
      const wf = j.Meta?.[META.workflow];
      return wf !== undefined && present.has(wf) && result.workflows.find((w) => w.name === wf)?.status === 'invalid';
    };
    result.prune.candidates = candidates.filter((j) => !keep(j)).map((j) => j.ID).sort();
    if (result.prune.candidates.length === 0) return;
    if (!this.options.prune) return;
    if (result.invalid.length > 0) {
      result.prune.refused = `${result.invalid.length} workflow file${result.invalid.length === 1 ? ' does' : 's do'} not validate: nothing is pruned until every file does`;
      return;
    }
    // A commit with no workflow at all (a bad merge, a moved directory) would empty the
    // cluster: that takes the repository saying so.
    if (present.size === 0 && !allowPruneAll) {
      result.prune.refused = `this commit has no workflows and would prune all ${result.prune.candidates.length} of this repository's jobs; refused (commit a file .caravan/allow-prune-all to allow it)`;
      this.options.logger.warn('prune of every job refused', { jobs: result.prune.candidates.length });
      return;
    }
    for (const id of result.prune.candidates) {
      const stub = byId.get(id)!;
      try {
        await this.options.cluster.deregisterJob(id);
        this.applied.delete(id);
        result.jobs.pruned.push(id);
        this.options.logger.info('job pruned (its workflow or task left Git)', { job: id, workflow: stub.Meta?.[META.workflow] });
      } catch (e) {
        result.jobs.failed.push({ id, workflow: stub.Meta?.[META.workflow] ?? '', reason: `prune failed: ${e instanceof Error ? e.message : String(e)}` });
      }
    }
  }
}

function pick(o: Record<string, string>, keys: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
  return out;
}
