import { join } from 'node:path';
import { CaravanError } from '../errors/CaravanError.js';
import { InMemoryBus } from '../local/InMemoryBus.js';
import { LocalExecutor, sweepOrphanWorkers, sweepScratch, type ChildRunResult } from '../local/LocalExecutor.js';
import { packageRoot } from '../packageRoot.js';
import type { Bus } from '../run/Bus.js';
import type { EventLog } from '../run/EventLog.js';
import { realClock, type Clock } from '../run/Clock.js';
import type { Executor } from '../run/Executor.js';
import { noopLogger, type Logger } from '../run/Logger.js';
import { noopMetrics, type Metrics, type PoolAgentState, type PoolSample } from '../run/Metrics.js';
import type { Registry } from '../run/Registry.js';
import type { Workflow } from '../spec/Workflow.js';

/** Which adapter each port gets in this process. Omitted: the embedded default. */
export interface BackendConfig {
  /** Repository root: the working directory of local tasks. */
  repoDir: string;
  /** Where task events travel: in memory (default) or NATS JetStream (NATS_URL and friends). */
  bus?: 'memory' | 'nats';
  /** Where tasks run: this machine (default) or Nomad ($NOMAD_ADDR; needs the NATS bus). */
  backend?: 'local' | 'nomad';
  /** How Nomad clients start the agent runner (default: this Node and this checkout's bin). */
  agentCommand?: string[];
  /** Consul at $CONSUL_HTTP_ADDR, or a Registry given here (tests, the embedded one). */
  registry?: 'consul' | Registry;
  /**
   * A directory that outlives the process (the repository's .git/caravan): local shell
   * attempts keep their state there, so a run recovered after its process was killed adopts
   * them instead of running them again. Without it they count as lost.
   */
  stateDir?: string;
  /** Whether a run still waits to be recovered (its journal is here): what it left is kept. */
  runAwaitsRecovery?: (runId: string) => boolean;
  /**
   * Whether a run registers its workflow's Nomad jobs before it starts (default true). The
   * controller registers them itself (with ownership meta and check-and-set), so its runs do not.
   */
  registerJobs?: boolean;
  /** Tasks running at once on this machine; sizes the shell worker pool. */
  parallelism?: number;
  clock?: Clock;
  /** Where the process logs (default: nowhere). */
  logger?: Logger;
  /** Where the process counts (default: nowhere). */
  metrics?: Metrics;
  /** Replaces the executor (tests). */
  executor?: (bus: Bus, clock: Clock) => Executor;
}

/** Runs a child workflow for a `workflow:` task; the application layer provides it. */
export type RunChild = (name: string, params: Record<string, unknown>, parent: { runId: string; task: string }, how: { wait: boolean }) => Promise<ChildRunResult>;

/**
 * The ports of one process, each opened once: one bus (one NATS connection), one executor,
 * one Nomad client, one registry. Runs share them; close() closes each once.
 */
export interface Backends {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly bus: Bus;
  /** The bus's events by sequence, when it stores them (NATS JetStream); undefined in memory. */
  readonly eventLog: EventLog | undefined;
  readonly executor: Executor;
  readonly registry: Registry | undefined;
  /** Whether the engine publishes its own decisions on the bus (other observers listen on NATS). */
  readonly publishDecisions: boolean;
  /** Gets a workflow's jobs ready on the cluster before a run (Nomad: registers them). */
  prepare(workflow: Workflow, commit: string | undefined): Promise<void>;
  /**
   * Each pool of these workflows as it is now: its work queue's depth (JetStream) and its
   * agents (Nomad allocations). Empty unless pools run on Nomad: elsewhere they have no agents.
   */
  observePools(workflows: readonly Workflow[]): Promise<PoolSample[]>;
  close(): Promise<void>;
}

/**
 * The composition root: picks and opens an adapter for every port from the configuration.
 * The only place that knows the concrete adapters; everything above it sees ports.
 */
