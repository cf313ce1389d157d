import { createHash } from 'node:crypto';
import { connect, createInbox, headers, type MsgHdrs, type NatsConnection, type NodeConnectionOptions } from '@nats-io/transport-node';
import {
  AckPolicy,
  DeliverPolicy,
  RetentionPolicy,
  StorageType,
  jetstream,
  jetstreamManager,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type ConsumerConfig,
  type StreamConfig,
} from '@nats-io/jetstream';
import type { Bus } from '../run/Bus.js';
import type { RunEvent } from '../run/RunEvent.js';
import { forgetOldest } from '../run/forgetOldest.js';

export const EVENTS_STREAM = 'CARAVAN_EVENTS';
export const WORK_STREAM = 'CARAVAN_WORK';

/** A unit of work for an agent pool: one attempt of one task, with everything to run it. */
export interface WorkItem {
  runId: string;
  workflow: string;
  instance: string;
  attempt: number;
  task: unknown;
  context: unknown;
  timeoutMs?: number;
  defaultsEnv?: Record<string, unknown>;
}
/**
 * The abort reason a pool agent gives the attempts it still runs when it stops (SIGTERM from
 * Nomad on a scale-down): such an attempt is not reported but handed back to the queue, and
 * runs again on another agent.
 */
export class PoolAgentStopping extends Error {
  constructor() {
    super('the pool agent is stopping');
  }
}

interface PendingAck {
  resolve: () => void;
  reject: (e: Error) => void;
  until: number;
}

/** Which attempt a pool control message is about. */
export interface WorkRef {
  runId: string;
  instance: string;
  attempt: number;
}

/** One attempt's key in a pool: its work item's message id (with `:work`) and its cancels. */
function workKey(ref: WorkRef): string {
  return `${ref.runId}:${ref.instance}:${ref.attempt}`;
}

/** JetStream's answer for a stream or consumer that does not exist. */
function isNotFound(e: unknown): boolean {
  return /not found/i.test((e as Error).message);
}
const ORIGIN_HEADER = 'Caravan-Origin';
const CONTEXT_STREAM = 'CARAVAN_CONTEXT';

/** One NATS subject token: `.`, wildcards and anything unusual are hex-escaped. */
function subjectToken(s: string): string {
  return s.replace(/[^A-Za-z0-9_-]/g, (c) => `%${c.charCodeAt(0).toString(16)}`);
}
const MS = 1_000_000; // JetStream durations are nanoseconds
const DECODER = new TextDecoder();

export interface StreamLimits {
  maxAgeMs?: number;
  maxBytes?: number;
  replicas?: number;
  /** How long a Nats-Msg-Id is remembered for de-duplication. */
  duplicateWindowMs?: number;
}

export interface JetStreamBusOptions {
  connection: NodeConnectionOptions;
  stream?: string;
  limits?: StreamLimits;
  /** Acknowledge after this many messages (ack policy "all": one ack covers all before it)... */
  ackEvery?: number;
  /** ...or this long after the first unacknowledged one. */
  ackAfterMs?: number;
  /**
   * A pool's work item goes to another agent when the agent that took it has not said it
   * is still working on it for this long (default 30 s).
   */
  workAckWaitMs?: number;
}

/**
 * The Bus on NATS JetStream. Every event goes to one stream (`caravan.ev.>`) with its
 * `Nats-Msg-Id` (`<run>:<task>:<attempt>:<event>`), so a republished event is stored once.
 * Publishes are pipelined: publish() returns at once, a failed publish (server restarting)
 * is retried with the same id until it is stored, and flush() waits for all of them.
 * Subscribers read through durable pull consumers with batched acknowledgements, and keep
 * their place across reconnects.
 */
export class JetStreamBus implements Bus {
  private readonly pending = new Set<Promise<void>>();
  private readonly consumers = new Set<{ stop: () => Promise<void> }>();
  private closed = false;
  private abandoned = false;

  private constructor(
    readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly o: JetStreamBusOptions,
  ) {}

