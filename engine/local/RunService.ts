import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import * as git from 'isomorphic-git';
import nodeFs from 'node:fs';
import { GitAuditStore } from '../audit/GitAuditStore.js';
import { RunRecorder, type JournalHeader } from '../audit/RunRecorder.js';
import { newRunId } from '../audit/updateRef.js';
import { CaravanError } from '../errors/CaravanError.js';
import type { Bus } from '../run/Bus.js';
import type { JetStreamBus } from '../nats/JetStreamBus.js';
import { realClock, type Clock } from '../run/Clock.js';
import type { Executor } from '../run/Executor.js';
import type { Registry } from '../run/Registry.js';
import { parseParams } from '../run/parseParams.js';
import type { RunEvent } from '../run/RunEvent.js';
import { RunEngine } from '../run/RunEngine.js';
import { buildRunPlan } from '../run/RunPlan.js';
import { snapshotRun, type RunState } from '../run/RunState.js';
import { applyRunEvent, initialRunState } from '../run/reduceRun.js';
import { textLine } from '../spec/formatDiagnostics.js';
import { validateText, validateWorkflows } from '../spec/validateWorkflows.js';
import { packageRoot } from '../packageRoot.js';
import type { Workflow } from '../spec/Workflow.js';
import { InMemoryBus } from './InMemoryBus.js';
import { LiveRuns, type ControlCommand } from './LiveRuns.js';
import { LocalExecutor, type ChildRunResult } from './LocalExecutor.js';

export interface RunServiceOptions {
  /** Repository root (holds .git and workflows/). */
  repoDir: string;
  workflowsDir?: string;
  parallelism?: number;
  clock?: Clock;
  onEvent?: (e: RunEvent, state: RunState) => void;
  onWarning?: (message: string) => void;
  /** Checkpoint policy (see RunRecorder). */
  checkpointEveryEvents?: number;
  checkpointEveryMs?: number;
  /** Replaces the local executor (tests, other backends). */
  executor?: (bus: Bus, clock: Clock) => Executor;
  /** Where task events travel: in memory (default) or NATS JetStream (NATS_URL and friends). */
  bus?: 'memory' | 'nats';
  /** Where tasks run: this machine (default) or Nomad ($NOMAD_ADDR; needs the NATS bus). */
  backend?: 'local' | 'nomad';
  /** How Nomad clients start the agent runner (default: this Node and this checkout's bin). */
  agentCommand?: string[];
  /**
   * Where operators see this controller and its runs: Consul ($CONSUL_HTTP_ADDR: the
   * `caravan-controller` service and KV `caravan/runs/...`), or a Registry given here.
   */
  registry?: 'consul' | Registry;
  /**
   * Act as the cluster's controller: schedule only while holding the leader lock in the
   * registry, and stop at once when it is lost (done() then rejects with LEADERSHIP_LOST;
   * the next leader resumes the run).
   */
  leader?: { key?: string; ttlMs?: number; lockDelayMs?: number };
}

interface Leadership {
  ready: Promise<void>;
  lost?: CaravanError;
  engines: Set<RunEngine>;
  stop: () => Promise<void>;
}

export interface StartedRun {
  runId: string;
  workflow: string;
  engine: RunEngine;
  /** Resolves when the run is over and recorded: the final state and the audit commit. */
  done: Promise<{ state: RunState; auditCommit: string }>;
}

/**
 * Caravan's embedded default: runs on this machine with the local executor and the
 * in-memory bus, recorded in the repository's Git audit branch. One instance per process.
 */
export class RunService {
  readonly audit: GitAuditStore;
  readonly live: LiveRuns;
  private readonly clock: Clock;
  private registryInstance: Promise<Registry | undefined> | undefined;
  private leadership: Leadership | undefined;
  /** Runs launched by this service and not over yet (leadership is kept while there are any). */
  private running = 0;

