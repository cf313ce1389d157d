import { headers, type NatsConnection } from '@nats-io/transport-node';
import { AckPolicy, RetentionPolicy, StorageType, type JetStreamClient, type JetStreamManager, type JsMsg } from '@nats-io/jetstream';
import { CaravanError } from '../errors/CaravanError.js';
import { forgetOldest } from '../run/forgetOldest.js';
import type { Metrics } from '../run/Metrics.js';
import { attemptKey, workControlSubject, workSubject, type WorkItem, type WorkRef } from '../run/protocol.js';
import { PoolAgentStopping, type StopConsuming, type WorkHandler, type WorkQueue } from '../run/WorkQueue.js';
import { NANOS_PER_MS, createStreamIfMissing, ensureConsumer, isStreamNotFound } from './jetStreamAdmin.js';
import type { JetStreamPublisher } from './JetStreamPublisher.js';

export const WORK_STREAM = 'CARAVAN_WORK';
const DECODER = new TextDecoder();

/** The work queue's settings (the connection is connectJetStream's). */
export interface JetStreamWorkQueueOptions {
  /**
   * A pool's work item goes to another agent when the agent that took it has not said it
   * is still working on it for this long (default 30 s).
   */
  workAckWaitMs?: number;
  /** Told of a control message (cancel) that could not be read; by default it is dropped. */
  onError?: (err: Error) => void;
  /** Counts each item delivered to a consumer (caravan_backend_requests_total{backend="nats"}). */
  metrics?: Metrics;
}

/**
 * The WorkQueue on a JetStream work-queue stream: `caravan.work.<workflow>.<pool>`, each
 * item handed to one agent and removed when it acknowledges. Cancels are core NATS
 * broadcasts on `caravan.control.<workflow>.<pool>`. Made by connectJetStream, on its
 * shared connection.
 */
