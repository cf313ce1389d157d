import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as git from 'isomorphic-git';
import type { CaravanApp, StartedRun } from '../app/CaravanApp.js';
import type { Leadership } from '../app/Leadership.js';
import { resolveGitDirs } from '../audit/resolveGitDirs.js';
import { newRunId } from '../audit/updateRef.js';
import { CaravanError } from '../errors/CaravanError.js';
import { changedPaths } from '../gitops/changedPaths.js';
import { readApproval } from '../gitops/readApproval.js';
import { readTreeAtCommit } from '../gitops/readTreeAtRef.js';
import { FileKeyValue } from '../local/FileKeyValue.js';
import type { Logger } from '../run/Logger.js';
import type { KeyValue, Registry } from '../run/Registry.js';
import { crossFileDiagnostics, validateSources, type FileResult } from '../spec/validateWorkflows.js';
import type { Workflow } from '../spec/Workflow.js';
import { pushFires } from './pushTriggers.js';
import type { Reconciler, ReconcileResult } from './Reconciler.js';
import { ScheduleState } from './ScheduleState.js';
import { dueFires, nextFire, scheduledRunId, SCHEDULE_DEFAULTS, type ScheduleSpec } from './ScheduleTrigger.js';

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
}

/** A message that asks for a run (see engine/nats/EventTriggerSource.ts). */
export interface TriggerMessage {
  workflow: string;
  subject: string;
  /** The publisher's message id (Nats-Msg-Id), else the stream sequence. */
  id: string;
  params: Record<string, unknown>;
  ack(): Promise<void>;
  term(reason: string): Promise<void>;
  nak(delayMs?: number): Promise<void>;
}

/** Where event triggers' messages come from, once opened for the current subjects. */
export interface TriggerMessages {
  events(): AsyncIterable<TriggerMessage>;
  updateSubjects(workflows: Workflow[]): Promise<void>;
  close(): Promise<void>;
}

/** A schedule trigger of a workflow at the synced commit. */
interface Schedule {
  workflow: Workflow;
  source: string;
  commit: string;
  /** Its position among the workflow's triggers: its state's key. */
  index: number;
  spec: ScheduleSpec & { params?: Record<string, unknown> };
}

