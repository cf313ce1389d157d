import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as git from 'isomorphic-git';
import type { CaravanApp, RetriedRun, StartedRun } from '../app/CaravanApp.js';
import { newRunId } from '../audit/updateRef.js';
import { CaravanError } from '../errors/CaravanError.js';
import type { Leadership } from '../app/Leadership.js';
import { resolveGitDirs } from '../audit/resolveGitDirs.js';
import { changedPaths } from '../gitops/changedPaths.js';
import { readApproval } from '../gitops/readApproval.js';
import { FileKeyValue } from '../local/FileKeyValue.js';
import type { Logger } from '../run/Logger.js';
import { noopMetrics, type Metrics, type PoolSample } from '../run/Metrics.js';
import type { KeyValue, Registry } from '../run/Registry.js';
import type { FileResult } from '../spec/validateWorkflows.js';
import type { Workflow } from '../spec/Workflow.js';
import { pushFires } from './pushTriggers.js';
import type { Reconciler, ReconcileResult } from './Reconciler.js';
import { EventFiring } from './EventFiring.js';
import type { TriggerMessages } from './EventFiring.js';
import { ScheduleFiring } from './ScheduleFiring.js';
import { TriggerRuns } from './TriggerRuns.js';
import { WorkflowFiles } from './WorkflowFiles.js';

/** The controller's record of one sync: committed to the audit branch and mirrored to the registry. */
export interface SyncReport {
  commit: string;
  author: string;
  message: string;
  branch: string;
  controller: string;
  startedAt: string;
  durationMs: number;
  /** synced: everything applied; partial: some workflows invalid or some jobs failed; failed: nothing could be done. */
  status: 'synced' | 'partial' | 'failed';
  /** Why nothing could be done (status failed). */
  error?: string;
  /** Without a cluster (the embedded default) nothing is registered: runs only. */
  cluster: 'nomad' | 'none';
  workflows: ReconcileResult['workflows'];
  invalid: ReconcileResult['invalid'];
  jobs: ReconcileResult['jobs'];
  drift: ReconcileResult['drift'];
  prune: ReconcileResult['prune'];
  /**
   * Runs this commit's push triggers asked for; `existed` when the run had been started before
   * (by a controller that stopped before it recorded this sync), so it was not started again.
   */
  runs: Array<{ workflow: string; runId: string; trigger: string; existed?: true }>;
  /** Decisions committed as approvals/<run-id>/<task>.yaml, and what became of each. */
  approvals: Array<{ file: string; runId: string; task: string; decision: 'approve' | 'reject'; author: string; commit: string; outcome: 'applied' | 'refused' | 'not-live' }>;
}

export interface ControllerOptions {
  app: CaravanApp;
  /** The repository to watch (a local clone or the repository itself). */
  repoDir: string;
  branch: string;
  workflowsDir: string;
  intervalMs: number;
  /** Registers jobs on Nomad; absent on the embedded default (nothing to register). */
  reconciler?: Reconciler;
  registry?: Registry;
  identity: string;
  logger: Logger;
  /** Called after every sync (tests, the HTTP API's last-sync view). */
  onSync?: (report: SyncReport) => void;
  /**
   * Durable state (each schedule's last fire): the registry when there is one (Consul: it
   * survives a change of leader), else files under .git/caravan/kv.
   */
  state?: KeyValue;
  /** The time schedules are judged by (tests). */
  now?: () => number;
  /**
   * The leader lock (Consul): only the leader syncs, fires triggers and drives runs; the
   * others wait as followers and take over when the lock is free (at most one session TTL
   * after the leader died).
   */
  leadership?: Leadership;
  /** Called when the lock is lost: leader work has stopped; the process should exit. */
  onDeposed?: (e: Error) => void;
  /**
   * The remote repository `repoDir` mirrors: fetched before every look at the branch (its
   * head checked out, so tasks see the commit's files), and the audit branch pushed back
   * after every sync.
   */
  remote?: { sync(): Promise<string>; pushAudit(): Promise<{ pushed: boolean; rebuilt: number }>; readonly url: string };
  /** Opens the event triggers' message source for these workflows (leader only; NATS). */
  openEvents?: (workflows: Workflow[]) => Promise<TriggerMessages>;
  /** Where syncs, leadership, schedule fires and pools are counted (default: nowhere). */
  metrics?: Metrics;
  /** Looks at the pools of these workflows (queue depth, agents), after every sync and poll. */
  observePools?: (workflows: readonly Workflow[]) => Promise<PoolSample[]>;
}

