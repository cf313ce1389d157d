import { CaravanError } from '../errors/CaravanError.js';
import type { WorkItem, WorkRef } from './protocol.js';

/**
 * The abort reason a pool agent gives the attempts it still runs when it stops (SIGTERM from
 * Nomad on a scale-down): such an attempt is not reported but handed back to the queue, and
 * runs again on another agent.
 */
export class PoolAgentStopping extends CaravanError {
  constructor() {
    super('POOL_AGENT_STOPPING', 'the pool agent is stopping');
    this.name = 'PoolAgentStopping';
  }
}

/**
 * Runs one work item. It resolves once the attempt is over (its slot is free) with
 * `reported`, a promise that settles once the attempt's report is stored; only then is the
 * item done with. It resolves without `reported` when the attempt was handed back (aborted
 * with PoolAgentStopping). A rejection hands the item back at once, to run again.
 */
export type WorkHandler = (item: WorkItem, signal: AbortSignal) => Promise<{ reported?: Promise<void> }>;

/**
 * Stops a consumer: it takes no more work, lets what runs finish for up to `drainMs`
 * (default 0), then aborts the rest with PoolAgentStopping and hands their items back at
 * once. Resolves when nothing runs any more.
 */
export type StopConsuming = (drainMs?: number) => Promise<void>;

/**
 * The port pools take their work from: one queue per workflow and pool, in memory by default
 * (engine/local/InMemoryWorkQueue), a JetStream work-queue stream for real
 * (engine/nats/JetStreamWorkQueue). Every implementation keeps these rules
 * (tests/contract/workQueue.contract.test.ts):
 * - each item goes to one consumer at a time, and is gone once that consumer's report of it
 *   is stored; consumers of one pool share its queue;
 * - a consumer runs at most its `concurrency` items at once, and takes an item only when it
 *   has a free slot;
 * - an item queued again with the same attempt key (`attemptKey`) while the queue still
 *   remembers it is dropped: a controller that re-queues after a restart starts nothing twice;
 * - a handler that throws hands its item back, and it is delivered again;
 * - a cancel aborts the attempt's signal where it runs, and a consumer that gets a cancelled
 *   item that has not started drops it without running it (a cancel is at most once: a
 *   consumer that misses it runs the attempt to its end, and the run ignores that report);
 * - stopping a consumer drains it as StopConsuming says, and hands back what it held.
 */
export interface WorkQueue {
  /** Queues one attempt for a pool; resolves once the queue holds it. */
  enqueue(workflow: string, pool: string, item: WorkItem): Promise<void>;
  /** Asks the pool's consumers to stop an attempt, running or queued. */
  cancel(workflow: string, pool: string, ref: WorkRef): void;
  /** Takes the pool's work, at most `concurrency` items at a time, until the returned function is called. */
  consume(workflow: string, pool: string, concurrency: number, handle: WorkHandler): Promise<StopConsuming>;
}