  constructor(private readonly o: RunServiceOptions) {
    if (!existsSync(join(o.repoDir, '.git'))) {
      throw new CaravanError('NOT_A_REPOSITORY', `${o.repoDir} is not the root of a Git repository; Caravan records runs in Git (run \`git init\` first)`);
    }
    this.audit = new GitAuditStore(o.repoDir);
    this.live = new LiveRuns(this.audit.gitdir);
    this.clock = o.clock ?? realClock();
  }

  /** Finds a workflow by metadata.name (or by file path) among valid workflow files. */
  async loadWorkflow(nameOrPath: string): Promise<{ workflow: Workflow; source: string; file: string }> {
    const dir = join(this.o.repoDir, this.o.workflowsDir ?? 'workflows');
    const asPath = join(this.o.repoDir, nameOrPath);
    const report = await validateWorkflows([/\.ya?ml$/.test(nameOrPath) && existsSync(asPath) ? asPath : dir], this.o.repoDir).catch((e: unknown) => {
      if ((e as { code?: string }).code === 'PATH_NOT_FOUND') return undefined;
      throw e;
    });
    const files = report?.files ?? [];
    const match = files.find((f) => f.name === nameOrPath || f.file === nameOrPath || join(this.o.repoDir, f.file) === asPath);
    if (match === undefined) {
      const names = files.map((f) => f.name).filter((n) => n !== undefined);
      throw new CaravanError('WORKFLOW_NOT_FOUND', `unknown workflow '${nameOrPath}'${names.length > 0 ? `; workflows here: ${names.join(', ')}` : ` (no workflows in ${relative(this.o.repoDir, dir) || '.'}/)`}`, { data: { workflow: nameOrPath } });
    }
    const errors = match.diagnostics.filter((d) => d.severity === 'error');
    if (match.workflow === undefined || errors.length > 0) {
      throw new CaravanError('WORKFLOW_INVALID', `workflow '${nameOrPath}' is invalid:\n${errors.map((d) => textLine(d).trimEnd()).join('\n')}`, { data: { diagnostics: errors } });
    }
    return { workflow: match.workflow, source: await readFile(join(this.o.repoDir, match.file), 'utf8'), file: match.file };
  }

  async start(nameOrPath: string, rawParams: Record<string, unknown>, trigger = 'manual'): Promise<StartedRun> {
    const { workflow, source } = await this.loadWorkflow(nameOrPath);
    const params = parseParams(workflow, rawParams);
    const commit = await this.headCommit();
    const release = await this.admit(workflow);
    try {
      const runId = newRunId(new Date(this.clock.now()));
      return await this.launch(workflow, source, runId, commit, (engine) => engine.start(params, trigger, commit), []);
    } finally {
      await release();
    }
  }

