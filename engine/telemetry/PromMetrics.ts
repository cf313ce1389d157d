import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type {
  AttemptOutcome,
  Backend,
  CheckpointOutcome,
  Metrics,
  PoolAgentState,
  PoolSample,
  RequestOutcome,
  RunOutcome,
  ScheduleOutcome,
  SyncSample,
  TriggerKind,
  WebhookOutcome,
} from '../run/Metrics.js';

export interface PromMetricsOptions {
  /**
   * Also collect Node's process metrics under their standard names (`process_cpu_seconds_total`,
   * `process_resident_memory_bytes`, `nodejs_eventloop_lag_seconds`, ...) in this registry:
   * for the long-running controller. Off by default, because they watch the process with
   * timers and hooks a test or a CLI run does not need.
   */
  processMetrics?: boolean;
  /**
   * Distinct workflow label values kept before knownWorkflows() is first called (the runs a
   * controller recovers before its first sync); further names are folded into OTHER_WORKFLOW.
   * Default 500.
   */
  maxWorkflows?: number;
}

/**
 * The label value of every workflow name that may not have series of its own: not a DNS
 * label (so no workflow can be called that), not among the synced workflows, or past the cap.
 */
export const OTHER_WORKFLOW = '_other';

// Buckets in seconds, spread over the range each measure really takes: a pool task runs in
// milliseconds, a dispatch job minutes to hours; a run can wait a day for an approval.
const TASK_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 21600];
const RUN_BUCKETS = [1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 21600, 86400];
// 0.5 is a bucket boundary on purpose: the alert on a coordination p95 over 500 ms reads it.
const COORDINATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
const CHECKPOINT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const SYNC_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const POOL_STATES: readonly PoolAgentState[] = ['pending', 'running', 'failed', 'lost'];
const BACKENDS: readonly Backend[] = ['nats', 'consul', 'nomad'];
const OUTCOMES: readonly RequestOutcome[] = ['ok', 'error'];

/**
 * The Metrics port on prom-client, in a registry of its own (not prom-client's global one,
 * which any library in the process could fill). Names follow Prometheus: a `caravan_`
 * prefix, base units (seconds), `_total` on counters. `metrics()` gives the text the
 * /metrics endpoint serves. docs/metrics.md lists every family.
 */
export class PromMetrics implements Metrics {
  readonly registry = new Registry();
  private readonly runsStarted: Counter<'workflow' | 'trigger'>;
  private readonly runsFinished: Counter<'workflow' | 'status'>;
  private readonly runDuration: Histogram<'workflow'>;
  private readonly attempts: Counter<'workflow' | 'status'>;
  private readonly taskDuration: Histogram<'workflow'>;
  private readonly coordination: Histogram;
  private readonly breakers: Gauge;
  private readonly busRetries: Counter<'stream'>;
  private readonly checkpointWrites: Counter<'outcome'>;
  private readonly checkpointDuration: Histogram<'outcome'>;
  private readonly syncDuration: Histogram;
  private readonly syncLag: Gauge;
  private readonly syncErrors: Counter;
  private readonly drift: Gauge<'workflow'>;
  private readonly leading: Gauge;
  private readonly webhooks: Counter<'outcome'>;
  private readonly scheduleFires: Counter<'workflow' | 'outcome'>;
  private readonly poolDepth: Gauge<'workflow' | 'pool'>;
  private readonly poolAgents: Gauge<'workflow' | 'pool' | 'state'>;
  /** Bound children, so the per-request count on the adapters' hot paths is one addition. */
  private readonly requests: Record<Backend, Record<RequestOutcome, { inc(): void }>>;
  private readonly maxWorkflows: number;
  /** Names allowed as label values: after knownWorkflows(), exactly those; before, the first maxWorkflows valid ones. */
  private allowed: Set<string> | undefined;
  private readonly seen = new Set<string>();