  static async connect(o: JetStreamBusOptions): Promise<JetStreamBus> {
    const nc = await connect(o.connection);
    const jsm = await jetstreamManager(nc);
    const bus = new JetStreamBus(nc, jetstream(nc), jsm, o);
    await bus.ensureStream();
    return bus;
  }

  get stream(): string {
    return this.o.stream ?? EVENTS_STREAM;
  }

  /** Creates the stream, or brings an existing one to the configured limits. */
  async ensureStream(): Promise<void> {
    const l = this.o.limits ?? {};
    const config = {
      name: this.stream,
      subjects: ['caravan.ev.>'],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      max_age: (l.maxAgeMs ?? 7 * 24 * 3_600_000) * MS,
      max_bytes: l.maxBytes ?? -1,
      num_replicas: l.replicas ?? 1,
      duplicate_window: (l.duplicateWindowMs ?? 120_000) * MS,
    };
    try {
      await this.jsm.streams.info(this.stream);
      await this.jsm.streams.update(this.stream, config);
    } catch (e) {
      if (!isNotFound(e)) throw e;
      await this.jsm.streams.add(config);
    }
  }

  /** Returns at once; the promise settles when the event is stored (or given up at close). */
  publish(subject: string, event: RunEvent, options: { msgId: string; origin: 'engine' | 'agent' }): Promise<void> {
    // The origin travels in the payload: parsing headers costs more than the rest of a
    // message on the consuming side. The header is kept for people reading the stream.
    const h = headers();
    h.set(ORIGIN_HEADER, options.origin);
    h.set('Nats-Msg-Id', options.msgId);
    const data = JSON.stringify({ o: options.origin === 'engine' ? 'e' : 'a', e: event });
    const attempt = async (n: number): Promise<void> => {
      try {
        await this.publishAcked(subject, data, h);
      } catch {
        // Not stored (server restarting, timeout): retry with the same id; JetStream drops a copy.
        if (this.closed) return;
        await new Promise((r) => setTimeout(r, Math.min(2000, 50 * 2 ** n)));
        return attempt(n + 1);
      }
    };
    const p: Promise<void> = attempt(0).finally(() => this.pending.delete(p));
    this.pending.add(p);
    return p;
  }

  /**
   * Queues an attempt for a pool on `caravan.work.<workflow>.<pool>` (a work-queue stream:
   * each item is handed to one agent and removed when it acknowledges). The id de-duplicates
   * a repeated hand-off of the same attempt.
   */
  async enqueueWork(workflow: string, pool: string, item: WorkItem): Promise<void> {
    await this.ensureWorkStream();
    const h = headers();
    h.set('Nats-Msg-Id', `${workKey(item)}:work`);
    await this.publishAcked(`caravan.work.${workflow}.${pool}`, JSON.stringify(item), h);
  }

  private acks: { inbox: string; next: number; pending: Map<string, PendingAck>; sweep: NodeJS.Timeout } | undefined;

  private heldAcks: JsMsg[] = [];
  private heldAcksTimer: NodeJS.Timeout | undefined;

  /**
   * Acknowledges a work item with the next message this connection sends, or within 10 ms.
   * No one waits for a work item's ack (only its redelivery, 30 s later, does), and on a
   * loopback socket each write costs as much as the rest of a short task: riding along
   * with the next result saves one write per task.
   */
  private holdAck(m: JsMsg): void {
    // Closed before its report was stored (the report was given up): leave the item to be
    // delivered again.
    if (this.closed) return;
    this.heldAcks.push(m);
    this.heldAcksTimer ??= setTimeout(() => this.sendHeldAcks(), 10);
  }

  private sendHeldAcks(): void {
    if (this.heldAcks.length === 0) return;
    clearTimeout(this.heldAcksTimer);
    this.heldAcksTimer = undefined;
    const held = this.heldAcks;
    this.heldAcks = [];
    try {
      for (const m of held) m.ack();
    } catch {
      // Connection closed: the items go to another agent after the ack wait, as after a crash.
    }
  }