export class JetStreamWorkQueue implements WorkQueue {
  private stream: Promise<void> | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly publisher: JetStreamPublisher,
    private readonly options: JetStreamWorkQueueOptions = {},
  ) {}

  /** Creates the work stream unless it exists (once per connection). */
  ensureStream(): Promise<void> {
    this.stream ??= createStreamIfMissing(this.jsm, { name: WORK_STREAM, subjects: ['caravan.work.>'], retention: RetentionPolicy.Workqueue, storage: StorageType.File, duplicate_window: 120_000 * NANOS_PER_MS }).then(() => undefined);
    return this.stream;
  }

  /**
   * Items in each pool's queue not yet acknowledged (waiting or running), by
   * `<workflow>/<pool>`: one stream-info request for all pools. Pools with none are absent.
   */
  async depths(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    let subjects: Record<string, number> | undefined;
    try {
      subjects = (await this.jsm.streams.info(WORK_STREAM, { subjects_filter: 'caravan.work.>' })).state.subjects;
      this.options.metrics?.backendRequest('nats', 'ok');
    } catch (e) {
      // No work stream yet: no pool has had an item.
      if (isStreamNotFound(e)) return out;
      this.options.metrics?.backendRequest('nats', 'error');
      throw e;
    }
    for (const [subject, n] of Object.entries(subjects ?? {})) {
      const [, , workflow, pool] = subject.split('.');
      if (workflow !== undefined && pool !== undefined) out.set(`${workflow}/${pool}`, n);
    }
    return out;
  }

  /**
   * Queues an attempt for a pool. Its message id (`<attemptKey>:work`) de-duplicates a
   * repeated hand-off of the same attempt within the stream's duplicate window.
   */
  async enqueue(workflow: string, pool: string, item: WorkItem): Promise<void> {
    await this.ensureStream();
    const h = headers();
    h.set('Nats-Msg-Id', `${attemptKey(item.runId, item.instance, item.attempt)}:work`);
    await this.publisher.publish(workSubject(workflow, pool), JSON.stringify(item), h);
  }

  /**
   * Asks a pool's agents to stop an attempt (a core NATS broadcast, so at most once: an agent
   * that misses it runs the attempt to its end, and the run ignores that late report).
   */
  cancel(workflow: string, pool: string, ref: WorkRef): void {
    this.nc.publish(workControlSubject(workflow, pool), JSON.stringify(ref));
  }

  /**
   * Takes work for a pool, at most `concurrency` items at a time, through the pool's shared
   * durable consumer; an item is acknowledged (and removed from the queue) once its report
   * is stored. While an item runs, the agent tells the server every third of the ack wait
   * that it is still working on it; an agent that dies (killed, node lost) stops doing so,
   * and the item goes to another agent once the ack wait has passed.
   */
  async consume(workflow: string, pool: string, concurrency: number, handle: WorkHandler): Promise<StopConsuming> {
    await this.ensureStream();
    const name = `pool-${workflow}-${pool}`.replace(/[^A-Za-z0-9_-]/g, '_');
    const ackWaitMs = this.options.workAckWaitMs ?? 30_000;
    // One durable per pool, shared by its agents, so its config must not depend on any one
    // agent: each agent bounds itself (it pulls only with a free slot, and runs at most
    // `concurrency`). A consumer-wide max_ack_pending of `concurrency` capped the whole pool
    // at one agent's worth, and agents with different concurrency (a rolling update) would
    // have fought over the config.
    await ensureConsumer(this.jsm, WORK_STREAM, { durable_name: name, filter_subject: workSubject(workflow, pool), ack_policy: AckPolicy.Explicit, max_ack_pending: -1, ack_wait: ackWaitMs * NANOS_PER_MS });
    const consumer = await this.js.consumers.get(WORK_STREAM, name);
    // Pull again once half the batch has arrived, not after every item: a pull is a
    // JetStream API request, and one per item cost the server more than storing the item.
    const messages = await consumer.consume({ max_messages: concurrency, threshold_messages: Math.floor(concurrency / 2) });
    // Taken items until acknowledged; `running` while the attempt runs (then its report is on its way).
    const inflight = new Map<string, { abort: AbortController; m: JsMsg; running: boolean }>();
    // Cancels for this pool: abort the attempt if it runs here; otherwise remember it a
    // while, in case its item is still queued and comes here next.
    const cancelled = new Set<string>();
    const control = this.nc.subscribe(workControlSubject(workflow, pool), {
      callback: (err, m) => {
        if (err !== null) {
          // Typically a permission the agent's credentials lack: cancels would never arrive.
          this.options.onError?.(new CaravanError('BUS_UNAVAILABLE', `cancels for pool ${pool} of ${workflow} cannot be received: ${err.message}`, { cause: err, data: { workflow, pool } }));
          return;
        }
        let ref: WorkRef;
        try {
          ref = JSON.parse(DECODER.decode(m.data)) as WorkRef;
        } catch (e) {
          // Not a cancel from a Caravan engine: nothing to stop.
          this.options.onError?.(new CaravanError('INTERNAL', `unreadable control message on ${m.subject}: ${(e as Error).message}`, { cause: e }));
          return;
        }
        const key = attemptKey(ref.runId, ref.instance, ref.attempt);
        const taken = inflight.get(key);
        if (taken !== undefined) taken.abort.abort();
        else {
          cancelled.add(key);
          forgetOldest(cancelled, 10_000);
        }
      },
    });
    const working = setInterval(() => {
      for (const { m } of inflight.values()) m.working();
    }, ackWaitMs / 3);
    working.unref();
    let stopping = false;
    let running = 0;
    let idle: (() => void) | undefined;
    let freed: (() => void) | undefined;
    const wake = (): void => {
      const f = freed;
      freed = undefined;
      f?.();
    };
    void (async () => {
      const it = messages[Symbol.asyncIterator]();
      for (;;) {
        // The next pull is made inside next(): waiting for a free slot first keeps an agent
        // from asking for items it cannot start (it may still hold up to half its
        // concurrency: a pull asks for what the last batch lacks, not for the free slots).
        while (running >= concurrency && !stopping) await new Promise<void>((r) => { freed = r; });
        const next = await it.next();
        if (next.done === true) break;
        const m = next.value;
        this.options.metrics?.backendRequest('nats', 'ok');
        if (stopping) {
          m.nak();
          continue;
        }
        const item = JSON.parse(DECODER.decode(m.data)) as WorkItem;
        const key = attemptKey(item.runId, item.instance, item.attempt);
        if (cancelled.delete(key)) {
          m.ack();
          continue;
        }
        running++;
        const abort = new AbortController();
        const entry = { abort, m, running: true };
        inflight.set(key, entry);
        const free = (): void => {
          entry.running = false;
          running--;
          wake();
          if (running === 0) idle?.();
        };
        handle(item, abort.signal).then(
          ({ reported }) => {
            free();
            // Handed back (nak'd) when the agent stopped it.
            if (reported === undefined) inflight.delete(key);
            // Still in flight (and kept alive) until its report is stored.
            else void reported.then(() => this.publisher.holdAck(m)).finally(() => inflight.delete(key));
          },
          () => {
            inflight.delete(key);
            free();
            m.nak();
          },
        );
      }
    })();
    const allDone = (): Promise<void> => (running === 0 ? Promise.resolve() : new Promise<void>((r) => { idle = r; }));
    return async (drainMs = 0) => {
      stopping = true;
      // The iterator ends only once the loop reads up to its end: wake the loop, which hands
      // back (naks) what it still holds instead of starting it. A close that fails (the
      // connection is gone) leaves nothing to hand back: the server redelivers.
      const closed = messages.close().catch(() => undefined);
      wake();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([allDone(), new Promise<void>((r) => { timer = setTimeout(r, drainMs); })]);
      clearTimeout(timer);
      for (const e of inflight.values()) {
        if (!e.running || e.abort.signal.aborted) continue;
        e.abort.abort(new PoolAgentStopping());
        e.m.nak();
      }
      // The aborted attempts end within their agent's kill grace (a shell command's process
      // group gets SIGTERM, then SIGKILL): waiting for them leaves no process behind.
      await allDone();
      await closed;
      clearInterval(working);
      this.publisher.sendHeldAcks();
      control.unsubscribe();
    };
  }
}
