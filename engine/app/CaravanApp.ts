import { existsSync } from 'node:fs';
import { join } from 'node:path';
import nodeFs from 'node:fs';
import * as git from 'isomorphic-git';
import { GitAuditStore } from '../audit/GitAuditStore.js';
import { readHeadTarget } from '../audit/resolveGitDirs.js';
import { readJournal } from '../audit/readJournal.js';
import { newRunId } from '../audit/updateRef.js';
import { CaravanError } from '../errors/CaravanError.js';
import { noopLogger } from '../run/Logger.js';
import type { PoolSample } from '../run/Metrics.js';
import { parseParams } from '../run/parseParams.js';
import type { Registry } from '../run/Registry.js';
import type { EventLog } from '../run/EventLog.js';
import type { RetryOrigin, RunEvent } from '../run/RunEvent.js';
import type { RetrySelection } from '../run/planRetry.js';
import { buildRunPlan } from '../run/RunPlan.js';
import { applyRunEvent, initialRunState } from '../run/reduceRun.js';
import { RunRecorder } from '../audit/RunRecorder.js';
import { workflowDirty, type WorkflowDirty } from '../audit/workflowDirty.js';
import type { RunState } from '../run/RunState.js';
import type { Workflow } from '../spec/Workflow.js';
import { validateText } from '../spec/validateWorkflows.js';
import { Admission } from './Admission.js';
import { createBackends, type BackendConfig, type Backends } from './createBackends.js';
import { Leadership, type LeadershipOptions } from './Leadership.js';
import { LiveRuns } from './LiveRuns.js';
import { RunControl } from './RunControl.js';
import { RunQueries } from './RunQueries.js';
import { readRetrySource } from './readRetrySource.js';
import { RunSupervisor, type StartedRun } from './RunSupervisor.js';
import { WorkflowCatalog, type LoadedWorkflow } from './WorkflowCatalog.js';

export type { StartedRun } from './RunSupervisor.js';

/** A run that was already over when recovered: its journal was written to the audit branch. */
export interface RecordedRun {
  runId: string;
  workflow: string;
  recorded: { state: RunState; auditCommit: string };
}

/** A retry under way: the run it retries, and what it reuses and runs again. */
export interface RetriedRun extends StartedRun {
  retryOf: string;
  selection: RetrySelection;
}

export interface CaravanAppOptions extends BackendConfig {
  /** Workflow directory, relative to the repository root (default workflows). */
  workflowsDir?: string;
  /** Checkpoint policy (see RunRecorder). */
  checkpointEveryEvents?: number;
  checkpointEveryMs?: number;
  onEvent?: (e: RunEvent, state: RunState) => void;
  /**
   * Act as the cluster's controller: schedule only while holding the leader lock in the
   * registry, and stop at once when it is lost (done() then rejects with LEADERSHIP_LOST;
   * the next leader recovers the run).
   */
  leader?: LeadershipOptions;
}

/**
 * The application layer of one process: what `caravan run`, `caravan recover`, the CLI's read
 * commands and (next) the controller and the HTTP API stand on. It opens the process's
 * backends once, on first use, and close() closes them once.
 */
export class CaravanApp {
  readonly audit: GitAuditStore;
  readonly live: LiveRuns;
  readonly catalog: WorkflowCatalog;
  readonly queries: RunQueries;
  readonly control: RunControl;
  private readonly admission: Admission;
  private backends: Promise<Backends> | undefined;
  /** Child runs started with `workflow: {wait: false}` that are still going. */
  private readonly detached = new Set<StartedRun>();
  private supervisor: Promise<RunSupervisor> | undefined;

  constructor(private readonly options: CaravanAppOptions) {
    if (!existsSync(join(options.repoDir, '.git'))) {
      throw new CaravanError('NOT_A_REPOSITORY', `${options.repoDir} is not the root of a Git repository; Caravan records runs in Git (run \`git init\` first)`, { data: { dir: options.repoDir } });
    }
    // `.git` may be a file (a linked worktree): the store resolves the directories as git does.
    this.audit = new GitAuditStore(options.repoDir);
    // Live runs, journals and control channels are this checkout's, in its own Git directory:
    // a run belongs to the process and working tree that started it, and a worktree's
    // directory is where git keeps everything per checkout (HEAD, index). The audit branch is
    // shared by all worktrees (GitAuditStore writes it in the common directory).
    this.live = new LiveRuns(this.audit.gitdir);
    this.catalog = new WorkflowCatalog(options.repoDir, options.workflowsDir);
    this.queries = new RunQueries(this.audit, this.live, options.parallelism);
    this.control = new RunControl(this.audit, this.live, this.queries);
    this.admission = new Admission(this.live);
  }