export type { TriggerMessage, TriggerMessages } from './EventFiring.js';

/** Sync reports kept in the registry (all are kept in Git). */
const KEPT_IN_REGISTRY = 10;

/**
 * The GitOps loop: watches a branch, and on every new commit validates the workflows at that
 * commit, reconciles Nomad (through the Reconciler), starts the runs its push triggers ask
 * for, and records a sync report. It polls at an interval with jitter; nudge() (a webhook)
 * syncs at once. Work is skipped when neither the branch nor the cluster moved.
 */
export class Controller {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private lastHead: string | undefined;
  /** The commit whose sync last failed, and how: kept until a sync of the branch succeeds. */
  private failing: { head: string; error: string } | undefined;
  private lastNomadIndex: number | undefined;
  private last: SyncReport | undefined;
  private lastError: string | undefined;
  private readonly runs: TriggerRuns;
  /** Each workflow's file at the synced commit. */
  private readonly files = new Map<string, string>();
  private readonly statePath: string;
  private readonly workflowFiles: WorkflowFiles;
  private readonly schedules: ScheduleFiring;
  private readonly events: EventFiring | undefined;
  private role: 'standalone' | 'follower' | 'leader' | 'deposed' = 'standalone';
  private campaign: Promise<void> | undefined;
  private unlisten: (() => void) | undefined;
  private readonly metrics: Metrics;
  /** The valid workflows of the last synced commit: the pools to look at. */
  private syncedValid: Workflow[] = [];
  /** The workflow files of the last synced commit, and their text: what the HTTP API shows and runs. */
  private synced: { commit: string; files: readonly FileResult[]; sources: ReadonlyMap<string, string> } | undefined;

  constructor(private readonly options: ControllerOptions) {
    this.metrics = options.metrics ?? noopMetrics;
    const gitdir = resolveGitDirs(options.repoDir).gitdir;
    this.statePath = join(gitdir, 'caravan', 'controller', `${options.branch.replace(/[^A-Za-z0-9._-]/g, '_')}.json`);
    const kv = options.state ?? options.registry ?? new FileKeyValue(join(gitdir, 'caravan', 'kv'));
    const now = options.now ?? Date.now;
    this.runs = new TriggerRuns(options.app, options.logger);
    this.workflowFiles = new WorkflowFiles(options.repoDir, options.workflowsDir);
    this.schedules = new ScheduleFiring({ runs: this.runs, state: kv, now, logger: options.logger, leading: () => this.role === 'standalone' || this.role === 'leader', metrics: this.metrics });
    this.events = options.openEvents !== undefined ? new EventFiring({ runs: this.runs, kv, now, logger: options.logger, open: options.openEvents }) : undefined;
  }

  /** Fires the schedules whose time has come (as the timer does); see ScheduleFiring. */
  fireSchedules(at?: Date): Promise<Array<{ workflow: string; runId: string; at: string }>> {
    return this.schedules.fire(at);
  }

  /** Event messages refused (bad params, unknown workflow). */
  get refusedEvents(): number {
    return this.events?.refusedEvents ?? 0;
  }

  /**
   * Picks up unfinished runs of an earlier controller, syncs once, then keeps watching. With
   * a leader lock, all of that waits until this controller is elected (elected() resolves
   * then); until then it is a follower and does nothing.
   */
  async start(): Promise<void> {
    const leadership = this.options.leadership;
    if (leadership === undefined) {
      this.metrics.leader(true);
      await this.begin();
      return;
    }
    this.role = 'follower';
    this.metrics.leader(false);
    this.options.logger.info('campaigning for the leader lock; a follower until elected', {});
    this.campaign = (async () => {
      await leadership.acquire();
      if (this.stopped) return;
      this.role = 'leader';
      this.metrics.leader(true);
      this.unlisten = leadership.onLost((e) => {
        this.role = 'deposed';
        this.metrics.leader(false);
        this.options.logger.error('leader lock lost: leader work stops; the next leader takes the runs over', { err: e });
        void this.stop().then(() => this.options.onDeposed?.(e));
      });
      this.options.logger.info('elected leader', {});
      await this.begin();
    })();
    this.campaign.catch((e: unknown) => this.options.logger.error('the leader campaign failed', { err: e }));
  }

