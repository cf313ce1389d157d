import { hostname } from 'node:os';
import { join } from 'node:path';
import { BackendHealth } from '../app/BackendHealth.js';
import { CaravanApp, type CaravanAppOptions } from '../app/CaravanApp.js';
import { CaravanError } from '../errors/CaravanError.js';
import { packageRoot } from '../packageRoot.js';
import type { Logger } from '../run/Logger.js';
import type { Registry } from '../run/Registry.js';
import { Controller, type SyncReport, type TriggerMessages } from '../controller/Controller.js';
import type { Workflow } from '../spec/Workflow.js';
import { ControllerServer } from './ControllerServer.js';
import type { ApiTokens } from './ApiTokens.js';
import { advertiseLeader, controllerBackend } from './controllerBackend.js';
import type { EventStreamOptions } from './eventRoutes.js';
import { GitHubCommitStatus } from '../controller/GitHubCommitStatus.js';
import { Reconciler } from '../controller/Reconciler.js';
import { RemoteRepo } from '../gitops/RemoteRepo.js';
import { PromMetrics } from '../telemetry/PromMetrics.js';

export interface ControllerConfig {
  /**
   * The repository the controller watches, and where it records runs and syncs: a local
   * repository, or with `remote` the directory of the remote's mirror (made on first use).
   */
  repoDir: string;
  /** Watch a remote repository over smart HTTP through a mirror in repoDir. */
  remote?: { url: string; auth?: { username: string; password: string } };
  branch?: string;
  workflowsDir?: string;
  intervalMs?: number;
  /** host:port for /health, /ready and the webhook; undefined: no listener. */
  listen?: { host: string; port: number };
  webhookSecret?: string;
  /** The REST API on the listener (needs `listen`). */
  api?: {
    tokens: ApiTokens;
    openReads?: boolean;
    rateLimit?: { max: number; windowMs: number };
    /** Limits of the SSE routes (tests shorten the heartbeat). */
    events?: Partial<EventStreamOptions>;
    /** The address followers name for the leader (default: the listener's URL). */
    advertiseUrl?: string;
  };
  prune?: boolean;
  selfHeal?: boolean;
  backend?: 'local' | 'nomad';
  bus?: 'memory' | 'nats';
  /** 'consul' (at $CONSUL_HTTP_ADDR) or a registry given here (tests). */
  registry?: 'consul' | Registry;
  agentCommand?: string[];
  identity?: string;
  logger: Logger;
  onSync?: (report: SyncReport) => void;
  /** Extra application options (tests: a clock, a parallelism). */
  app?: Partial<CaravanAppOptions>;
  /**
   * Campaign for the leader lock in the registry (default: on whenever there is a registry):
   * several controllers on one Consul, one leading.
   */
  leader?: boolean | { ttlMs?: number; lockDelayMs?: number; key?: string };
  /** The lock was lost and leader work stopped: the process should exit (Nomad restarts it as a follower). */
  onDeposed?: (e: Error) => void;
  /** Report each sync as a GitHub commit status (repository `owner/name`, a token, the API's URL). */
  githubStatus?: { repository: string; token: string; apiUrl?: string };
  /**
   * Count in Prometheus metrics, served on GET /metrics of the listener (default true). The
   * runs, the controller and the Nomad, Consul and NATS adapters all count into one registry.
   */
  metrics?: boolean;
  /** GET /metrics without a token (default true); false: authorizeMetrics judges each scrape. */
  metricsOpen?: boolean;
  authorizeMetrics?: (authorization: string | undefined) => boolean | Promise<boolean>;
}

/** A running controller process: its loop, its listener, and the way to stop both. */
export interface RunningController {
  controller: Controller;
  app: CaravanApp;
  server: ControllerServer | undefined;
  /** Where everything in this process counts; undefined with `metrics: false`. */
  metrics: PromMetrics | undefined;
  /** SIGTERM's path: the sync under way finishes, runs are handed over, the listener closes. */
  stop(): Promise<void>;
}

/**
 * Opens everything a controller needs, once: the application layer on the configured
 * backends (its runs do not register jobs: the reconciler does, with ownership and
 * check-and-set), the reconciler when Nomad is the backend, the loop and the listener.
 */