  /** Finds a valid workflow by name or file (see WorkflowCatalog). */
  loadWorkflow(nameOrPath: string): Promise<LoadedWorkflow> {
    return this.catalog.load(nameOrPath);
  }

  /** Starts a run of a workflow of the working tree, after the workflow's concurrency policy admits it. */
  async start(nameOrPath: string, rawParams: Record<string, unknown>, trigger = 'manual'): Promise<StartedRun> {
    const loaded = await this.catalog.load(nameOrPath);
    const commit = await this.headCommit();
    // Recorded with HEAD's commit, a run of a file with changes not committed says so.
    const dirty = await workflowDirty(this.audit, commit, loaded.file, loaded.source);
    return this.startLoaded(loaded, rawParams, { trigger, commit, ...(dirty !== undefined ? { workflowDirty: dirty } : {}) });
  }

  /**
   * Starts a run of a workflow definition the caller loaded (the controller: the workflow at
   * a commit of the watched branch), after the concurrency policy admits it. A given run id
   * (a trigger's deterministic one) is refused if that run exists already, so a trigger that
   * fires twice for the same reason starts one run.
   */
  async startLoaded(loaded: Pick<LoadedWorkflow, 'workflow' | 'source'>, rawParams: Record<string, unknown>, how: { trigger: string; commit: string | undefined; runId?: string; workflowDirty?: WorkflowDirty; retry?: RetryOrigin }): Promise<StartedRun> {
    const { workflow, source } = loaded;
    const params = parseParams(workflow, rawParams);
    // A foreign or blocked audit branch is refused before any task runs, not after.
    await this.audit.assertWritable();
    if (how.runId !== undefined && (await this.runExists(how.runId))) {
      throw new CaravanError('RUN_SKIPPED', `run ${how.runId} of ${workflow.metadata.name} exists already (${how.trigger}); not started again`, { data: { runId: how.runId, workflow: workflow.metadata.name, duplicate: true } });
    }
    const supervisor = await this.openSupervisor();
    const release = await this.admission.admit(workflow, (m) => (this.options.logger ?? noopLogger).warn(m, { workflow: workflow.metadata.name }));
    try {
      const runId = how.runId ?? newRunId(new Date((await this.openBackends()).clock.now()));
      return await supervisor.launch({ workflow, source, runId, commit: how.commit, begin: (engine) => engine.start(params, how.trigger, how.commit, how.retry), previous: [], ...(how.workflowDirty !== undefined ? { workflowDirty: how.workflowDirty } : {}) });
    } finally {
      await release();
    }
  }

  /**
   * Starts a retry of a finished run (`caravan retry`): a new run of the definition, commit
   * and params the run had, which reuses the outputs of the tasks that succeeded and runs
   * again those that did not, with everything downstream of them (see planRetry); `from`
   * reruns that task and its dependants too. Secret params are never recorded, so a run that
   * had any needs them again in `secretParams`, as for recover. The new run records
   * `retryOf` (trailer `Retry-Of:`), and its trigger is `retry:<run-id>` (`retry:<run-id>:by:<name>` when
   * the caller is known).
   */
  async retry(runId: string, options: { from?: string; secretParams?: Record<string, unknown>; by?: string } = {}): Promise<RetriedRun> {
    const src = await readRetrySource(this.audit, this.live, runId, { ...(options.from !== undefined ? { from: options.from } : {}), ...(this.options.parallelism !== undefined ? { parallelism: this.options.parallelism } : {}) });
    const secrets = secretParamsAgain(src.workflow, runId, src.params, options.secretParams ?? {});
    const declared = src.workflow.spec.params ?? {};
    const recorded = Object.fromEntries(Object.entries(src.params).filter(([n]) => declared[n]?.secret !== true));
    const started = await this.startLoaded({ workflow: src.workflow, source: src.source }, { ...recorded, ...secrets }, {
      // Who asked, when known (the API's token name): `retry:<run>:by:<name>`.
      trigger: options.by !== undefined ? `retry:${runId}:by:${options.by}` : `retry:${runId}`,
      commit: src.commit,
      retry: { of: runId, reuse: src.selection.reuse },
      ...(src.workflowDirty !== undefined ? { workflowDirty: src.workflowDirty } : {}),
    });
    return { ...started, retryOf: runId, selection: src.selection };
  }

  /** Whether a run with this id was ever started here: a journal, or a record on the audit branch. */
  async runExists(runId: string): Promise<boolean> {
    return existsSync(this.live.journalPath(runId)) || (await this.audit.readRun(runId)) !== undefined;
  }