  /**
   * Applies the workflow's concurrency policy against the runs live on this machine: `queue`
   * waits for a slot, `cancel-running` cancels the oldest runs to make room, `skip` refuses.
   * A lock file makes the check and the registration of the new run one step, so two
   * `caravan run` started together cannot both take the last slot.
   */
  private async admit(workflow: Workflow): Promise<() => Promise<void>> {
    const c = workflow.spec.concurrency;
    const limit = c?.limit;
    if (limit === undefined) return async () => undefined;
    const name = workflow.metadata.name;
    const policy = c?.policy ?? 'queue';
    let told = false;
    for (;;) {
      const release = await this.live.lock(`workflow-${name}`);
      const active = (await this.live.list()).filter((r) => r.workflow === name).sort((a, b) => (a.startedAt < b.startedAt ? -1 : 1));
      if (active.length < limit) return release;
      await release();
      if (policy === 'skip') {
        throw new CaravanError('RUN_SKIPPED', `not started: ${active.length} run${active.length === 1 ? '' : 's'} of ${name} already running (concurrency limit ${limit}, policy skip): ${active.map((r) => r.runId).join(', ')}`);
      }
      if (policy === 'cancel-running') {
        for (const r of active.slice(0, active.length - limit + 1)) {
          await this.live.send(r.runId, { action: 'cancel', by: 'concurrency', reason: `a newer run of ${name} replaces it (policy cancel-running)` });
        }
      }
      if (!told) {
        this.o.onWarning?.(`waiting: ${active.length} run${active.length === 1 ? '' : 's'} of ${name} running (concurrency limit ${limit}, policy ${policy})`);
        told = true;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /**
   * Continues a run after its process died: its recorded events (last checkpoint, then the
   * local journal) are replayed, attempts that were in flight are retried, and tasks that
   * succeeded are never run again. The workflow is the one the run started with.
   */
  async resume(runId: string): Promise<StartedRun> {
    const live = await this.live.get(runId);
    if (live !== undefined) throw new CaravanError('RUN_NOT_LIVE', `run ${runId} is still running (process ${live.pid})`);
    const stored = await this.audit.readRun(runId);
    const journal = await this.readJournal(runId);
    if (stored === undefined && journal === undefined) throw new CaravanError('RUN_NOT_FOUND', `no run ${runId} on caravan/runs or in the local journal`);
    // The journal is a superset of the last checkpoint unless it was lost with the machine.
    const events = journal !== undefined && journal.events.length >= (stored?.events.length ?? 0) ? journal.events : stored!.events;
    const source = stored?.workflowSource ?? journal?.header.workflowSource;
    const started = events.find((e) => e.type === 'run.started');
    if (source === undefined || started === undefined || started.type !== 'run.started') {
      throw new CaravanError('RUN_NOT_FOUND', `run ${runId} has no recorded workflow definition to resume from`);
    }
    const final = events.find((e) => e.type === 'run.succeeded' || e.type === 'run.failed' || e.type === 'run.cancelled');
    if (final !== undefined) throw new CaravanError('RUN_NOT_LIVE', `run ${runId} is already over (${final.type.slice(4)})`);
    const parsed = validateText(`${runId}/workflow.yaml`, source);
    if (parsed.workflow === undefined) throw new CaravanError('WORKFLOW_INVALID', `the recorded workflow of run ${runId} no longer validates`);
    return this.launch(parsed.workflow, source, runId, started.commit, (engine) => engine.resume(events), events);
  }

  async control(runId: string, command: ControlCommand): Promise<void> {
    if ((await this.live.get(runId)) === undefined) {
      const stored = await this.audit.readRun(runId);
      if (stored === undefined) throw new CaravanError('RUN_NOT_FOUND', `no run ${runId}`);
      throw new CaravanError('RUN_NOT_LIVE', `run ${runId} is not running (${String(stored.run['status'])}); ${stored.run['status'] === 'running' ? `resume it with \`caravan resume ${runId}\` first` : 'nothing to do'}`);
    }
    await this.live.send(runId, command);
  }

  /**
   * A live run's state as of its last journaled event (the audit branch may be up to a
   * checkpoint behind): the journal replayed through the reducer. Undefined without a journal.
   */
  async journalSnapshot(runId: string): Promise<Record<string, unknown> | undefined> {
    const journal = await this.readJournal(runId);
    const source = journal?.header.workflowSource;
    if (journal === undefined || source === undefined) return undefined;
    const parsed = validateText(`${runId}/workflow.yaml`, source);
    if (parsed.workflow === undefined) return undefined;
    const plan = buildRunPlan(parsed.workflow, { maxParallel: this.o.parallelism ?? 32 });
    const state = initialRunState(plan, runId);
    for (const e of journal.events) applyRunEvent(state, plan, e);
    return snapshotRun(state);
  }

  private async readJournal(runId: string): Promise<{ header: JournalHeader; events: RunEvent[] } | undefined> {
    let text: string;
    try {
      text = await readFile(this.live.journalPath(runId), 'utf8');
    } catch {
      return undefined;
    }
    // A process killed mid-write can leave half a line at the end.
    const lines = text.split('\n').filter((l) => l.trim() !== '').flatMap((l) => {
      try {
        return [JSON.parse(l) as unknown];
      } catch {
        return [];
      }
    });
    const header = lines[0] as JournalHeader | undefined;
    if (header === undefined || header.journal !== 1) return undefined;
    return { header, events: lines.slice(1) as RunEvent[] };
  }

  private async headCommit(): Promise<string | undefined> {
    try {
      return await git.resolveRef({ fs: nodeFs, dir: this.o.repoDir, ref: 'HEAD' });
    } catch {
      return undefined;
    }
  }

  private async launch(workflow: Workflow, source: string, runId: string, commit: string | undefined, begin: (e: RunEngine) => void, previous: RunEvent[]): Promise<StartedRun> {
    this.running++;
    try {
      return await this.launchLed(workflow, source, runId, commit, begin, previous);
    } catch (e) {
      await this.ended();
      throw e;
    }
  }

  private async launchLed(workflow: Workflow, source: string, runId: string, commit: string | undefined, begin: (e: RunEngine) => void, previous: RunEvent[]): Promise<StartedRun> {
    const name = workflow.metadata.name;
    const registry = await this.registry();
    // Registering Nomad jobs is leader work too: wait for the lock before anything else.
    const leadership = await this.lead(registry);
    const deregister = registry !== undefined ? await registry.registerController(`caravan-controller-${hostname()}-${process.pid}-${runId}`).catch((e: unknown) => {
      this.o.onWarning?.(`could not register caravan-controller: ${(e as Error).message}`);
      return undefined;
    }) : undefined;
    const plan = buildRunPlan(workflow, { maxParallel: this.o.parallelism ?? 32 });
    if (this.o.backend === 'nomad' && this.o.bus !== 'nats') {
      throw new CaravanError('USAGE', 'tasks on Nomad report over NATS: use --backend nomad with --bus nats');
    }
    const bus: Bus = this.o.bus === 'nats' ? await this.connectNats() : new InMemoryBus();
    const local = (): Executor => new LocalExecutor(bus, this.clock, {
      baseDir: this.o.repoDir,
      shellWorkers: Math.min(plan.maxParallel, 64),
      runChild: (child, params, parent) => this.runChild(child, params, parent),
    });
    const executor = this.o.executor?.(bus, this.clock) ?? (this.o.backend === 'nomad' ? await this.nomadExecutor(workflow, commit, bus, local()) : local());
    // On NATS every event goes to the stream, for other observers; in memory nobody else listens.
    const engine = new RunEngine({ plan, runId, executor, bus, clock: this.clock, publishDecisions: this.o.bus === 'nats' });
    const mirror = this.mirror(engine, registry);
    const recorder = new RunRecorder(this.audit, {
      workflow: name,
      runId,
      workflowSource: source,
      ...(commit !== undefined ? { workflowCommit: commit } : {}),
      journalPath: this.live.journalPath(runId),
      ...(this.o.checkpointEveryEvents !== undefined ? { everyEvents: this.o.checkpointEveryEvents } : {}),
      ...(this.o.checkpointEveryMs !== undefined ? { everyMs: this.o.checkpointEveryMs } : {}),
      now: () => this.clock.now(),
      ...(this.o.onWarning !== undefined ? { onWarning: this.o.onWarning } : {}),
      // Operators follow a live run in the Consul UI: its status at each checkpoint.
      onCheckpoint: (commit) => void mirror?.(commit),
      previous,
    });
    await recorder.open();
    engine.onEvent((e, s) => {
      recorder.record(e, s);
      this.o.onEvent?.(e, s);
    });
    engine.onFlush(() => recorder.flush());
    await this.live.register({ runId, workflow: name, pid: process.pid, startedAt: new Date(this.clock.now()).toISOString() });
    const stopWatching = this.live.watch(runId, (c) => this.apply(engine, c));
    begin(engine);
    // The first checkpoint holds the workflow definition, so a crash at any point can resume.
    await recorder.checkpoint().catch(() => undefined);
    leadership?.engines.add(engine);
    if (leadership?.lost !== undefined) engine.relinquish(leadership.lost);
    await mirror?.(undefined);
    const done = (async () => {
      try {
        let state: RunState;
        try {
          state = await engine.done();
        } catch (e) {
          // Leadership lost: keep what was recorded (journal and a checkpoint) for the next
          // leader's resume; running attempts are left to it.
          stopWatching();
          recorder.flush();
          await recorder.checkpoint().catch(() => undefined);
          recorder.close();
          await executor.close();
          await bus.close();
          await this.live.unregister(runId);
          throw e;
        }
        stopWatching();
        try {
          const auditCommit = await recorder.finish(state);
          await mirror?.(auditCommit);
          return { state, auditCommit };
        } finally {
          await executor.close();
          await bus.close();
          await this.live.unregister(runId);
        }
      } finally {
        leadership?.engines.delete(engine);
        await deregister?.();
        await this.ended();
      }
    })();
    return { runId, workflow: name, engine, done };
  }

  /** Registers the workflow's jobs (with this commit in their meta) and dispatches to them. */
  private async nomadExecutor(workflow: Workflow, commit: string | undefined, bus: Bus, fallback: Executor): Promise<Executor> {
    const { NomadClient } = await import('../nomad/NomadClient.js');
    const { NomadExecutor } = await import('../nomad/NomadExecutor.js');
    const { compileWorkflow } = await import('../compile/compileWorkflow.js');
    const { natsConnectionOptions } = await import('../nats/natsConnectionOptions.js');
    const nomad = new NomadClient();
    const agentCommand = this.o.agentCommand ?? [process.execPath, join(packageRoot(), 'bin', 'caravan.js'), 'agent'];
    const servers = (await natsConnectionOptions()).servers;
    const natsServers = Array.isArray(servers) ? servers : [String(servers)];
    // Pool agents reach NATS through NATS_URL in their environment (no credentials: those come from the client).
    for (const j of compileWorkflow(workflow, { agentCommand, agentEnv: { NATS_URL: natsServers.join(',') }, ...(commit !== undefined ? { gitCommit: commit } : {}) })) {
      await nomad.registerJob(j.job);
    }
    const js = bus as JetStreamBus;
    return new NomadExecutor(nomad, bus, this.clock, { natsServers, fallback, enqueueWork: (wf, pool, item) => js.enqueueWork(wf, pool, item), cancelWork: (wf, pool, ref) => js.cancelWork(wf, pool, ref), storeContext: (key, data) => js.putContext(key, data) });
  }

  /** A function that writes the run's status to Consul KV, when a registry is configured. */
  private mirror(engine: RunEngine, registry: Registry | undefined): ((auditCommit: string | undefined) => Promise<void>) | undefined {
    if (registry === undefined) return undefined;
    const write = async (auditCommit: string | undefined): Promise<void> => {
      const s = engine.state;
      const tasks: Record<string, number> = {};
      for (const g of s.groups.values()) tasks[g.status] = (tasks[g.status] ?? 0) + 1;
      try {
        await registry.mirrorRun({ workflow: s.workflow, runId: s.runId, status: s.status, tasks, startedAt: s.startedAtIso, ...(s.finishedAt !== undefined ? { finishedAt: new Date(s.finishedAt).toISOString() } : {}), ...(auditCommit !== undefined ? { auditCommit } : {}) });
      } catch (e) {
        this.o.onWarning?.(`could not mirror run ${s.runId} to Consul: ${(e as Error).message}`);
      }
    };
    // One write at a time, in order: a slow checkpoint's write must not land after the final one.
    let queue = Promise.resolve();
    return (auditCommit) => (queue = queue.then(() => write(auditCommit)));
  }


  private registry(): Promise<Registry | undefined> {
    this.registryInstance ??= (async () => {
      const r = this.o.registry;
      if (r === undefined) return undefined;
      if (r !== 'consul') return r;
      const { ConsulRegistry } = await import('../consul/ConsulRegistry.js');
      return new ConsulRegistry();
    })();
    return this.registryInstance;
  }

  /**
   * Waits for the leader lock when this service is the controller. One campaign serves all of
   * the service's runs (child workflows included); losing the lock relinquishes every one of
   * them at once, and the lock is released when the last run is over.
   */
  private async lead(registry: Registry | undefined): Promise<Leadership | undefined> {
    const o = this.o.leader;
    if (o === undefined) return undefined;
    if (registry === undefined) throw new CaravanError('USAGE', 'leader election needs a registry: use --leader with --registry consul');
    if (this.leadership === undefined) {
      let elected!: () => void;
      const l: Leadership = { ready: new Promise<void>((r) => { elected = r; }), engines: new Set(), stop: async () => undefined };
      const key = o.key ?? 'caravan/leader';
      l.stop = registry.elect({
        key,
        holder: `${hostname()}:${process.pid}`,
        ...(o.ttlMs !== undefined ? { ttlMs: o.ttlMs } : {}),
        ...(o.lockDelayMs !== undefined ? { lockDelayMs: o.lockDelayMs } : {}),
        onElected: () => elected(),
        onLost: (why) => {
          l.lost = new CaravanError('LEADERSHIP_LOST', `lost the leader lock ${key} (${why}); stopped scheduling. The next leader resumes the run${l.engines.size === 1 ? '' : 's'}: caravan resume ${[...l.engines].map((e) => e.state.runId).join(' ')}`, { data: { key, runs: [...l.engines].map((e) => e.state.runId) } });
          for (const e of l.engines) e.relinquish(l.lost);
        },
      });
      this.leadership = l;
    }
    const l = this.leadership;
    await l.ready;
    if (l.lost !== undefined) throw l.lost;
    return l;
  }

  /** One launched run is over: when none is left, the leader lock is released. */
  private async ended(): Promise<void> {
    this.running--;
    if (this.running === 0 && this.leadership !== undefined) {
      const l = this.leadership;
      this.leadership = undefined;
      await l.stop();
    }
  }

  private async connectNats(): Promise<Bus> {
    const { JetStreamBus } = await import('../nats/JetStreamBus.js');
    const { natsConnectionOptions } = await import('../nats/natsConnectionOptions.js');
    const connection = await natsConnectionOptions();
    try {
      return await JetStreamBus.connect({ connection: { ...connection, maxReconnectAttempts: -1, timeout: 5000 } });
    } catch (e) {
      throw new CaravanError('BUS_UNAVAILABLE', `cannot use NATS JetStream at ${String(connection.servers)}: ${(e as Error).message} (set NATS_URL, or run without --bus nats)`, { cause: e });
    }
  }

  private apply(engine: RunEngine, c: ControlCommand): void {
    switch (c.action) {
      case 'approve':
        if (c.task !== undefined) engine.approve(c.task, c.by);
        break;
      case 'reject':
        if (c.task !== undefined) engine.reject(c.task, c.by, c.reason);
        break;
      case 'cancel':
        engine.cancel(c.by, c.reason);
        break;
      case 'pause':
        engine.pause(c.by);
        break;
      case 'resume':
        engine.resumeRun(c.by);
        break;
    }
  }

  private async runChild(name: string, params: Record<string, unknown>, parent: { runId: string; task: string }): Promise<ChildRunResult> {
    const child = await this.start(name, params, `workflow:${parent.runId}/${parent.task}`);
    const { state } = await child.done;
    const outputs: Record<string, string> = { status: state.status };
    return { runId: child.runId, status: state.status, outputs };
  }
}