  /**
   * A JetStream publish: stored once the stream's acknowledgement arrives (a reply to a
   * per-message subject under one inbox subscription). nats.js's own `js.publish` does the
   * same with a subscription entry, a timer and an error object per message; this path is
   * 1.6-1.8 times faster (`npm run bench -- nats-publish`). A message with
   * no ack within `timeoutMs` is failed by one sweeper; the callers retry with the same
   * Nats-Msg-Id, so the stream still stores it once.
   */
  private publishAcked(subject: string, data: string, h: MsgHdrs, timeoutMs = 5000): Promise<void> {
    const a = (this.acks ??= this.listenForAcks());
    const key = (a.next++).toString(36);
    return new Promise<void>((resolve, reject) => {
      a.pending.set(key, { resolve, reject, until: Date.now() + timeoutMs });
      this.sendHeldAcks();
      try {
        this.nc.publish(subject, data, { reply: `${a.inbox}.${key}`, headers: h });
      } catch (e) {
        a.pending.delete(key);
        reject(e as Error);
      }
    });
  }

  private listenForAcks(): NonNullable<JetStreamBus['acks']> {
    const inbox = createInbox();
    const pending = new Map<string, PendingAck>();
    this.nc.subscribe(`${inbox}.*`, {
      callback: (err, m) => {
        if (err !== null) return;
        const key = m.subject.slice(inbox.length + 1);
        const p = pending.get(key);
        if (p === undefined) return;
        pending.delete(key);
        // 503: no stream listens on the subject; otherwise a PubAck, or an API error.
        if (m.headers?.hasError === true) p.reject(new Error(`JetStream publish failed: ${m.headers.code} ${m.headers.description}`));
        else {
          const text = m.string();
          if (text.includes('"error"')) p.reject(new Error(`JetStream publish failed: ${text}`));
          else p.resolve();
        }
      },
    });
    const sweep = setInterval(() => {
      const now = Date.now();
      for (const [key, p] of pending) {
        if (p.until > now) continue;
        pending.delete(key);
        p.reject(new Error('no acknowledgement from JetStream in time'));
      }
    }, 250);
    sweep.unref();
    return { inbox, next: 0, pending, sweep };
  }

  private workStream: Promise<void> | undefined;
  private contextStream: Promise<void> | undefined;

  /**
   * Keeps an attempt's context for its runner when it is too large for the dispatch payload
   * (Nomad takes at most 16 KiB): one message per key on `caravan.ctx.<key>`, kept a week.
   */
  async putContext(key: string, data: string): Promise<void> {
    this.contextStream ??= this.createIfMissing({ name: CONTEXT_STREAM, subjects: ['caravan.ctx.>'], storage: StorageType.File, max_msgs_per_subject: 1, max_age: 7 * 24 * 3_600_000 * MS });
    await this.contextStream;
    const h = headers();
    h.set('Nats-Msg-Id', `ctx:${key}`);
    await this.publishAcked(`caravan.ctx.${subjectToken(key)}`, data, h);
  }

  async getContext(key: string): Promise<string> {
    const m = await this.jsm.streams.getMessage(CONTEXT_STREAM, { last_by_subj: `caravan.ctx.${subjectToken(key)}` });
    if (m === null) throw new Error(`no stored context ${key} on ${CONTEXT_STREAM}`);
    return m.string();
  }

  ensureWorkStream(): Promise<void> {
    this.workStream ??= this.createIfMissing({ name: WORK_STREAM, subjects: ['caravan.work.>'], retention: RetentionPolicy.Workqueue, storage: StorageType.File, duplicate_window: 120_000 * MS });
    return this.workStream;
  }

  /** Creates a stream unless it exists (left as it is: another controller may have tuned it). */
  private async createIfMissing(config: Partial<StreamConfig> & { name: string }): Promise<void> {
    try {
      await this.jsm.streams.info(config.name);
    } catch (e) {
      if (!isNotFound(e)) throw e;
      await this.jsm.streams.add(config);
    }
  }