  /**
   * Continues a run whose process died: its recorded events (last checkpoint, then the local
   * journal) are replayed, attempts that were in flight are retried, and tasks that
   * succeeded are never run again. The workflow is the one the run started with. Secret
   * params are never recorded, so a run that had any needs them again in `secretParams`
   * (`caravan recover <run> --param name=value`).
   */
  async recover(runId: string, secretParams: Record<string, unknown> = {}): Promise<StartedRun | RecordedRun> {
    const live = await this.live.get(runId);
    if (live !== undefined) throw new CaravanError('RUN_NOT_LIVE', `run ${runId} is still running (process ${live.pid})`, { data: { runId, pid: live.pid } });
    const stored = await this.audit.readRun(runId);
    const journal = await readJournal(this.live.journalPath(runId));
    if (stored === undefined && journal === undefined) throw new CaravanError('RUN_NOT_FOUND', `no run ${runId} on caravan/runs or in the local journal`, { data: { runId } });
    // The journal is a superset of the last checkpoint unless it was lost with the machine.
    const events = journal !== undefined && journal.events.length >= (stored?.events.length ?? 0) ? journal.events : stored!.events;
    const source = stored?.workflowSource ?? journal?.header.workflowSource;
    const dirty = journal?.header.workflowDirty ?? stored?.workflowDirty;
    const started = events.find((e) => e.type === 'run.started');
    if (source === undefined || started === undefined || started.type !== 'run.started') {
      throw new CaravanError('RUN_NOT_FOUND', `run ${runId} has no recorded workflow definition to recover from`, { data: { runId } });
    }
    const final = events.find((e) => e.type === 'run.succeeded' || e.type === 'run.failed' || e.type === 'run.cancelled');
    const parsed = validateText(`${runId}/workflow.yaml`, source);
    if (final !== undefined) {
      // Over, but its journal holds more than Git (the final write failed: a full disk, a
      // blocked branch): write the record now, so the run is not stranded in the journal.
      if (journal !== undefined && parsed.workflow !== undefined && journal.events.length > (stored?.events.length ?? 0)) {
        await this.audit.assertWritable();
        return this.recordJournal(parsed.workflow, source, runId, started.commit, journal.events, dirty);
      }
      throw new CaravanError('RUN_NOT_LIVE', `run ${runId} is already over (${final.type.slice(4)})`, { data: { runId, status: final.type.slice(4) } });
    }
    if (parsed.workflow === undefined) throw new CaravanError('WORKFLOW_INVALID', `the recorded workflow of run ${runId} no longer validates`, { data: { runId } });
    const secrets = secretParamsAgain(parsed.workflow, runId, started.params, secretParams);
    await this.audit.assertWritable();
    const supervisor = await this.openSupervisor();
    return supervisor.launch({
      workflow: parsed.workflow,
      source,
      runId,
      commit: started.commit,
      begin: (engine) => {
        engine.keepSecretParams(secrets);
        engine.recover(events);
      },
      previous: events,
      ...(dirty !== undefined ? { workflowDirty: dirty } : {}),
    });
  }

  /** Writes a finished run's journal to the audit branch (with its note), then removes the journal. */
  private async recordJournal(workflow: Workflow, source: string, runId: string, commit: string | undefined, events: RunEvent[], dirty: WorkflowDirty | undefined): Promise<RecordedRun> {
    const plan = buildRunPlan(workflow, { maxParallel: this.options.parallelism ?? 32 });
    const state = initialRunState(plan, runId);
    for (const e of events) applyRunEvent(state, plan, e);
    const recorder = new RunRecorder(this.audit, {
      workflow: workflow.metadata.name,
      runId,
      workflowSource: source,
      ...(commit !== undefined ? { workflowCommit: commit } : {}),
      ...(dirty !== undefined ? { workflowDirty: dirty } : {}),
      journalPath: this.live.journalPath(runId),
      previous: events,
      ...(this.options.logger !== undefined ? { logger: this.options.logger } : {}),
    });
    await recorder.open();
    const auditCommit = await recorder.finish(state);
    return { runId, workflow: workflow.metadata.name, recorded: { state, auditCommit } };
  }

  /**
   * The process's leader lock (with the `leader` option), opening the backends if need be:
   * the controller holds it for its whole term, and its runs share the term.
   */
  async leadership(): Promise<Leadership | undefined> {
    return (await this.openSupervisor()).leadership;
  }

  /** The process's registry (Consul, or the one given), opening the backends if need be. */
  async registry(): Promise<Registry | undefined> {
    return (await this.openBackends()).registry;
  }

  /** Each pool of these workflows as it is now (see Backends.observePools), opening the backends if need be. */
  async observePools(workflows: readonly Workflow[]): Promise<PoolSample[]> {
    return (await this.openBackends()).observePools(workflows);
  }