export async function startController(config: ControllerConfig): Promise<RunningController> {
  const identity = config.identity ?? `${hostname()}-${process.pid}`;
  const logger = config.logger.child({ controller: identity });
  if (config.backend === 'nomad' && config.bus !== 'nats') throw new CaravanError('USAGE', 'tasks on Nomad report over NATS: use --backend nomad with --bus nats');
  let remote: RemoteRepo | undefined;
  if (config.remote !== undefined) {
    remote = new RemoteRepo({ url: config.remote.url, branch: config.branch ?? 'main', dir: config.repoDir, logger, ...(config.remote.auth !== undefined ? { auth: config.remote.auth } : {}) });
    // The mirror must exist before the application opens it (it records in its .git).
    await remote.sync();
  }
  const leader = config.registry !== undefined && config.leader !== false ? (typeof config.leader === 'object' ? config.leader : {}) : undefined;
  // One registry for the whole process; process metrics under their standard names.
  const metrics = config.metrics !== false ? new PromMetrics({ processMetrics: true }) : undefined;
  const app = new CaravanApp({
    repoDir: config.repoDir,
    logger,
    registerJobs: false,
    ...(metrics !== undefined ? { metrics } : {}),
    ...(leader !== undefined ? { leader } : {}),
    ...(config.backend !== undefined ? { backend: config.backend } : {}),
    ...(config.bus !== undefined ? { bus: config.bus } : {}),
    ...(config.registry !== undefined ? { registry: config.registry } : {}),
    ...(config.agentCommand !== undefined ? { agentCommand: config.agentCommand } : {}),
    ...(config.workflowsDir !== undefined ? { workflowsDir: config.workflowsDir } : {}),
    ...config.app,
  });
  let reconciler: Reconciler | undefined;
  if (config.backend === 'nomad') {
    const { NomadClient } = await import('../nomad/NomadClient.js');
    const { natsConnectionOptions } = await import('../nats/natsConnectionOptions.js');
    const servers = (await natsConnectionOptions()).servers;
    const natsServers = Array.isArray(servers) ? servers.map(String) : [String(servers)];
    reconciler = new Reconciler({
      cluster: new NomadClient(metrics !== undefined ? { metrics } : {}),
      repo: repoName(config.repoDir, remote),
      controller: identity,
      // The same agent command and environment a run registers with, so the jobs are the same.
      compile: { agentCommand: config.agentCommand ?? [process.execPath, join(packageRoot(), 'bin', 'caravan.js'), 'agent'], agentEnv: { NATS_URL: natsServers.join(',') } },
      prune: config.prune === true,
      selfHeal: config.selfHeal === true,
      logger,
    });
  }
  const registry = await app.registry();
  const github = config.githubStatus !== undefined ? new GitHubCommitStatus({ ...config.githubStatus, logger }) : undefined;
  const onSync = (report: SyncReport): void => {
    config.onSync?.(report);
    if (github !== undefined) void github.report(report);
  };
  const controller = new Controller({
    app,
    repoDir: config.repoDir,
    branch: config.branch ?? 'main',
    workflowsDir: config.workflowsDir ?? 'workflows',
    intervalMs: config.intervalMs ?? 30_000,
    ...(reconciler !== undefined ? { reconciler } : {}),
    ...(registry !== undefined ? { registry } : {}),
    identity,
    logger,
    onSync,
    ...(leader !== undefined ? { leadership: (await app.leadership())! } : {}),
    ...(config.onDeposed !== undefined ? { onDeposed: config.onDeposed } : {}),
    ...(remote !== undefined ? { remote } : {}),
    ...(config.bus === 'nats' ? { openEvents: (workflows: Workflow[]) => openEventTriggers(workflows, logger) } : {}),
    ...(metrics !== undefined ? { metrics, observePools: (workflows: readonly Workflow[]) => app.observePools(workflows) } : {}),
  });
  let server: ControllerServer | undefined;
  const health = new BackendHealth({ ...(registry !== undefined ? { registry } : {}), nats: config.bus === 'nats', nomad: config.backend === 'nomad', logger });
  try {
    if (config.listen !== undefined) {
      server = await ControllerServer.start({
        host: config.listen.host,
        port: config.listen.port,
        ...(config.webhookSecret !== undefined ? { webhookSecret: config.webhookSecret } : {}),
        logger,
        ...(metrics !== undefined ? { metrics, exposition: metrics } : {}),
        ...(config.metricsOpen !== undefined ? { metricsOpen: config.metricsOpen } : {}),
        // Closed metrics take any of the API's tokens (a scraper needs no role), unless told otherwise.
        ...(config.authorizeMetrics !== undefined
          ? { authorizeMetrics: config.authorizeMetrics }
          : config.api !== undefined ? { authorizeMetrics: (header: string | undefined) => config.api!.tokens.authenticate(/^Bearer +(\S+)$/i.exec(header ?? '')?.[1] ?? '') !== undefined } : {}),
        ...(config.api !== undefined ? {
          api: {
            backend: controllerBackend(app, controller, registry, config.backend === 'nomad' ? process.env['NOMAD_ADDR'] ?? 'http://127.0.0.1:4646' : undefined),
            tokens: config.api.tokens,
            ...(config.api.openReads !== undefined ? { openReads: config.api.openReads } : {}),
            ...(config.api.rateLimit !== undefined ? { rateLimit: config.api.rateLimit } : {}),
            ...(config.api.events !== undefined ? { events: config.api.events } : {}),
          },
        } : {}),
        readiness: async () => {
          const s = controller.status();
          const b = await health.check();
          const details = { backends: b.backends, role: s.role, head: s.head, lastSync: s.lastSync !== undefined ? { commit: s.lastSync.commit, status: s.lastSync.status, at: s.lastSync.startedAt } : null, error: s.error ?? null, runs: s.runs };
          // A follower is a healthy standby; a leader is ready once its last sync did not fail.
          const ready = b.ok && (s.role === 'follower' || ((s.role === 'leader' || s.role === 'standalone') && s.lastSync !== undefined && s.lastSync.status !== 'failed'));
          return { ready, details };
        },
        onPush: (push) => {
          // A push to another branch is no reason to sync this one.
          if (push.ref === `refs/heads/${config.branch ?? 'main'}`) controller.nudge(`webhook ${push.deliveryId ?? ''} ${push.after.slice(0, 12)}`.trim());
        },
      });
    }
    await controller.start();
    if (server !== undefined && config.api !== undefined && registry !== undefined && leader !== undefined) {
      const url = config.api.advertiseUrl ?? server.url;
      void controller.elected().then(() => advertiseLeader(registry, url, identity, logger), () => undefined);
    }
  } catch (e) {
    await controller.stop().catch(() => undefined);
    await server?.close();
    await app.close();
    throw e;
  }
  logger.info('controller started', { repo: config.repoDir, branch: config.branch ?? 'main', listen: server?.url, backend: config.backend ?? 'local', prune: config.prune === true, selfHeal: config.selfHeal === true });
  let stopping: Promise<void> | undefined;
  return {
    controller,
    app,
    server,
    metrics,
    stop: () => (stopping ??= (async () => {
      await controller.stop();
      await server?.close();
      await app.close();
      logger.info('controller stopped', {});
    })()),
  };
}

/** Event triggers on the NATS the process uses ($NATS_URL and friends). */
async function openEventTriggers(workflows: Workflow[], logger: Logger): Promise<TriggerMessages> {
  const { EventTriggerSource, eventTriggerSubjects } = await import('../nats/EventTriggerSource.js');
  const { natsConnectionOptions } = await import('../nats/natsConnectionOptions.js');
  const source = await EventTriggerSource.open({
    connection: await natsConnectionOptions(),
    subjects: eventTriggerSubjects(workflows),
    logger,
    onRefused: (workflow, subject, reason) => logger.warn('event trigger message refused', { workflow, subject, reason }),
  });
  return {
    events: () => source.events(),
    updateSubjects: (w) => source.updateSubjects(eventTriggerSubjects(w)),
    close: () => source.close(),
  };
}

/** The repository's name in job meta: the remote's URL (without credentials), or the directory's absolute path. */
function repoName(dir: string, remote: RemoteRepo | undefined): string {
  return remote?.url ?? dir;
}