  constructor(options: PromMetricsOptions = {}) {
    this.maxWorkflows = options.maxWorkflows ?? 500;
    const registers = [this.registry];
    this.runsStarted = new Counter({ name: 'caravan_runs_started_total', help: 'Runs started, by workflow and trigger kind (a run picked up again after a crash is not counted twice).', labelNames: ['workflow', 'trigger'], registers });
    this.runsFinished = new Counter({ name: 'caravan_runs_finished_total', help: 'Runs that reached their end, by workflow and status (succeeded, failed, cancelled).', labelNames: ['workflow', 'status'], registers });
    this.runDuration = new Histogram({ name: 'caravan_run_duration_seconds', help: 'Time from a run\'s start to its end, by workflow.', labelNames: ['workflow'], buckets: RUN_BUCKETS, registers });
    this.attempts = new Counter({ name: 'caravan_task_attempts_total', help: 'Attempts of tasks and compensations that ended, by workflow and status (succeeded, failed, lost, cancelled).', labelNames: ['workflow', 'status'], registers });
    this.taskDuration = new Histogram({ name: 'caravan_task_duration_seconds', help: 'Time one attempt of a task ran, from its start to its end, by workflow (attempts that never started are not observed).', labelNames: ['workflow'], buckets: TASK_BUCKETS, registers });
    this.coordination = new Histogram({ name: 'caravan_coordination_seconds', help: 'Time from a task\'s success report to the engine having applied it and dispatched what it unblocked.', buckets: COORDINATION_BUCKETS, registers });
    this.breakers = new Gauge({ name: 'caravan_breakers_open', help: 'Circuit breakers open in the runs this process drives.', registers });
    this.busRetries = new Counter({ name: 'caravan_bus_publish_retries_total', help: 'Publishes to the bus tried again after a failure or a missing acknowledgement, by stream.', labelNames: ['stream'], registers });
    this.checkpointWrites = new Counter({ name: 'caravan_checkpoint_writes_total', help: 'Checkpoints written to the audit store, by outcome (written, failed).', labelNames: ['outcome'], registers });
    this.checkpointDuration = new Histogram({ name: 'caravan_checkpoint_write_duration_seconds', help: 'Time one checkpoint write to the audit store took, by outcome.', labelNames: ['outcome'], buckets: CHECKPOINT_BUCKETS, registers });
    this.syncDuration = new Histogram({ name: 'caravan_sync_duration_seconds', help: 'Time one sync of the watched branch took (validate, reconcile, fire push triggers, record).', buckets: SYNC_BUCKETS, registers });
    this.syncLag = new Gauge({ name: 'caravan_sync_lag_seconds', help: 'For the last commit applied: time from the commit (committer time) to the end of its sync.', registers });
    this.syncErrors = new Counter({ name: 'caravan_sync_errors_total', help: 'Syncs that failed, or that left a job Nomad refused; fetch and branch read failures included.', registers });
    this.drift = new Gauge({ name: 'caravan_drift_jobs', help: 'Nomad jobs whose running definition differs from the one rendered from Git, by workflow, at the last sync.', labelNames: ['workflow'], registers });
    this.leading = new Gauge({ name: 'caravan_leader', help: '1 while this controller leads (holds the lock, or runs without one), else 0.', registers });
    this.webhooks = new Counter({ name: 'caravan_webhooks_total', help: 'Requests to the GitHub webhook, by outcome (accepted, ping, ignored, refused, rate_limited, disabled, error).', labelNames: ['outcome'], registers });
    this.scheduleFires = new Counter({ name: 'caravan_schedule_fires_total', help: 'Scheduled times that came due, by workflow and outcome (started, exists, skipped, failed).', labelNames: ['workflow', 'outcome'], registers });
    this.poolDepth = new Gauge({ name: 'caravan_pool_queue_depth', help: 'Items in a pool\'s work queue not yet acknowledged (waiting or running), by workflow and pool.', labelNames: ['workflow', 'pool'], registers });
    this.poolAgents = new Gauge({ name: 'caravan_pool_agents', help: 'A pool\'s agents (Nomad allocations), by workflow, pool and state (pending, running, failed, lost).', labelNames: ['workflow', 'pool', 'state'], registers });
    const requests = new Counter({ name: 'caravan_backend_requests_total', help: 'Requests to the backends (nats: JetStream publishes and deliveries; consul, nomad: HTTP API calls), by backend and outcome (ok, error).', labelNames: ['backend', 'outcome'], registers });
    const bound = (backend: Backend): Record<RequestOutcome, { inc(): void }> => Object.fromEntries(OUTCOMES.map((outcome) => {
      // Zero from the start: rate() over a series that appears with its first error misses it.
      requests.inc({ backend, outcome }, 0);
      return [outcome, requests.labels({ backend, outcome })];
    })) as Record<RequestOutcome, { inc(): void }>;
    this.requests = Object.fromEntries(BACKENDS.map((b) => [b, bound(b)])) as Record<Backend, Record<RequestOutcome, { inc(): void }>>;
    // Standard names (no prefix): the usual Node.js dashboards and alerts look for them.
    if (options.processMetrics === true) {
      collectDefaultMetrics({ register: this.registry });
      // prom-client names three gauges `_total`, which `promtool check metrics` flags (a
      // `_total` is a counter); each is the sum of a by-type gauge it also exports.
      for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.registry.removeSingleMetric(name);
    }
  }

