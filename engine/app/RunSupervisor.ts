import { hostname } from 'node:os';
import type { GitAuditStore } from '../audit/GitAuditStore.js';
import { RunRecorder } from '../audit/RunRecorder.js';
import type { WorkflowDirty } from '../audit/workflowDirty.js';
import type { Logger } from '../run/Logger.js';
import type { Registry } from '../run/Registry.js';
import type { RunEvent } from '../run/RunEvent.js';
import { RunEngine } from '../run/RunEngine.js';
import { buildRunPlan } from '../run/RunPlan.js';
import type { RunSnapshot } from '../run/RunSnapshot.js';
import { snapshotRun, type RunState } from '../run/RunState.js';
import type { Workflow } from '../spec/Workflow.js';
import type { Backends } from './createBackends.js';
import type { Leadership } from './Leadership.js';
import { processStartTime, type ControlCommand, type LiveRun, type LiveRuns } from './LiveRuns.js';

/** A run under way in this process. */
export interface StartedRun {
  runId: string;
  workflow: string;
  engine: RunEngine;
  /** Resolves when the run is over and recorded: the final state and the audit commit. */
  done: Promise<{ state: RunState; auditCommit: string }>;
  /** Set when the workflow as run is not the one at `commit` (see LaunchRequest). */
  workflowDirty?: WorkflowDirty;
}

/** What one run starts from: a fresh start, or the events of a run being recovered. */
export interface LaunchRequest {
  workflow: Workflow;
  source: string;
  runId: string;
  commit: string | undefined;
  /** Sets the engine going: start() for a new run, recover() for a recovered one. */
  begin: (engine: RunEngine) => void;
  /** Events recorded before this process took the run over (recover). */
  previous: readonly RunEvent[];
  /** The workflow had changes not committed at `commit`: the record says so (see RunRecorder). */
  workflowDirty?: WorkflowDirty;
}

export interface SupervisorOptions {
  backends: Backends;
  audit: GitAuditStore;
  live: LiveRuns;
  leadership?: Leadership;
  parallelism?: number;
  checkpointEveryEvents?: number;
  checkpointEveryMs?: number;
  onEvent?: (e: RunEvent, state: RunState) => void;
}

/**
 * Owns each run's lifecycle in this process: the engine on the shared ports, its recorder
 * (journal and Git checkpoints), its status mirrored to the registry, its registration as a
 * live run with a control channel, leadership, and one teardown whatever way it ends.
 */
export class RunSupervisor {
  /** Runs driven by this process: their state is in memory, ahead of the journal. */
  private readonly running = new Map<string, { engine: RunEngine; live: LiveRun; events: number; cached?: { events: number; snapshot: RunSnapshot } }>();

  constructor(private readonly options: SupervisorOptions) {}

  /**
   * A run this process drives, as it stands: read from memory instead of replaying its
   * journal, which costs the whole journal per read (32 reads/s of a 1,000-task run through
   * the API). The snapshot is rebuilt only after a new event.
   */
  current(runId: string): { snapshot: RunSnapshot; live: LiveRun } | undefined {
    const r = this.running.get(runId);
    if (r === undefined) return undefined;
    if (r.cached?.events !== r.events) r.cached = { events: r.events, snapshot: snapshotRun(r.engine.state) };
    return { snapshot: r.cached.snapshot, live: r.live };
  }

  /** The leader lock runs are driven under, if this process acts as the controller. */
  get leadership(): Leadership | undefined {
    return this.options.leadership;
  }