  /** The bus's stored events by sequence (NATS JetStream), opening the backends if need be; undefined on the in-memory bus. */
  async eventLog(): Promise<EventLog | undefined> {
    return (await this.openBackends()).eventLog;
  }

  /** Child runs started without waiting (`workflow: {wait: false}`) and still going. */
  detachedRuns(): StartedRun[] {
    return [...this.detached];
  }

  /** Closes the backends (NATS connection, executor, ...) once; runs still going are not waited for. */
  async close(): Promise<void> {
    const b = this.backends;
    if (b === undefined) return;
    // Backends that failed to open threw to the run that asked for them; nothing is open to close.
    await (await b.catch(() => undefined))?.close();
  }

  private openBackends(): Promise<Backends> {
    this.backends ??= createBackends({
      ...this.options,
      // Local attempts' state lives beside the journals, so a recovered run can adopt them.
      stateDir: join(this.audit.gitdir, 'caravan'),
      runAwaitsRecovery: (runId) => existsSync(this.live.journalPath(runId)),
    }, async (name, params, parent, how) => {
      const child = await this.start(name, params, `workflow:${parent.runId}/${parent.task}`);
      if (!how.wait) {
        // Started and recorded (its first checkpoint is written before start returns): it runs
        // on by itself, and whoever closes this application waits for it (detachedRuns).
        this.detached.add(child);
        void child.done.catch(() => undefined).finally(() => this.detached.delete(child));
        const outputs: Record<string, string> = {};
        return { runId: child.runId, status: 'started', outputs };
      }
      const { state } = await child.done;
      // The child's spec.outputs, evaluated as it succeeded (and recorded in its run.json).
      return { runId: child.runId, status: state.status, outputs: { ...(state.outputs ?? {}), status: state.status } };
    });
    return this.backends;
  }

  private openSupervisor(): Promise<RunSupervisor> {
    this.supervisor ??= (async () => {
      const leader = this.options.leader;
      if (leader !== undefined && this.options.registry === undefined) throw new CaravanError('USAGE', 'leader election needs a registry: use --leader with --registry consul');
      const backends = await this.openBackends();
      return { backends, leadership: leader !== undefined ? new Leadership(backends.registry!, leader) : undefined };
    })().then(({ backends, leadership }) => new RunSupervisor({
      backends,
      audit: this.audit,
      live: this.live,
      ...(leadership !== undefined ? { leadership } : {}),
      ...pick(this.options, ['parallelism', 'checkpointEveryEvents', 'checkpointEveryMs', 'onEvent', 'logger', 'metrics']),
    })).then((supervisor) => {
      this.queries.readFromMemory((runId) => supervisor.current(runId));
      return supervisor;
    });
    return this.supervisor;
  }

  private async headCommit(): Promise<string | undefined> {
    try {
      // HEAD is per worktree, the branch it names is in the common directory.
      const head = readHeadTarget(this.audit);
      return 'oid' in head ? head.oid : await git.resolveRef({ fs: nodeFs, gitdir: this.audit.commonDir, ref: head.ref });
    } catch {
      // A repository without a commit yet: runs of its working tree have no workflow commit.
      return undefined;
    }
  }
}

/** The defined values of some keys: exactOptionalPropertyTypes forbids passing undefined on. */
function pick<T extends object, K extends keyof T>(o: T, keys: readonly K[]): Partial<Pick<T, K>> {
  const out: Partial<Pick<T, K>> = {};
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
  return out;
}

/**
 * The secret params a recovered run needs again, checked and converted like any param: every
 * secret param the run started with must be given, and nothing else may be.
 */
function secretParamsAgain(workflow: Workflow, runId: string, recorded: Record<string, unknown>, given: Record<string, unknown>): Record<string, unknown> {
  const declared = workflow.spec.params ?? {};
  const secret = Object.keys(recorded).filter((n) => declared[n]?.secret === true);
  const problems: string[] = [];
  for (const n of Object.keys(given)) if (!secret.includes(n)) problems.push(`'${n}' is not a secret param of this run (only those are given again)`);
  const missing = secret.filter((n) => !Object.hasOwn(given, n));
  if (missing.length > 0) problems.push(`run ${runId} needs its secret param${missing.length === 1 ? '' : 's'} again, as they are never recorded: ${missing.map((n) => `--param ${n}=...`).join(' ')}`);
  if (problems.length > 0) throw new CaravanError('PARAM_INVALID', problems.join('; '), { data: { runId, missing, problems } });
  if (secret.length === 0) return {};
  // The same conversion and checks as at the start, on a workflow of the secret params alone.
  const only = { ...workflow, spec: { ...workflow.spec, params: Object.fromEntries(secret.map((n) => [n, declared[n]!])) } };
  return parseParams(only, given);
}