  runStarted(workflow: string, trigger: TriggerKind): void {
    this.runsStarted.inc({ workflow: this.label(workflow), trigger });
  }

  runFinished(workflow: string, status: RunOutcome, durationSeconds: number): void {
    const w = this.label(workflow);
    this.runsFinished.inc({ workflow: w, status });
    this.runDuration.observe({ workflow: w }, durationSeconds);
  }

  attemptFinished(workflow: string, status: AttemptOutcome, durationSeconds: number | undefined): void {
    const w = this.label(workflow);
    this.attempts.inc({ workflow: w, status });
    if (durationSeconds !== undefined) this.taskDuration.observe({ workflow: w }, durationSeconds);
  }

  coordinationLatency(seconds: number): void {
    this.coordination.observe(seconds);
  }

  breakersOpenChanged(delta: number): void {
    this.breakers.inc(delta);
  }

  busPublishRetried(stream: string): void {
    this.busRetries.inc({ stream });
  }

  checkpointWritten(outcome: CheckpointOutcome, durationSeconds: number): void {
    this.checkpointWrites.inc({ outcome });
    this.checkpointDuration.observe({ outcome }, durationSeconds);
  }

  backendRequest(backend: Backend, outcome: RequestOutcome): void {
    this.requests[backend][outcome].inc();
  }

  knownWorkflows(names: readonly string[]): void {
    this.allowed = new Set(names.filter((n) => DNS_LABEL.test(n)));
  }

  syncFinished({ durationSeconds, error, lagSeconds, driftJobs }: SyncSample): void {
    this.syncDuration.observe(durationSeconds);
    if (error) this.syncErrors.inc();
    if (lagSeconds !== undefined) this.syncLag.set(Math.max(0, lagSeconds));
    if (driftJobs !== undefined) {
      // A gauge per workflow that drifted at the last sync; the others are 0, not stale.
      this.drift.reset();
      for (const name of this.allowed ?? []) this.drift.set({ workflow: name }, 0);
      for (const [name, n] of driftJobs) this.drift.inc({ workflow: this.label(name) }, n);
    }
  }

  leader(leading: boolean): void {
    this.leading.set(leading ? 1 : 0);
  }

  webhookReceived(outcome: WebhookOutcome): void {
    this.webhooks.inc({ outcome });
  }

  scheduleFired(workflow: string, outcome: ScheduleOutcome): void {
    this.scheduleFires.inc({ workflow: this.label(workflow), outcome });
  }

  poolsObserved(samples: readonly PoolSample[]): void {
    // Replaced as a whole: a pool removed from Git must not keep its last values forever.
    this.poolDepth.reset();
    this.poolAgents.reset();
    for (const s of samples) {
      const workflow = this.label(s.workflow);
      // Pool names are DNS labels of a validated workflow; anything else is folded like a workflow.
      const pool = DNS_LABEL.test(s.pool) && workflow !== OTHER_WORKFLOW ? s.pool : OTHER_WORKFLOW;
      if (s.queued !== undefined) this.poolDepth.inc({ workflow, pool }, s.queued);
      for (const state of POOL_STATES) this.poolAgents.inc({ workflow, pool, state }, s.agents[state]);
    }
  }

  /** The exposition text (Prometheus text format 0.0.4) of everything counted so far. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  /** The Content-Type header to serve metrics() with. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** The workflow label value for a name: itself if allowed, else OTHER_WORKFLOW. */
  private label(name: string): string {
    if (this.allowed !== undefined) return this.allowed.has(name) ? name : OTHER_WORKFLOW;
    if (this.seen.has(name)) return name;
    if (!DNS_LABEL.test(name) || this.seen.size >= this.maxWorkflows) return OTHER_WORKFLOW;
    this.seen.add(name);
    return name;
  }
}
