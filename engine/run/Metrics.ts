/**
 * The port the engine, the controller and the adapters count through: prom-client when
 * metrics are enabled (engine/telemetry/PromMetrics), nothing otherwise. One named hook per
 * fact rather than a generic registry, so that every caller passes the same labels and none
 * can add a run id (unbounded label values would make every run a new time series).
 *
 * Labels are bounded on purpose: the workflow name (one per file in the repository, and
 * PromMetrics folds names it was not told of into one value), a pool name of such a
 * workflow, and values from the closed lists below. Task names are left out: a generated
 * workflow may have 10,000 of them, and per-task timings are in the run record.
 */

/** How a run ended. */
export type RunOutcome = 'succeeded' | 'failed' | 'cancelled';

/**
 * How an attempt ended: `lost` when it died with the engine or its allocation (it is
 * retried outside the retry budget), `cancelled` when the run or a deadline stopped it.
 */
export type AttemptOutcome = 'succeeded' | 'failed' | 'lost' | 'cancelled';

/** Whether a checkpoint reached the audit store. */
export type CheckpointOutcome = 'written' | 'failed';

/** What started a run, without the detail (commit, time, subject) that would be unbounded. */
export type TriggerKind = 'manual' | 'push' | 'schedule' | 'event' | 'workflow' | 'api' | 'retry' | 'other';

/** The backends Caravan talks to over the network. */
export type Backend = 'nats' | 'consul' | 'nomad';

/** How one request to a backend went: `error` for a failure the adapter saw (timeout, refusal, 5xx). */
export type RequestOutcome = 'ok' | 'error';

/**
 * What became of one request to the GitHub webhook: `accepted` (a verified push), `ping`,
 * `ignored` (a verified event other than push), `refused` (bad signature, body or headers),
 * `rate_limited`, `disabled` (no secret configured), `error` (the controller failed).
 */
export type WebhookOutcome = 'accepted' | 'ping' | 'ignored' | 'refused' | 'rate_limited' | 'disabled' | 'error';

/**
 * What became of one scheduled time: `started` a run, the run `exists` (another controller
 * or an earlier life started it), `skipped` (overlap policy, concurrency policy or the run
 * could not start), `failed` (the schedule's state could not be read or written).
 */
export type ScheduleOutcome = 'started' | 'exists' | 'skipped' | 'failed';

/** One sync of the watched branch, as the metrics see it. */
export interface SyncSample {
  durationSeconds: number;
  /**
   * The sync failed, left a job Nomad refused, or could not fetch or read the branch. Invalid
   * workflow files are not errors here: they are the author's, shown on the pull request.
   */
  error: boolean;
  /** From the synced commit's committer time to the end of its sync, when the sync applied a new commit. */
  lagSeconds?: number;
  /** Jobs found drifted per workflow, when the cluster was compared (zeros may be omitted). */
  driftJobs?: ReadonlyMap<string, number>;
}

/** States of a pool's agents as Nomad reports their allocations. */
export type PoolAgentState = 'pending' | 'running' | 'failed' | 'lost';

/** One look at a pool: items waiting in its work queue and its agents by state. */
export interface PoolSample {
  workflow: string;
  pool: string;
  /** Items in the pool's work queue not yet acknowledged (queued or running); undefined when unknown. */
  queued: number | undefined;
  agents: Record<PoolAgentState, number>;
}

export interface Metrics {
  /** A run began (not counted again when a dead run is picked up from its record). */
  runStarted(workflow: string, trigger: TriggerKind): void;
  /** A run reached its end; `durationSeconds` from its start to its end. */
  runFinished(workflow: string, status: RunOutcome, durationSeconds: number): void;
  /**
   * An attempt of a task (or of a compensation) ended. `durationSeconds` is the time it ran,
   * from its start to its end, or undefined when it never started (failed before dispatch,
   * cancelled while queued).
   */
  attemptFinished(workflow: string, status: AttemptOutcome, durationSeconds: number | undefined): void;
  /**
   * Time from a task's success (its report's time) to the engine having applied it and
   * dispatched what it unblocked: the engine's overhead plus the bus, once per batch of
   * reports that holds a success.
   */
  coordinationLatency(seconds: number): void;
  /** Circuit breakers of live runs opened (+n) or closed, or gone with their run (-n). */
  breakersOpenChanged(delta: number): void;
  /** A publish to the bus was tried again after a failure or a missing acknowledgement. */
  busPublishRetried(stream: string): void;
  /** A checkpoint (run record, events, journal) was written to the audit store, or failed to be. */
  checkpointWritten(outcome: CheckpointOutcome, durationSeconds: number): void;
  /** One request at an adapter's boundary (a Nomad or Consul HTTP call, a JetStream publish or delivery). */
  backendRequest(backend: Backend, outcome: RequestOutcome): void;
  /**
   * The workflows of the synced commit: the only names the workflow label may take from now
   * on (others are folded into one value), so that no input can make new series.
   */
  knownWorkflows(names: readonly string[]): void;
  /** A sync of the watched branch ended (or could not begin: fetch or branch read failed). */
  syncFinished(sync: SyncSample): void;
  /** This process holds the leader lock (or runs without one) or not. */
  leader(leading: boolean): void;
  webhookReceived(outcome: WebhookOutcome): void;
  scheduleFired(workflow: string, outcome: ScheduleOutcome): void;
  /** The pools as last seen (every pool of every workflow; a pool not listed is gone). */
  poolsObserved(samples: readonly PoolSample[]): void;
}

/** A run's trigger (`push:<commit>`, `schedule:<time>`, `workflow:<run>/<task>`, ...) as a bounded kind. */
export function triggerKind(trigger: string): TriggerKind {
  const kind = trigger.split(':', 1)[0];
  switch (kind) {
    case 'manual':
    case 'push':
    case 'schedule':
    case 'event':
    case 'workflow':
    case 'api':
    case 'retry':
      return kind;
    default:
      return 'other';
  }
}

/** Metrics that go nowhere: the default when metrics are not enabled. Shared, hence frozen. */
export const noopMetrics: Metrics = Object.freeze({
  runStarted: () => undefined,
  runFinished: () => undefined,
  attemptFinished: () => undefined,
  coordinationLatency: () => undefined,
  breakersOpenChanged: () => undefined,
  busPublishRetried: () => undefined,
  checkpointWritten: () => undefined,
  backendRequest: () => undefined,
  knownWorkflows: () => undefined,
  syncFinished: () => undefined,
  leader: () => undefined,
  webhookReceived: () => undefined,
  scheduleFired: () => undefined,
  poolsObserved: () => undefined,
});