  /** What it watches: the remote's URL (without credentials), or the repository's directory. */
  watching(): string {
    return this.options.remote?.url ?? this.options.repoDir;
  }

  /** Resolves once this controller leads and has done its first sync (at once without a lock). */
  async elected(): Promise<void> {
    await this.campaign;
  }

  private async begin(): Promise<void> {
    this.lastHead = await this.readState();
    await this.runs.recover();
    await this.syncNow('start');
    this.schedule();
  }

  /** Syncs as soon as the current sync (if any) is over: a verified webhook. */
  nudge(reason: string): void {
    if (this.stopped) return;
    this.options.logger.info('sync requested', { reason });
    void this.syncNow(reason);
  }

  /** The last sync, and what is wrong now (for /ready). */
  status(): { role: 'standalone' | 'follower' | 'leader' | 'deposed'; lastSync: SyncReport | undefined; error: string | undefined; head: string | undefined; runs: number } {
    return { role: this.role, lastSync: this.last, error: this.lastError, head: this.lastHead, runs: this.runs.live.size };
  }

  /** The workflow files at the last synced commit, validated (commit undefined before the first sync). */
  syncedWorkflows(): { commit: string | undefined; files: readonly FileResult[] } {
    return { commit: this.synced?.commit, files: this.synced?.files ?? [] };
  }

  /**
   * Starts a run of a workflow as it is at the last synced commit (the HTTP API), tracked
   * like a trigger's run: handed over when the controller stops, reached by approvals in Git.
   */
  async startManual(name: string, params: Record<string, unknown>, trigger: string): Promise<StartedRun> {
    const synced = this.synced;
    const file = synced?.files.find((f) => f.name === name);
    if (synced === undefined || file === undefined) throw new CaravanError('WORKFLOW_NOT_FOUND', `no workflow '${name}' at ${synced?.commit.slice(0, 12) ?? 'the synced commit (none yet)'}`, { data: { workflow: name } });
    if (file.workflow === undefined) {
      throw new CaravanError('WORKFLOW_INVALID', `workflow '${name}' (${file.file}) is invalid at ${synced.commit.slice(0, 12)}`, { data: { workflow: name, diagnostics: file.diagnostics.filter((d) => d.severity === 'error') } });
    }
    return this.runs.startDirect({ workflow: file.workflow, source: synced.sources.get(file.file) ?? '' }, params, { trigger, commit: synced.commit, runId: newRunId(new Date()) });
  }

  /**
   * A retry of a finished run (CaravanApp.retry), driven and handed over by this controller
   * like the runs its triggers start.
   */
  async retryRun(runId: string, options: { from?: string; secretParams?: Record<string, unknown>; by?: string }): Promise<RetriedRun> {
    const run = await this.options.app.retry(runId, options);
    this.runs.track(run);
    return run;
  }

