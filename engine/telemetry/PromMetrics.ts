import { collectDefaultMetrics, Counter, Histogram, Registry } from 'prom-client';
import type { AttemptOutcome, CheckpointOutcome, Metrics, RunOutcome } from '../run/Metrics.js';

export interface PromMetricsOptions {
  /**
   * Also collect Node's process metrics (`process_cpu_seconds_total`, heap, event-loop lag)
   * in this registry: for the long-running controller. Off by default, because they watch
   * the process with timers and hooks a test or a CLI run does not need.
   */
  processMetrics?: boolean;
}

// Buckets in seconds, spread over the range each measure really takes: a pool task runs in
// milliseconds, a dispatch job minutes to hours; a run can wait a day for an approval.
const TASK_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 21600];
const RUN_BUCKETS = [1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 21600, 86400];
const COORDINATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
const CHECKPOINT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * The Metrics port on prom-client, in a registry of its own (not prom-client's global one,
 * which any library in the process could fill). Names follow Prometheus: a `caravan_`
 * prefix, base units (seconds), `_total` on counters. `metrics()` gives the text the
 * /metrics endpoint serves.
 */
export class PromMetrics implements Metrics {
  readonly registry = new Registry();
  private readonly runsStarted: Counter<'workflow'>;
  private readonly runsFinished: Counter<'workflow' | 'status'>;
  private readonly runDuration: Histogram<'workflow' | 'status'>;
  private readonly attemptsFinished: Counter<'workflow' | 'status'>;
  private readonly taskDuration: Histogram<'workflow' | 'status'>;
  private readonly coordination: Histogram;
  private readonly busRetries: Counter<'stream'>;
  private readonly checkpointWrites: Counter<'outcome'>;
  private readonly checkpointDuration: Histogram<'outcome'>;

  constructor(options: PromMetricsOptions = {}) {
    const registers = [this.registry];
    this.runsStarted = new Counter({ name: 'caravan_runs_started_total', help: 'Runs started, by workflow (a run picked up again after a crash is not counted twice).', labelNames: ['workflow'], registers });
    this.runsFinished = new Counter({ name: 'caravan_runs_finished_total', help: 'Runs that reached their end, by workflow and status (succeeded, failed, cancelled).', labelNames: ['workflow', 'status'], registers });
    this.runDuration = new Histogram({ name: 'caravan_run_duration_seconds', help: 'Time from a run\'s start to its end, by workflow and status.', labelNames: ['workflow', 'status'], buckets: RUN_BUCKETS, registers });
    this.attemptsFinished = new Counter({ name: 'caravan_attempts_finished_total', help: 'Attempts of tasks and compensations that ended, by workflow and status (succeeded, failed, lost, cancelled).', labelNames: ['workflow', 'status'], registers });
    this.taskDuration = new Histogram({ name: 'caravan_task_duration_seconds', help: 'Time one attempt of a task ran, from its start to its end, by workflow and status.', labelNames: ['workflow', 'status'], buckets: TASK_BUCKETS, registers });
    this.coordination = new Histogram({ name: 'caravan_coordination_latency_seconds', help: 'Time from an agent\'s report to the engine having applied it and dispatched what it unblocked.', buckets: COORDINATION_BUCKETS, registers });
    this.busRetries = new Counter({ name: 'caravan_bus_publish_retries_total', help: 'Publishes to the bus tried again after a failure or a missing acknowledgement, by stream.', labelNames: ['stream'], registers });
    this.checkpointWrites = new Counter({ name: 'caravan_checkpoint_writes_total', help: 'Checkpoints written to the audit store, by outcome (written, failed).', labelNames: ['outcome'], registers });
    this.checkpointDuration = new Histogram({ name: 'caravan_checkpoint_write_duration_seconds', help: 'Time one checkpoint write to the audit store took, by outcome.', labelNames: ['outcome'], buckets: CHECKPOINT_BUCKETS, registers });
    if (options.processMetrics === true) collectDefaultMetrics({ register: this.registry });
  }

  runStarted(workflow: string): void {
    this.runsStarted.inc({ workflow });
  }

  runFinished(workflow: string, status: RunOutcome, durationSeconds: number): void {
    this.runsFinished.inc({ workflow, status });
    this.runDuration.observe({ workflow, status }, durationSeconds);
  }

  attemptFinished(workflow: string, status: AttemptOutcome, durationSeconds: number | undefined): void {
    this.attemptsFinished.inc({ workflow, status });
    if (durationSeconds !== undefined) this.taskDuration.observe({ workflow, status }, durationSeconds);
  }

  coordinationLatency(seconds: number): void {
    this.coordination.observe(seconds);
  }

  busPublishRetried(stream: string): void {
    this.busRetries.inc({ stream });
  }

  checkpointWritten(outcome: CheckpointOutcome, durationSeconds: number): void {
    this.checkpointWrites.inc({ outcome });
    this.checkpointDuration.observe({ outcome }, durationSeconds);
  }

  /** The exposition text (Prometheus text format 0.0.4) of everything counted so far. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  /** The Content-Type header to serve metrics() with. */
  get contentType(): string {
    return this.registry.contentType;
  }
}