  /**
   * Creates a durable consumer, or brings one made by another build or another agent to this
   * config (max_ack_pending and ack_wait; the rest cannot change). A plain add would be
   * refused by servers from 2.10 on when the config differs, and accepted as an update by
   * 2.9: doing it explicitly behaves the same on both.
   */
  private async ensureConsumer(stream: string, config: Partial<ConsumerConfig> & { durable_name: string }): Promise<void> {
    let existing: ConsumerConfig;
    try {
      existing = (await this.jsm.consumers.info(stream, config.durable_name)).config;
    } catch (e) {
      if (!isNotFound(e)) throw e;
      await this.jsm.consumers.add(stream, config);
      return;
    }
    const changed = (['max_ack_pending', 'ack_wait'] as const).filter((k) => config[k] !== undefined && existing[k] !== config[k]);
    if (changed.length > 0) await this.jsm.consumers.update(stream, config.durable_name, Object.fromEntries(changed.map((k) => [k, config[k]])));
  }

  /**
   * Takes work for a pool, at most `concurrency` items at a time, through the pool's shared
   * durable consumer. `handle` resolves when the attempt is over (its slot is free) with a
   * promise that settles once its report is stored; only then is the item acknowledged (and
   * removed from the queue). While an item runs, the agent tells the server every third of
   * the ack wait that it is still working on it; an agent that dies (killed, node lost)
   * stops doing so, and the item goes to another agent once the ack wait has passed.
   * Stopping takes no more work, lets what runs finish for up to `drainMs`, then aborts the
   * rest with PoolAgentStopping (`handle` then resolves without `reported`) and hands their
   * items back at once; it resolves when nothing runs any more.
   */
  async consumeWork(workflow: string, pool: string, concurrency: number, handle: (item: WorkItem, signal: AbortSignal) => Promise<{ reported?: Promise<void> }>): Promise<(drainMs?: number) => Promise<void>> {
    await this.ensureWorkStream();
    const name = `pool-${workflow}-${pool}`.replace(/[^A-Za-z0-9_-]/g, '_');
    const ackWaitMs = this.o.workAckWaitMs ?? 30_000;
    // One durable per pool, shared by its agents, so its config must not depend on any one
    // agent: each agent bounds itself (it pulls only with a free slot, and runs at most
    // `concurrency`). A consumer-wide max_ack_pending of `concurrency` capped the whole pool
    // at one agent's worth, and agents with different concurrency (a rolling update) would
    // have fought over the config.
    await this.ensureConsumer(WORK_STREAM, { durable_name: name, filter_subject: `caravan.work.${workflow}.${pool}`, ack_policy: AckPolicy.Explicit, max_ack_pending: -1, ack_wait: ackWaitMs * MS });
    const consumer = await this.js.consumers.get(WORK_STREAM, name);
    // Pull again once half the batch has arrived, not after every item: a pull is a
    // JetStream API request, and one per item cost the server more than storing the item.
    const messages = await consumer.consume({ max_messages: concurrency, threshold_messages: Math.floor(concurrency / 2) });
    // Cancels for this pool: abort the attempt if it runs here; otherwise remember it a
    // while, in case its item is still queued and comes here next.
    // Taken items until acknowledged; `running` while the attempt runs (then its report is on its way).
    const inflight = new Map<string, { abort: AbortController; m: JsMsg; running: boolean }>();
    const cancelled = new Set<string>();
    const control = this.nc.subscribe(`caravan.control.${workflow}.${pool}`, {
      callback: (_err, m) => {
        let ref: WorkRef;
        try {
          ref = JSON.parse(DECODER.decode(m.data)) as WorkRef;
        } catch {
          return;
        }
        const key = workKey(ref);
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
        if (stopping) {
          m.nak();
          continue;
        }
        const item = JSON.parse(DECODER.decode(m.data)) as WorkItem;
        const key = workKey(item);
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
            else void reported.then(() => this.holdAck(m)).finally(() => inflight.delete(key));
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
      // back (naks) what it still holds instead of starting it.
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
      this.sendHeldAcks();
      control.unsubscribe();
    };
  }

  /**
   * Asks a pool's agents to stop an attempt (a core NATS broadcast, so at most once: an agent
   * that misses it runs the attempt to its end, and the run ignores that late report).
   */
  cancelWork(workflow: string, pool: string, ref: WorkRef): void {
    this.nc.publish(`caravan.control.${workflow}.${pool}`, JSON.stringify(ref));
  }


  /** Resolves once every event published so far is stored in the stream. */
  async flush(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  /**
   * Waits up to `ms` for every publish to be stored. On false the rest are given up (their
   * retries stop) and close() does not wait for a server that is not coming back.
   */
  async flushWithin(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((r) => { timer = setTimeout(() => r('late'), ms); });
    try {
      while (this.pending.size > 0) {
        if ((await Promise.race([Promise.all([...this.pending]), late])) === 'late') {
          this.closed = true;
          this.abandoned = true;
          return false;
        }
      }
      return true;
    } finally {
      clearTimeout(timer);
    }
  }

  subscribe(pattern: string, handler: Parameters<Bus['subscribe']>[1]): () => void {
    const name = `caravan-${createHash('sha256').update(`${this.stream}/${pattern}`).digest('hex').slice(0, 20)}`;
    let messages: ConsumerMessages | undefined;
    let stopped = false;
    let unacked: JsMsg | undefined;
    let count = 0;
    let timer: NodeJS.Timeout | undefined;
    let soon: NodeJS.Immediate | undefined;
    const ack = (): void => {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      if (soon !== undefined) clearImmediate(soon);
      soon = undefined;
      unacked?.ack();
      unacked = undefined;
      count = 0;
    };
    const entry = {
      stop: async (): Promise<void> => {
        stopped = true;
        ack();
        await messages?.close().catch(() => undefined);
        await this.jsm.consumers.delete(this.stream, name).catch(() => undefined);
      },
    };
    this.consumers.add(entry);
    void (async () => {
      await this.ensureConsumer(this.stream, {
        durable_name: name,
        filter_subject: pattern,
        ack_policy: AckPolicy.All,
        deliver_policy: DeliverPolicy.All,
        // Acks trail the handler (see below): room for two pulls' worth, or delivery stalls
        // at the server's default of 1,000 while an ack waits for its turn.
        max_ack_pending: 16_384,
      });
      if (stopped) return;
      const consumer = await this.js.consumers.get(this.stream, name);
      messages = await consumer.consume({
        max_messages: 8192,
        callback: (m) => {
          const { o, e } = JSON.parse(DECODER.decode(m.data)) as { o: 'e' | 'a'; e: RunEvent };
          handler(e, { subject: m.subject, origin: o === 'e' ? 'engine' : 'agent' });
          unacked = m;
          // Acknowledged after the handler's microtasks (the engine applies and journals a
          // batch there), never inline: an ack covers every message before it.
          if (++count >= (this.o.ackEvery ?? 256)) soon ??= setImmediate(ack);
          else timer ??= setTimeout(ack, this.o.ackAfterMs ?? 20);
        },
      });
    })().catch((e: unknown) => {
      if (!stopped && !this.closed) process.emitWarning(`caravan: JetStream consumer for ${pattern} stopped: ${(e as Error).message}`);
    });
    return () => {
      this.consumers.delete(entry);
      void entry.stop();
    };
  }

  async close(): Promise<void> {
    if (this.abandoned) {
      clearTimeout(this.heldAcksTimer);
      if (this.acks !== undefined) clearInterval(this.acks.sweep);
      await this.nc.close().catch(() => undefined);
      return;
    }
    await this.flush();
    this.sendHeldAcks();
    for (const c of this.consumers) await c.stop();
    this.consumers.clear();
    this.closed = true;
    if (this.acks !== undefined) clearInterval(this.acks.sweep);
    await this.nc.drain().catch(() => undefined);
  }

}