  /**
   * Stops watching: the sync under way finishes, runs are handed over (their journal and a
   * checkpoint are written; the next controller recovers them), and nothing more starts.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    this.metrics.leader(false);
    if (this.timer !== undefined) clearTimeout(this.timer);
    await this.running;
    await this.schedules.stop();
    await this.runs.handOver();
    await this.events?.stop();
    this.unlisten?.();
    // The controller's own hold on the lock (taken by acquire, even while still waiting): the
    // lock is released once no run holds it either, and a waiting campaign is called off.
    if (this.options.leadership !== undefined && this.campaign !== undefined) {
      this.campaign = undefined;
      await this.options.leadership.release();
    }
  }

  /** Runs a sync now, or right after the one under way; resolves when it is done. */
  syncNow(reason: string): Promise<void> {
    if (this.running !== undefined) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      try {
        do {
          this.again = false;
          await this.syncOnce(reason);
        } while (this.again && !this.stopped);
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }

  private schedule(): void {
    if (this.stopped) return;
    // Up to 10% of jitter, so controllers started together do not poll in step.
    const delay = this.options.intervalMs * (0.9 + Math.random() * 0.2);
    this.timer = setTimeout(() => {
      // Pools change between commits (agents die, queues fill): looked at on every poll.
      void this.syncNow('interval').then(() => this.observePools()).finally(() => this.schedule());
    }, delay);
    this.timer.unref();
  }

  private async syncOnce(reason: string): Promise<void> {
    const { logger, repoDir, branch } = this.options;
    // A follower watches, no more: the leader syncs.
    if (this.role === 'follower' || this.role === 'deposed') return;
    if (this.options.remote !== undefined) {
      try {
        await this.options.remote.sync();
        // The mirror's files follow the branch: tasks run in the repository's directory.
        await git.checkout({ fs, dir: repoDir, gitdir: resolveGitDirs(repoDir).commonDir, ref: branch, force: true });
      } catch (e) {
        this.metrics.syncFinished({ durationSeconds: 0, error: true });
        this.lastError = `cannot fetch ${this.options.remote.url}: ${e instanceof Error ? e.message : String(e)}`;
        logger.error('cannot fetch the watched repository', { url: this.options.remote.url, branch, err: e });
        return;
      }
      await this.pushAudit();
    }
    let head: string;
    try {
      head = await git.resolveRef({ fs, gitdir: resolveGitDirs(repoDir).commonDir, ref: `refs/heads/${branch}` });
    } catch (e) {
      this.metrics.syncFinished({ durationSeconds: 0, error: true });
      const first = this.lastError !== `branch ${branch} not found in ${repoDir}`;
      this.lastError = `branch ${branch} not found in ${repoDir}`;
      // Said once, with the reason rather than a stack: the branch may yet appear (a first push).
      if (first) logger.error('cannot read the watched branch: give the branch to watch with --branch', { branch, reason: e instanceof Error ? e.message : String(e) });
      return;
    }
    const listing = this.options.reconciler !== undefined ? await this.options.reconciler.listing().catch((e: unknown) => {
      logger.warn('cannot list the jobs on Nomad; syncing anyway', { err: e });
      return undefined;
    }) : undefined;
    const nomadIndex = this.options.reconciler !== undefined ? listing?.index : 0;
    if (head === this.lastHead && nomadIndex !== undefined && nomadIndex === this.lastNomadIndex) return;
    const started = Date.now();
    const { commit } = await git.readCommit({ fs, gitdir: resolveGitDirs(repoDir).commonDir, oid: head });
    const files = await this.workflowFiles.at(head);
    const valid = files.flatMap((f) => (f.workflow !== undefined ? [f.workflow] : []));
    // Before any run of this commit starts: only these names may become label values.
    this.metrics.knownWorkflows(valid.map((w) => w.metadata.name));
    this.syncedValid = valid;
    const report: SyncReport = {
      commit: head,
      author: `${commit.author.name} <${commit.author.email}>`,
      message: commit.message.split('\n')[0] ?? '',
      branch,
      controller: this.options.identity,
      startedAt: new Date(started).toISOString(),
      durationMs: 0,
      status: 'synced',
      cluster: this.options.reconciler !== undefined ? 'nomad' : 'none',
      workflows: [],
      invalid: [],
      jobs: { created: [], updated: [], unchanged: [], pruned: [], failed: [] },
      drift: [],
      prune: { enabled: false, candidates: [] },
      runs: [],
      approvals: [],
    };
    try {
      if (this.options.reconciler !== undefined) {
        const allowPruneAll = await this.fileExists(head, '.caravan/allow-prune-all');
        const leaderIndex = this.options.leadership?.index();
        const r = await this.options.reconciler.reconcile(head, files, { allowPruneAll, ...(leaderIndex !== undefined ? { leaderIndex } : {}), ...(listing !== undefined ? { listing } : {}) });
        Object.assign(report, { workflows: r.workflows, invalid: r.invalid, jobs: r.jobs, drift: r.drift, prune: r.prune });
        this.lastNomadIndex = r.nomadIndex;
      } else {
        report.workflows = files.filter((f) => f.workflow !== undefined).map((f) => ({ name: f.workflow!.metadata.name, file: f.file, status: 'synced' as const }));
        report.invalid = files.filter((f) => f.workflow === undefined).map((f) => ({ file: f.file, errors: f.diagnostics.filter((d) => d.severity === 'error').map((d) => d.message) }));
        this.lastNomadIndex = 0;
      }
      if (head !== this.lastHead) {
        report.runs = await this.firePush(head, files, commit.committer.timestamp);
        report.approvals = await this.applyApprovals(head);
      }
      for (const f of files) if (f.workflow !== undefined) this.files.set(f.workflow.metadata.name, f.file);
      this.synced = { commit: head, files, sources: new Map(files.map((f) => [f.file, this.workflowFiles.source(f.file)])) };
      const fileOf = (name: string): string | undefined => this.files.get(name);
      this.schedules.update(head, files, this.workflowFiles, fileOf);
      await this.events?.update(head, files, this.workflowFiles, fileOf);
      report.status = report.invalid.length > 0 || report.jobs.failed.length > 0 ? 'partial' : 'synced';
      this.lastError = report.invalid.length > 0 ? `${report.invalid.length} invalid workflow file(s) at ${head.slice(0, 12)}: ${report.invalid.map((i) => i.file).join(', ')}` : undefined;
    } catch (e) {
      report.status = 'failed';
      report.error = e instanceof Error ? e.message : String(e);
      this.lastError = `sync of ${head.slice(0, 12)} failed: ${report.error}`;
      logger.error('sync failed', { commit: head, err: e });
    }
    report.durationMs = Date.now() - started;
    const firstOfHead = head !== this.lastHead;
    // A failed sync leaves its commit unapplied, so the lag is measured by the sync that applies it.
    this.countSync(report, firstOfHead ? commit.committer.timestamp : undefined);
    let record = firstOfHead || hasNews(report);
    if (report.status === 'failed') {
      // The commit is not synced: its push triggers and approvals have not been applied.
      // Keeping the last synced commit makes the next sync try it again, comparing with the
      // same base (push run ids are deterministic: a run already started is found, not
      // started twice). The same failure of the same commit is recorded once, not every interval.
      record = this.failing?.head !== head || this.failing.error !== report.error;
      this.failing = { head, error: report.error ?? '' };
    } else {
      this.failing = undefined;
      this.lastHead = head;
      await this.writeState(head);
    }
    this.last = report;
    // A commit's report is recorded once, and again only when something was done or went wrong.
    if (record) await this.record(report);
    logger.info('synced', { reason, commit: head, status: report.status, created: report.jobs.created.length, updated: report.jobs.updated.length, pruned: report.jobs.pruned.length, failed: report.jobs.failed.length, drift: report.drift.length, runs: report.runs.length, invalid: report.invalid.length, durationMs: report.durationMs });
    this.options.onSync?.(report);
    await this.pushAudit();
    this.schedules.arm();
    if (reason !== 'interval') await this.observePools();
  }

  /** The sync's duration, whether it went wrong, its lag (a new commit applied) and the drift it found. */
  private countSync(report: SyncReport, committedAtS: number | undefined): void {
    const applied = report.status !== 'failed';
    let driftJobs: Map<string, number> | undefined;
    if (applied && report.cluster === 'nomad') {
      driftJobs = new Map();
      // Healed jobs are back to Git's version: what still drifts is what was not healed.
      for (const d of report.drift) if (!d.healed) driftJobs.set(d.workflow, (driftJobs.get(d.workflow) ?? 0) + 1);
    }
    this.metrics.syncFinished({
      durationSeconds: report.durationMs / 1000,
      error: report.status === 'failed' || report.jobs.failed.length > 0,
      ...(applied && committedAtS !== undefined ? { lagSeconds: Date.now() / 1000 - committedAtS } : {}),
      ...(driftJobs !== undefined ? { driftJobs } : {}),
    });
  }

  /** Looks at the synced workflows' pools (leader only: followers drive nothing). */
  private async observePools(): Promise<void> {
    const observe = this.options.observePools;
    if (observe === undefined || this.stopped || this.role === 'follower' || this.role === 'deposed') return;
    try {
      this.metrics.poolsObserved(await observe(this.syncedValid));
    } catch (e) {
      this.options.logger.warn('cannot look at the pools (queue depth, agents); their metrics keep their last values', { err: e });
    }
  }

  /** Pushes the audit branch (runs, sync reports) back to a remote, if the repository is one. */
  private async pushAudit(): Promise<void> {
    const remote = this.options.remote;
    if (remote === undefined) return;
    try {
      const r = await remote.pushAudit();
      if (r.pushed) this.options.logger.info('audit branch pushed', { url: remote.url, rebuilt: r.rebuilt });
    } catch (e) {
      this.options.logger.error('cannot push the audit branch to the remote (it is kept locally and pushed at the next sync)', { url: remote.url, err: e });
    }
  }

  private async fileExists(commit: string, path: string): Promise<boolean> {
    try {
      await git.readBlob({ fs, gitdir: resolveGitDirs(this.options.repoDir).commonDir, oid: commit, filepath: path });
      return true;
    } catch {
      // No such file at that commit.
      return false;
    }
  }

  /**
   * Starts a run of every valid workflow whose push trigger the change since the last synced
   * commit matches, with a run id derived from the workflow and the commit: a controller
   * restarted before it noted the commit starts the same id, which is refused as a duplicate.
   */
  private async firePush(head: string, files: readonly FileResult[], committedAt: number): Promise<SyncReport['runs']> {
    const previous = this.lastHead;
    // The first commit a controller sees is its starting point, not a push.
    if (previous === undefined) return [];
    const changed = await changedPaths(this.options.repoDir, previous, head);
    const out: SyncReport['runs'] = [];
    for (const f of files) {
      const wf = f.workflow;
      if (wf === undefined || !pushFires(wf, this.options.branch, changed)) continue;
      const runId = pushRunId(wf.metadata.name, head, committedAt);
      const started = await this.runs.start(wf, this.workflowFiles.source(f.file), runId, `push:${head}`, head);
      if (started === 'exists') out.push({ workflow: wf.metadata.name, runId, trigger: 'push', existed: true });
      else if (started !== undefined) out.push({ workflow: wf.metadata.name, runId, trigger: 'push' });
    }
    return out;
  }


  /**
   * Approval files added or changed since the last synced commit, handed to the runs live in
   * this controller. Who decided is the author of the commit that last changed the file (the
   * file's own `by` is what they wrote, not who they are): a gate with `approvers` takes the
   * decision only if the author's email or name is listed, and records a refusal otherwise.
   */
  private async applyApprovals(head: string): Promise<SyncReport['approvals']> {
    const previous = this.lastHead;
    if (previous === undefined) return [];
    const { logger, repoDir } = this.options;
    const gitdir = resolveGitDirs(repoDir).commonDir;
    const out: SyncReport['approvals'] = [];
    for (const file of (await changedPaths(repoDir, previous, head)).filter((p) => p.startsWith('approvals/'))) {
      let bytes: Uint8Array;
      try {
        bytes = (await git.readBlob({ fs, gitdir, oid: head, filepath: file })).blob;
      } catch {
        // Removed in this push: a decision cannot be taken back.
        continue;
      }
      const read = bytes.length > 64 * 1024 ? undefined : readApproval(file, bytes);
      if (read === undefined || !read.ok) {
        logger.warn('approval file invalid: ignored', { file, commit: head, problems: read === undefined ? ['larger than 64 KiB'] : read.diagnostics.map((d) => `line ${d.line}: ${d.message}`) });
        continue;
      }
      const a = read.approval;
      const [last] = await git.log({ fs, gitdir, ref: head, filepath: file, depth: 1 });
      const author = last?.commit.author ?? { name: 'unknown', email: 'unknown' };
      const commit = last?.oid ?? head;
      const entry = { file, runId: a.runId, task: a.task, decision: a.decision, author: `${author.name} <${author.email}>`, commit };
      const run = this.runs.find(a.runId);
      if (run === undefined) {
        logger.warn('approval for a run that is not live in this controller: ignored', { file, run: a.runId, task: a.task });
        out.push({ ...entry, outcome: 'not-live' });
        continue;
      }
      const by = `${author.email} (commit ${commit.slice(0, 12)})`;
      const identities = [author.email, author.name];
      const ok = a.decision === 'approve' ? run.engine.approve(a.task, by, identities) : run.engine.reject(a.task, by, a.reason, identities);
      logger.info(ok ? 'approval from Git applied' : 'approval from Git not applied (refused, or the gate is not waiting)', { workflow: run.workflow, run: a.runId, task: a.task, decision: a.decision, by });
      out.push({ ...entry, outcome: ok ? 'applied' : 'refused' });
    }
    return out;
  }

  private async record(report: SyncReport): Promise<void> {
    const { app, logger, registry } = this.options;
    const summary = `sync ${report.commit.slice(0, 12)}: ${report.status}; ${report.jobs.created.length} created, ${report.jobs.updated.length} updated, ${report.jobs.pruned.length} pruned, ${report.jobs.failed.length} failed, ${report.drift.length} drifted, ${report.runs.length} run${report.runs.length === 1 ? '' : 's'}`;
    try {
      await app.audit.writeSync(report.commit, report, summary, [`Status: ${report.status}`, `Controller: ${report.controller}`]);
    } catch (e) {
      logger.error('could not record the sync report on the audit branch', { commit: report.commit, err: e });
    }
    if (registry === undefined) return;
    try {
      await registry.putKey(`caravan/sync/${report.commit}`, JSON.stringify(report));
      await registry.putKey('caravan/sync-last', JSON.stringify({ commit: report.commit, status: report.status, at: report.startedAt }));
      const keys = (await registry.listKeys('caravan/sync/')).sort();
      // Only the newest reports stay in Consul; Git has them all. Keys sort by commit, not
      // time, so the order comes from each report's start.
      if (keys.length > KEPT_IN_REGISTRY) {
        const dated: Array<{ key: string; at: string }> = [];
        for (const key of keys) {
          const v = await registry.getKey(key);
          dated.push({ key, at: v !== undefined ? ((JSON.parse(v.value) as { startedAt?: string }).startedAt ?? '') : '' });
        }
        dated.sort((a, b) => (a.at < b.at ? -1 : 1));
        for (const d of dated.slice(0, dated.length - KEPT_IN_REGISTRY)) await registry.deleteKey(d.key);
      }
    } catch (e) {
      logger.error('could not mirror the sync report to the registry', { commit: report.commit, err: e });
    }
  }

  private async readState(): Promise<string | undefined> {
    try {
      const s = JSON.parse(await readFile(this.statePath, 'utf8')) as { head?: unknown };
      return typeof s.head === 'string' ? s.head : undefined;
    } catch {
      // No state yet: this controller has not synced this branch before.
      return undefined;
    }
  }

  private async writeState(head: string): Promise<void> {
    await mkdir(join(this.statePath, '..'), { recursive: true });
    await writeFile(this.statePath, JSON.stringify({ head, at: new Date().toISOString() }) + '\n');
  }
}

function hasNews(r: SyncReport): boolean {
  return r.status !== 'synced' || r.jobs.created.length + r.jobs.updated.length + r.jobs.pruned.length + r.drift.length + r.runs.length + r.approvals.length > 0;
}

/** A push trigger's run id: the commit's time and a hash of the workflow and the commit. */
export function pushRunId(workflow: string, commit: string, committedAtS: number): string {
  const at = new Date(committedAtS * 1000);
  const p = (n: number): string => String(n).padStart(2, '0');
  const stamp = `${at.getUTCFullYear()}${p(at.getUTCMonth() + 1)}${p(at.getUTCDate())}-${p(at.getUTCHours())}${p(at.getUTCMinutes())}${p(at.getUTCSeconds())}`;
  return `${stamp}-${createHash('sha256').update(`${workflow}@push:${commit}`).digest('hex').slice(0, 6)}`;
}