  async launch(req: LaunchRequest): Promise<StartedRun> {
    const { backends, leadership } = this.options;
    const name = req.workflow.metadata.name;
    const logger = backends.logger.child({ workflow: name, run: req.runId });
    // Registering Nomad jobs is leader work too: wait for the lock before anything else.
    if (leadership !== undefined) {
      try {
        await leadership.acquire();
      } catch (e) {
        await leadership.release();
        throw e;
      }
    }
    const teardown: Array<() => Promise<void> | void> = [];
    // Written once: every way a run ends (or fails to start) goes through here, in order.
    const tearDown = async (): Promise<void> => {
      for (const t of teardown.splice(0).reverse()) {
        try {
          await t();
        } catch (e) {
          logger.warn(`cleaning up run ${req.runId}: ${(e as Error).message}`, { err: e });
        }
      }
    };
    if (leadership !== undefined) teardown.push(() => leadership.release());
    try {
      const registry = backends.registry;
      if (registry !== undefined) {
        const deregister = await registry.registerController(`caravan-controller-${hostname()}-${process.pid}-${req.runId}`).catch((e: unknown) => {
          logger.warn(`could not register caravan-controller: ${(e as Error).message}`, { err: e });
          return undefined;
        });
        if (deregister !== undefined) teardown.push(deregister);
      }
      await backends.prepare(req.workflow, req.commit);
      const plan = buildRunPlan(req.workflow, { maxParallel: this.options.parallelism ?? 32 });
      const engine = new RunEngine({ plan, runId: req.runId, executor: backends.executor, bus: backends.bus, clock: backends.clock, publishDecisions: backends.publishDecisions, logger, metrics: backends.metrics });
      const mirror = registry !== undefined ? this.mirror(engine, registry, logger) : undefined;
      const recorder = new RunRecorder(this.options.audit, {
        workflow: name,
        runId: req.runId,
        workflowSource: req.source,
        ...(req.commit !== undefined ? { workflowCommit: req.commit } : {}),
        ...(req.workflowDirty !== undefined ? { workflowDirty: req.workflowDirty } : {}),
        journalPath: this.options.live.journalPath(req.runId),
        ...(this.options.checkpointEveryEvents !== undefined ? { everyEvents: this.options.checkpointEveryEvents } : {}),
        ...(this.options.checkpointEveryMs !== undefined ? { everyMs: this.options.checkpointEveryMs } : {}),
        now: () => backends.clock.now(),
        logger,
        metrics: backends.metrics,
        // Operators follow a live run in the Consul UI: its status at each checkpoint.
        onCheckpoint: (commit) => void mirror?.(commit),
        previous: req.previous,
      });
      await recorder.open();
      engine.onEvent((e, s) => {
        recorder.record(e, s);
        this.options.onEvent?.(e, s);
      });
      engine.onFlush(() => recorder.flush());
      const processStart = processStartTime(process.pid);
      const live: LiveRun = { runId: req.runId, workflow: name, pid: process.pid, startedAt: new Date(backends.clock.now()).toISOString(), ...(processStart !== undefined ? { processStart } : {}) };
      await this.options.live.register(live);
      teardown.push(() => this.options.live.unregister(req.runId));
      const entry = { engine, live, events: 0 };
      this.running.set(req.runId, entry);
      engine.onEvent(() => void entry.events++);
      teardown.push(() => void this.running.delete(req.runId));
      const stopWatching = this.options.live.watch(req.runId, (c) => apply(engine, c));
      teardown.push(stopWatching);
      req.begin(engine);
      // The first checkpoint holds the workflow definition, so a crash at any point can
      // recover; a failure here was logged by the recorder and is retried by the next checkpoint.
      await recorder.checkpoint().catch(() => undefined);
      if (leadership !== undefined) {
        leadership.lead(engine);
        teardown.push(() => leadership.unlead(engine));
      }
      await mirror?.(undefined);
      const done = (async () => {
        try {
          let state: RunState;
          try {
            state = await engine.done();
          } catch (e) {
            // Leadership lost: keep what was recorded (journal and a checkpoint) for the next
            // leader's recover; running attempts are left to it.
            recorder.flush();
            await recorder.checkpoint().catch(() => undefined);
            recorder.close();
            throw e;
          }
          const auditCommit = await recorder.finish(state);
          await mirror?.(auditCommit);
          return { state, auditCommit };
        } finally {
          await tearDown();
        }
      })();
      return { runId: req.runId, workflow: name, engine, done, ...(req.workflowDirty !== undefined ? { workflowDirty: req.workflowDirty } : {}) };
    } catch (e) {
      await tearDown();
      throw e;
    }
  }

  /** A function that writes the run's status to the registry (Consul KV). */
  private mirror(engine: RunEngine, registry: Registry, logger: Logger): (auditCommit: string | undefined) => Promise<void> {
    const write = async (auditCommit: string | undefined): Promise<void> => {
      const s = engine.state;
      const tasks: Record<string, number> = {};
      for (const g of s.groups.values()) tasks[g.status] = (tasks[g.status] ?? 0) + 1;
      try {
        await registry.mirrorRun({ workflow: s.workflow, runId: s.runId, status: s.status, tasks, startedAt: s.startedAtIso, ...(s.finishedAt !== undefined ? { finishedAt: new Date(s.finishedAt).toISOString() } : {}), ...(auditCommit !== undefined ? { auditCommit } : {}) });
      } catch (e) {
        logger.warn(`could not mirror run ${s.runId} to Consul: ${(e as Error).message}`, { err: e });
      }
    };
    // One write at a time, in order: a slow checkpoint's write must not land after the final one.
    let queue = Promise.resolve();
    return (auditCommit) => (queue = queue.then(() => write(auditCommit)));
  }
}

/** Hands a control command from the live-run channel to the run's engine. */
function apply(engine: RunEngine, c: ControlCommand): void {
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
    case 'unpause':
      engine.unpause(c.by);
      break;
  }
}