/** What one schedule has going: its runs still running, and a fire held back (buffer-one). */
interface ScheduleRuns {
  running: Set<StartedRun>;
  buffered?: Date;
}

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
  private lastNomadIndex: number | undefined;
  private last: SyncReport | undefined;
  private lastError: string | undefined;
  private readonly runs = new Set<StartedRun>();
  /** Each workflow's file at the synced commit. */
  private readonly files = new Map<string, string>();
  private readonly statePath: string;
  /** The text of each workflow file at the commit being synced. */
  private readonly sources = new Map<string, string>();
  /**
   * Validation of each workflow file by path and blob id: a file that did not change between
   * commits is not read or validated again (at 200 workflows that was most of a sync).
   */
  private validated = new Map<string, { result: FileResult; source: string }>();
  private schedules: Schedule[] = [];
  private readonly scheduleRuns = new Map<string, ScheduleRuns>();
  private scheduleTimer: NodeJS.Timeout | undefined;
  private firing: Promise<unknown> = Promise.resolve();
  private readonly scheduleState: ScheduleState;
  private readonly kv: KeyValue;
  private readonly now: () => number;
  private role: 'standalone' | 'follower' | 'leader' | 'deposed' = 'standalone';
  /** The valid workflows at the synced commit, by name (what event triggers start). */
  private readonly current = new Map<string, { workflow: Workflow; source: string; commit: string }>();
  private messages: TriggerMessages | undefined;
  private consuming: Promise<void> | undefined;
  /** Event messages refused (bad params, unknown workflow): counted for operators. */
  refusedEvents = 0;
  private campaign: Promise<void> | undefined;
  private unlisten: (() => void) | undefined;

  constructor(private readonly options: ControllerOptions) {
    const gitdir = resolveGitDirs(options.repoDir).gitdir;
    this.statePath = join(gitdir, 'caravan', 'controller', `${options.branch.replace(/[^A-Za-z0-9._-]/g, '_')}.json`);
    this.kv = options.state ?? options.registry ?? new FileKeyValue(join(gitdir, 'caravan', 'kv'));
    this.scheduleState = new ScheduleState(this.kv);
    this.now = options.now ?? Date.now;
  }

  /**
   * Picks up unfinished runs of an earlier controller, syncs once, then keeps watching. With
   * a leader lock, all of that waits until this controller is elected (elected() resolves
   * then); until then it is a follower and does nothing.
   */
  async start(): Promise<void> {
    const leadership = this.options.leadership;
    if (leadership === undefined) {
      await this.begin();
      return;
    }
    this.role = 'follower';
    this.options.logger.info('campaigning for the leader lock; a follower until elected', {});
    this.campaign = (async () => {
      await leadership.acquire();
      if (this.stopped) return;
      this.role = 'leader';
      this.unlisten = leadership.onLost((e) => {
        this.role = 'deposed';
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
    await this.recoverRuns();
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
    return { role: this.role, lastSync: this.last, error: this.lastError, head: this.lastHead, runs: this.runs.size };
  }

  /**
   * Stops watching: the sync under way finishes, runs are handed over (their journal and a
   * checkpoint are written; the next controller recovers them), and nothing more starts.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.scheduleTimer !== undefined) clearTimeout(this.scheduleTimer);
    await this.running;
    await this.firing;
    const runs = [...this.runs];
    for (const r of runs) r.engine.relinquish(new CaravanError('INTERRUPTED', `the controller stopped; the next one recovers run ${r.runId}`, { data: { runId: r.runId } }));
    await Promise.allSettled(runs.map((r) => r.done));
    await this.messages?.close().catch((e: unknown) => this.options.logger.error('closing the event trigger source failed', { err: e }));
    await this.consuming;
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
      void this.syncNow('interval').finally(() => this.schedule());
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
      this.lastError = `branch ${branch} not found in ${repoDir}`;
      logger.error('cannot read the watched branch', { branch, err: e });
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
    const files = await this.filesAt(head);
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
      this.collectSchedules(head, files);
      await this.followEvents(head, files);
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
    this.lastHead = head;
    await this.writeState(head);
    this.last = report;
    // A commit's report is recorded once, and again only when something was done or went wrong.
    if (firstOfHead || hasNews(report)) await this.record(report);
    logger.info('synced', { reason, commit: head, status: report.status, created: report.jobs.created.length, updated: report.jobs.updated.length, pruned: report.jobs.pruned.length, failed: report.jobs.failed.length, drift: report.drift.length, runs: report.runs.length, invalid: report.invalid.length, durationMs: report.durationMs });
    this.options.onSync?.(report);
    await this.pushAudit();
    this.armSchedules();
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

  /** The schedule triggers of the valid workflows at the synced commit (an invalid one keeps its previous ones). */
  private collectSchedules(commit: string, files: readonly FileResult[]): void {
    const invalid = new Set(files.filter((f) => f.workflow === undefined).map((f) => f.file));
    const kept = this.schedules.filter((s) => invalid.has(this.fileOf(s.workflow.metadata.name) ?? ''));
    const next: Schedule[] = [...kept];
    for (const f of files) {
      const wf = f.workflow;
      if (wf === undefined) continue;
      this.files.set(wf.metadata.name, f.file);
      (wf.spec.triggers ?? []).forEach((t, index) => {
        if (t.schedule !== undefined) next.push({ workflow: wf, source: this.sources.get(f.file) ?? '', commit, index, spec: t.schedule });
      });
    }
    this.schedules = next;
  }

  /**
   * Keeps the event trigger source on the valid workflows of the synced commit (an invalid
   * one keeps its previous version), opening it on the first sync, and consumes it.
   */
  private async followEvents(commit: string, files: readonly FileResult[]): Promise<void> {
    const invalid = new Set(files.filter((f) => f.workflow === undefined).map((f) => f.file));
    for (const [name] of [...this.current]) if (!invalid.has(this.fileOf(name) ?? '')) this.current.delete(name);
    for (const f of files) if (f.workflow !== undefined) this.current.set(f.workflow.metadata.name, { workflow: f.workflow, source: this.sources.get(f.file) ?? '', commit });
    if (this.options.openEvents === undefined) return;
    const workflows = [...this.current.values()].map((c) => c.workflow);
    if (this.messages === undefined) {
      this.messages = await this.options.openEvents(workflows);
      this.consuming = this.consume(this.messages);
    } else await this.messages.updateSubjects(workflows);
  }

  private async consume(source: TriggerMessages): Promise<void> {
    try {
      for await (const m of source.events()) {
        if (this.stopped) {
          await m.nak();
          continue;
        }
        await this.onMessage(m);
      }
    } catch (e) {
      if (!this.stopped) this.options.logger.error('the event trigger source failed; event triggers are not served until the controller restarts', { err: e });
    }
  }

  /**
   * One event message: a run of its workflow with the payload's params. The message id is
   * recorded (check-and-set) with the run id before the run starts, so a redelivered message
   * finds its run and starts nothing new; a payload whose params do not fit the workflow is
   * refused for good (terminated, logged with the reason, counted), never half-started.
   */
  private async onMessage(m: TriggerMessage): Promise<void> {
    const { logger, app } = this.options;
    const log = { workflow: m.workflow, subject: m.subject, messageId: m.id.slice(0, 128) };
    const target = this.current.get(m.workflow);
    if (target === undefined) {
      this.refusedEvents++;
      await m.term('no such workflow at the synced commit');
      logger.warn('event for a workflow that is not there: refused', log);
      return;
    }
    const key = `caravan/events/${m.workflow}/${createHash('sha256').update(m.id).digest('hex').slice(0, 40)}`;
    try {
      const seen = await this.kv.getKey(key);
      let runId: string;
      if (seen !== undefined) {
        runId = seen.value;
        if (await app.runExists(runId)) {
          await m.ack();
          logger.info('event seen before: its run exists, nothing started', { ...log, run: runId });
          return;
        }
      } else {
        runId = newRunId(new Date(this.now()));
        if (!(await this.kv.putKey(key, runId, { cas: 0 }))) {
          await m.nak(1000);
          return;
        }
      }
      try {
        const run = await app.startLoaded({ workflow: target.workflow, source: target.source }, m.params, { trigger: `event:${m.subject}`, commit: target.commit, runId });
        this.track(run);
        logger.info('run started by an event', { ...log, run: runId });
        await m.ack();
      } catch (e) {
        if (e instanceof CaravanError && e.code === 'PARAM_INVALID') {
          this.refusedEvents++;
          await this.kv.deleteKey(key);
          // Names only: the values are the publisher's, and may be secrets.
          const names = (Array.isArray(e.data?.['params']) ? (e.data['params'] as string[]) : []).map((n) => n.slice(0, 64));
          const reason = `params that do not fit the workflow's declarations: ${names.join(', ') || 'unknown'}`;
          await m.term(reason);
          logger.warn('event refused: its params do not fit the workflow', { ...log, reason });
          return;
        }
        if (e instanceof CaravanError && e.code === 'RUN_SKIPPED') {
          await m.ack();
          logger.info('event run skipped', { ...log, reason: e.message });
          return;
        }
        throw e;
      }
    } catch (e) {
      // Not the message's fault (the audit branch, the registry): it comes back later.
      logger.error('an event could not start its run; it will be delivered again', { ...log, err: e });
      await m.nak(5000).catch(() => undefined);
    }
  }

  private fileOf(workflow: string): string | undefined {
    return this.files.get(workflow);
  }

  /** Wakes at the next scheduled time of any schedule (at most a minute away, so clock jumps are caught). */
  private armSchedules(): void {
    if (this.stopped) return;
    if (this.scheduleTimer !== undefined) clearTimeout(this.scheduleTimer);
    const now = this.now();
    let soonest = now + 60_000;
    for (const s of this.schedules) {
      const at = nextFire(s.spec, new Date(now));
      if (at !== undefined) soonest = Math.min(soonest, at.getTime());
    }
    // A little after the time, so that it is in (lastFire, now].
    this.scheduleTimer = setTimeout(() => {
      void this.fireSchedules().finally(() => this.armSchedules());
    }, Math.max(0, soonest - now) + 50);
    this.scheduleTimer.unref();
  }

  /**
   * Fires every schedule whose time has come (per its catch-up policy), each scheduled time
   * at most once: its run id is derived from the workflow and the time, and the last fire is
   * recorded with check-and-set after the run started. A schedule seen for the first time
   * starts from now. Returns the runs started.
   */
  fireSchedules(at?: Date): Promise<Array<{ workflow: string; runId: string; at: string }>> {
    if (this.role === 'follower' || this.role === 'deposed') return Promise.resolve([]);
    const run = this.firing.then(() => this.fireDue(at ?? new Date(this.now())));
    this.firing = run.catch(() => undefined);
    return run;
  }

  private async fireDue(now: Date): Promise<Array<{ workflow: string; runId: string; at: string }>> {
    const { logger } = this.options;
    const started: Array<{ workflow: string; runId: string; at: string }> = [];
    for (const s of this.schedules) {
      const name = s.workflow.metadata.name;
      try {
        const last = await this.scheduleState.lastFire(name, s.index);
        const due = dueFires(s.spec, last?.at, now);
        if (last === undefined && due.length === 0) {
          await this.scheduleState.recordFire(name, s.index, now, 0);
          logger.info('schedule seen for the first time: it fires from its next time on', { workflow: name, trigger: s.index, cron: s.spec.cron });
          continue;
        }
        for (const at of due) {
          const runId = await this.fireOne(s, at);
          if (runId !== undefined) started.push({ workflow: name, runId, at: at.toISOString() });
        }
        if (due.length > 0 && !(await this.scheduleState.recordFire(name, s.index, due.at(-1)!, last?.index ?? 0))) {
          logger.warn('another controller recorded this schedule meanwhile; its run ids keep a time from starting twice', { workflow: name, trigger: s.index });
        }
      } catch (e) {
        logger.error('a schedule could not fire', { workflow: name, trigger: s.index, err: e });
      }
    }
    return started;
  }

  /** One scheduled time, under the schedule's overlap policy; returns the run id if a run started. */
  private async fireOne(s: Schedule, at: Date): Promise<string | undefined> {
    const name = s.workflow.metadata.name;
    const key = `${name}#${s.index}`;
    const runs = this.scheduleRuns.get(key) ?? { running: new Set<StartedRun>() };
    this.scheduleRuns.set(key, runs);
    const overlap = s.spec.overlap ?? SCHEDULE_DEFAULTS.overlap;
    const log = { workflow: name, trigger: s.index, scheduledAt: at.toISOString(), overlap };
    if (runs.running.size > 0) {
      if (overlap === 'skip') {
        this.options.logger.info('scheduled time skipped: the previous run of this schedule is still running (overlap: skip)', log);
        return undefined;
      }
      if (overlap === 'buffer-one') {
        if (runs.buffered === undefined) this.options.logger.info('scheduled time held until the running run ends (overlap: buffer-one)', log);
        else this.options.logger.info('scheduled time dropped: one is already held (overlap: buffer-one)', log);
        runs.buffered ??= at;
        return undefined;
      }
      if (overlap === 'cancel-running') {
        for (const r of runs.running) r.engine.cancel(`schedule ${at.toISOString()} (overlap: cancel-running)`);
      }
    }
    const runId = scheduledRunId(name, at);
    const run = await this.startRun(s.workflow, s.source, runId, `schedule:${at.toISOString()}`, s.commit, s.spec.params ?? {});
    if (run === undefined || run === 'exists') return undefined;
    runs.running.add(run);
    void run.done.catch(() => undefined).finally(() => {
      runs.running.delete(run);
      const held = runs.buffered;
      if (held !== undefined && runs.running.size === 0 && !this.stopped) {
        runs.buffered = undefined;
        void this.fireOne(s, held);
      }
    });
    return runId;
  }

  /** The workflow files at a commit, validated, and their text (a run keeps the definition it ran). */
  private async filesAt(commit: string): Promise<FileResult[]> {
    const dir = this.options.workflowsDir.replace(/^\.\/+|\/+$/g, '');
    const key = (path: string, oid: string): string => `${path}\0${oid}`;
    let tree;
    try {
      tree = await readTreeAtCommit(this.options.repoDir, commit, dir, (p) => /\.ya?ml$/i.test(p), (path, oid) => this.validated.has(key(path, oid)));
    } catch (e) {
      // A commit without the workflow directory holds no workflows.
      if (e instanceof CaravanError && e.code === 'PATH_NOT_FOUND') return [];
      throw e;
    }
    const next = new Map<string, { result: FileResult; source: string }>();
    for (const f of tree) {
      const k = key(f.path, f.oid);
      if (!this.validated.has(k)) {
        const source = new TextDecoder().decode(f.bytes);
        next.set(k, { result: slim(validateSources([{ file: f.path, bytes: f.bytes }]).files[0]!, source), source });
      } else next.set(k, this.validated.get(k)!);
    }
    this.validated = next;
    this.sources.clear();
    for (const { result, source } of next.values()) this.sources.set(result.file, source);
    const results = [...next.values()].map((v) => v.result);
    // Checks across files (two files with one workflow name): the later file is invalid.
    const cross = crossFileDiagnostics(results).filter((d) => d.severity === 'error');
    return results.map((r) => {
      const mine = cross.filter((d) => d.file === r.file);
      return mine.length === 0 ? r : { ...r, workflow: undefined, diagnostics: [...r.diagnostics, ...mine] };
    });
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
      const started = await this.startRun(wf, this.sources.get(f.file) ?? '', runId, `push:${head}`, head);
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
      const run = [...this.runs].find((r) => r.runId === a.runId);
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

  /** Starts a trigger's run; 'exists' when a run with that id was started before, undefined when it was not started. */
  private async startRun(workflow: Workflow, source: string, runId: string, trigger: string, commit: string, params: Record<string, unknown> = {}): Promise<StartedRun | 'exists' | undefined> {
    const { app, logger } = this.options;
    const log = { workflow: workflow.metadata.name, run: runId, trigger };
    try {
      const run = await app.startLoaded({ workflow, source }, params, { trigger, commit, runId });
      this.track(run);
      logger.info('run started by a trigger', log);
      return run;
    } catch (e) {
      if (e instanceof CaravanError && e.code === 'RUN_SKIPPED') {
        const existed = e.data?.['duplicate'] === true;
        logger.info(existed ? 'run exists already: not started twice' : 'run skipped by the concurrency policy', { ...log, reason: e.message });
        return existed ? 'exists' : undefined;
      }
      logger.error('a trigger could not start its run', { ...log, err: e });
      return undefined;
    }
  }

  private track(run: StartedRun): void {
    this.runs.add(run);
    run.done.then(
      ({ state }) => this.options.logger.info('run over', { workflow: run.workflow, run: run.runId, status: state.status }),
      (e: unknown) => this.options.logger.warn('run handed over', { workflow: run.workflow, run: run.runId, err: e }),
    ).finally(() => this.runs.delete(run));
  }

  /** Runs whose earlier controller died (a journal, no live process): continued here. */
  private async recoverRuns(): Promise<void> {
    const { app, logger } = this.options;
    for (const runId of await app.live.journalIds()) {
      if ((await app.live.get(runId)) !== undefined) continue;
      try {
        const r = await app.recover(runId);
        if ('engine' in r) {
          this.track(r);
          logger.info('run recovered from its journal', { workflow: r.workflow, run: runId });
        } else logger.info('finished run recorded from its journal', { workflow: r.workflow, run: runId });
      } catch (e) {
        logger.error('a run left by an earlier controller could not be recovered (caravan recover it by hand)', { run: runId, err: e });
      }
    }
  }

  private async record(report: SyncReport): Promise<void> {
    const { app, logger, registry } = this.options;
    const summary = `sync ${report.commit.slice(0, 12)}: ${report.status}; ${report.jobs.created.length} created, ${report.jobs.updated.length} updated, ${report.jobs.pruned.length} pruned, ${report.jobs.failed.length} failed, ${report.drift.length} drifted, ${report.runs.length} runs`;
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

/**
 * What the controller keeps of a validated file between syncs: the workflow and its
 * diagnostics, without the parsed document, position index and DAG (tens of MB at 200
 * workflows) that only a first report needs. The one position a cross-file error names (a
 * duplicate `metadata.name`) is found again in the text when asked, which is rare.
 */
function slim(r: FileResult, source: string): FileResult {
  return {
    file: r.file,
    name: r.name,
    workflow: r.workflow,
    dag: undefined,
    diagnostics: r.diagnostics,
    subWorkflows: r.subWorkflows,
    locate: (path) => (path.length === 2 && path[0] === 'metadata' && path[1] === 'name' ? nameLine(source) : { line: 1, col: 1 }),
  };
}

/** The line of `name:` under a top-level `metadata:` (block style, as workflows are written). */
function nameLine(source: string): { line: number; col: number } {
  const lines = source.split('\n');
  const top = lines.findIndex((l) => /^metadata:\s*(#.*)?$/.test(l));
  for (let i = top + 1; top >= 0 && i < lines.length && !/^\S/.test(lines[i]!); i++) {
    const m = /^(\s+)name:/.exec(lines[i]!);
    if (m !== null) return { line: i + 1, col: m[1]!.length + 1 };
  }
  return { line: 1, col: 1 };
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
