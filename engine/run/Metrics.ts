/**
 * The port the engine and its adapters count through: prom-client when metrics are enabled
 * (engine/telemetry/PromMetrics), nothing otherwise. One named hook per fact rather than a
 * generic registry, so that every caller passes the same labels and none can add a run id
 * (unbounded label values would make every run a new time series).
 *
 * Labels are bounded on purpose: the workflow name (one per file in the repository), a
 * status from a closed list, and a stream name. Task names are left out: a generated
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

export interface Metrics {
  /** A run began (not counted again when a dead run is picked up from its record). */
  runStarted(workflow: string): void;
  /** A run reached its end; `durationSeconds` from its start to its end. */
  runFinished(workflow: string, status: RunOutcome, durationSeconds: number): void;
  /**
   * An attempt of a task (or of a compensation) ended. `durationSeconds` is the time it ran,
   * from its start to its end, or undefined when it never started (failed before dispatch,
   * cancelled while queued).
   */
  attemptFinished(workflow: string, status: AttemptOutcome, durationSeconds: number | undefined): void;
  /**
   * Time from an agent making a report (its event's time) to the engine having applied it
   * and acted on it (scheduled and dispatched what it unblocked): the engine's overhead plus
   * the bus, once per batch of reports.
   */
  coordinationLatency(seconds: number): void;
  /** A publish to the bus was tried again after a failure or a missing acknowledgement. */
  busPublishRetried(stream: string): void;
  /** A checkpoint (run record, events, journal) was written to the audit store, or failed to be. */
  checkpointWritten(outcome: CheckpointOutcome, durationSeconds: number): void;
}

/** Metrics that go nowhere: the default when metrics are not enabled. Shared, hence frozen. */
export const noopMetrics: Metrics = Object.freeze({
  runStarted: () => undefined,
  runFinished: () => undefined,
  attemptFinished: () => undefined,
  coordinationLatency: () => undefined,
  busPublishRetried: () => undefined,
  checkpointWritten: () => undefined,
});