export async function createBackends(config: BackendConfig, runChild: RunChild): Promise<Backends> {
  if (config.backend === 'nomad' && config.bus !== 'nats') {
    throw new CaravanError('USAGE', 'tasks on Nomad report over NATS: use --backend nomad with --bus nats');
  }
  const clock = config.clock ?? realClock();
  const logger = config.logger ?? noopLogger;
  const metrics = config.metrics ?? noopMetrics;
  const closers: Array<() => Promise<void>> = [];
  try {
    const registry = await openRegistry(config.registry, logger, metrics);
    let bus: Bus;
    let eventLog: EventLog | undefined;
    let executor: Executor;
    let prepare: Backends['prepare'] = async () => undefined;
    let observePools: Backends['observePools'] = async () => [];
    // Scratch space that runs killed on this machine left behind goes before any new run.
    const swept = await sweepScratch();
    if (swept.length > 0) logger.info('removed the scratch directories of dead caravan processes', { paths: swept });
    if (config.stateDir !== undefined) {
      const orphans = await sweepOrphanWorkers(config.stateDir, config.runAwaitsRecovery ?? (() => false));
      if (orphans.length > 0) logger.info('removed what the shell workers of dead caravan processes left, no run needing it', { paths: orphans });
    }
    const local = (b: Bus): Executor => new LocalExecutor(b, clock, {
      baseDir: config.repoDir,
      shellWorkers: Math.min(config.parallelism ?? 32, 64),
      ...(config.stateDir !== undefined ? { stateDir: config.stateDir } : {}),
      ...(config.runAwaitsRecovery !== undefined ? { runAwaitsRecovery: config.runAwaitsRecovery } : {}),
      runChild,
      logger,
    });
    if (config.bus === 'nats') {
      const { connectJetStream } = await import('../nats/connectJetStream.js');
      const { natsConnectionOptions } = await import('../nats/natsConnectionOptions.js');
      const connection = await natsConnectionOptions();
      let js;
      try {
        js = await connectJetStream({ connection: { ...connection, maxReconnectAttempts: -1, timeout: 5000 }, metrics, onError: (err) => logger.error('NATS JetStream failed', { err }) });
      } catch (e) {
        throw new CaravanError('BUS_UNAVAILABLE', `cannot use NATS JetStream at ${String(connection.servers)}: ${(e as Error).message} (set NATS_URL, or run without --bus nats)`, { cause: e });
      }
      closers.push(() => js.close());
      bus = js.bus;
      eventLog = js.eventLog;
      if (config.executor !== undefined) executor = config.executor(bus, clock);
      else if (config.backend === 'nomad') {
        const { NomadClient } = await import('../nomad/NomadClient.js');
        const { NomadExecutor } = await import('../nomad/NomadExecutor.js');
        const { compileWorkflow } = await import('../compile/compileWorkflow.js');
        const nomad = new NomadClient({ metrics });
        const { poolJobId } = await import('../compile/jobId.js');
        observePools = async (workflows) => {
          const depths = await js.workQueue.depths();
          const out: PoolSample[] = [];
          for (const wf of workflows) {
            const name = wf.metadata.name;
            for (const pool of Object.keys(wf.spec.pools ?? {})) {
              const agents: Record<PoolAgentState, number> = { pending: 0, running: 0, failed: 0, lost: 0 };
              // Index 0: the blocking query answers at once.
              const allocs = await nomad.watchJobAllocations(poolJobId(name, pool), 0, 1).catch(() => undefined);
              for (const a of allocs?.value ?? []) {
                if (a.DesiredStatus !== undefined && a.DesiredStatus !== 'run') continue;
                if (a.ClientStatus in agents) agents[a.ClientStatus as PoolAgentState]++;
              }
              out.push({ workflow: name, pool, queued: depths.get(`${name}/${pool}`) ?? 0, agents });
            }
          }
          return out;
        };
        const servers = connection.servers;
        const natsServers = Array.isArray(servers) ? servers.map(String) : [String(servers)];
        const agentCommand = config.agentCommand ?? [process.execPath, join(packageRoot(), 'bin', 'caravan.js'), 'agent'];
        executor = new NomadExecutor(nomad, bus, clock, { natsServers, fallback: local(bus), workQueue: js.workQueue, contexts: js.contexts, onError: (err) => logger.error('Nomad executor failed', { err }) });
        // Registered on every run, as before the application layer; check-and-set and prune
        // are the controller's (its reconciler registers only what changed).
        if (config.registerJobs !== false) prepare = async (workflow, commit) => {
          // Pool agents reach NATS through NATS_URL in their environment (credentials come from the client).
          for (const j of compileWorkflow(workflow, { agentCommand, agentEnv: { NATS_URL: natsServers.join(',') }, ...(commit !== undefined ? { gitCommit: commit } : {}) })) {
            await nomad.registerJob(j.job);
          }
        };
      } else executor = local(bus);
    } else {
      const memory = new InMemoryBus();
      closers.push(() => memory.close());
      bus = memory;
      executor = config.executor?.(bus, clock) ?? local(bus);
    }
    const exec = executor;
    closers.unshift(() => exec.close());
    let closing: Promise<void> | undefined;
    return {
      clock,
      logger,
      metrics,
      bus,
      eventLog,
      executor,
      registry,
      // On NATS every event goes to the stream, for other observers; in memory nobody else listens.
      publishDecisions: config.bus === 'nats',
      prepare,
      observePools,
      close: () => (closing ??= closeAll(closers)),
    };
  } catch (e) {
    await closeAll(closers);
    throw e;
  }
}

async function openRegistry(r: BackendConfig['registry'], logger: Logger, metrics: Metrics): Promise<Registry | undefined> {
  if (r === undefined) return undefined;
  if (r !== 'consul') return r;
  const { ConsulRegistry } = await import('../consul/ConsulRegistry.js');
  return new ConsulRegistry({ logger, metrics });
}

/** Closes in order; every closer runs even if one fails, and the first failure is thrown. */
async function closeAll(closers: ReadonlyArray<() => Promise<void>>): Promise<void> {
  let first: unknown;
  for (const c of closers) {
    try {
      await c();
    } catch (e) {
      first ??= e;
    }
  }
  if (first !== undefined) throw first;
}
