import type { Metrics } from '../run/Metrics.js';
import { createHash } from 'node:crypto';
import { headers } from '@nats-io/transport-node';
import { AckPolicy, DeliverPolicy, RetentionPolicy, StorageType, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type JsMsg } from '@nats-io/jetstream';
import { CaravanError } from '../errors/CaravanError.js';
import type { Bus } from '../run/Bus.js';
import type { RunEvent } from '../run/RunEvent.js';
import { NANOS_PER_MS, ensureConsumer, ensureStream } from './jetStreamAdmin.js';
import type { JetStreamPublisher } from './JetStreamPublisher.js';

export const EVENTS_STREAM = 'CARAVAN_EVENTS';
const ORIGIN_HEADER = 'Caravan-Origin';
const DECODER = new TextDecoder();

/** The events stream's limits. */
export interface StreamLimits {
  maxAgeMs?: number;
  maxBytes?: number;
  replicas?: number;
  /** How long a Nats-Msg-Id is remembered for de-duplication. */
  duplicateWindowMs?: number;
}

/** The event bus's settings (the connection is connectJetStream's). */
export interface JetStreamBusOptions {
  stream?: string;
  limits?: StreamLimits;
  /** Acknowledge after this many messages (ack policy "all": one ack covers all before it)... */
  ackEvery?: number;
  /** ...or this long after the first unacknowledged one. */
  ackAfterMs?: number;
  /**
   * Told of failures nobody waits for: a subscription's consumer that stopped (default: a
   * process warning, as before) and a durable consumer left behind at unsubscribe.
   */
  onError?: (err: Error) => void;
  /** Counts publishes tried again (caravan_bus_publish_retries_total). */
  metrics?: Metrics;
}

/**
 * The Bus on NATS JetStream. Every event goes to one stream (`caravan.ev.>`) with its
 * `Nats-Msg-Id` (`<run>:<task>:<attempt>:<event>`), so a republished event is stored once.
 * Publishes are pipelined: publish() returns at once, a failed publish (server restarting)
 * is retried with the same id until it is stored, and flush() waits for all of them.
 * Subscribers read through durable pull consumers with batched acknowledgements, and keep
 * their place across reconnects. Made by connectJetStream, on its shared connection.
 */
export class JetStreamBus implements Bus {
  private readonly pending = new Set<Promise<void>>();
  private readonly consumers = new Set<{ stop: () => Promise<void> }>();

  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly publisher: JetStreamPublisher,
    private readonly options: JetStreamBusOptions = {},
  ) {}

  get stream(): string {
    return this.options.stream ?? EVENTS_STREAM;
  }

  /** Creates the stream, or brings an existing one to the configured limits. */
  ensureStream(): Promise<void> {
    const l = this.options.limits ?? {};
    return ensureStream(this.jsm, {
      name: this.stream,
      subjects: ['caravan.ev.>'],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      max_age: (l.maxAgeMs ?? 7 * 24 * 3_600_000) * NANOS_PER_MS,
      max_bytes: l.maxBytes ?? -1,
      num_replicas: l.replicas ?? 1,
      duplicate_window: (l.duplicateWindowMs ?? 120_000) * NANOS_PER_MS,
    });
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
        await this.publisher.publish(subject, data, h);
      } catch {
        // Not stored (server restarting, timeout): retry with the same id; JetStream drops a
        // copy. Counted, not logged: a restart would log thousands of lines, one per event.
        if (this.publisher.closed) return;
        this.options.metrics?.busPublishRetried(this.stream);
        await new Promise((r) => setTimeout(r, Math.min(2000, 50 * 2 ** n)));
        return attempt(n + 1);
      }
    };
    const p: Promise<void> = attempt(0).finally(() => this.pending.delete(p));
    this.pending.add(p);
    return p;
  }

  /** Resolves once every event published so far is stored in the stream. */
  async flush(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  /**
   * Waits up to `ms` for every publish to be stored. On false the rest are given up (their
   * retries stop, on the whole connection) and close() does not wait for a server that is
   * not coming back.
   */
  async flushWithin(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((r) => { timer = setTimeout(() => r('late'), ms); });
    try {
      while (this.pending.size > 0) {
        if ((await Promise.race([Promise.all([...this.pending]), late])) === 'late') {
          this.publisher.giveUp();
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
    const ackEvery = this.options.ackEvery ?? 256;
    const ackAfterMs = this.options.ackAfterMs ?? 20;
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
        // Closing a consumer whose connection is already gone fails; it is stopped either way.
        await messages?.close().catch(() => undefined);
        await this.jsm.consumers.delete(this.stream, name).catch((e: unknown) => {
          // Left behind, the durable keeps its place: a later subscription to the same
          // pattern resumes after what this one acknowledged.
          this.options.onError?.(new CaravanError('BUS_UNAVAILABLE', `could not delete the JetStream consumer ${name} for ${pattern}: ${(e as Error).message}`, { cause: e }));
        });
      },
    };
    this.consumers.add(entry);
    void (async () => {
      await ensureConsumer(this.jsm, this.stream, {
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
          this.options.metrics?.backendRequest('nats', 'ok');
          const { o, e } = JSON.parse(DECODER.decode(m.data)) as { o: 'e' | 'a'; e: RunEvent };
          handler(e, { subject: m.subject, origin: o === 'e' ? 'engine' : 'agent' });
          unacked = m;
          // Acknowledged after the handler's microtasks (the engine applies and journals a
          // batch there), never inline: an ack covers every message before it.
          if (++count >= ackEvery) soon ??= setImmediate(ack);
          else timer ??= setTimeout(ack, ackAfterMs);
        },
      });
    })().catch((e: unknown) => {
      if (stopped || this.publisher.closed) return;
      this.options.metrics?.backendRequest('nats', 'error');
      const message = `JetStream consumer for ${pattern} stopped: ${(e as Error).message}`;
      if (this.options.onError !== undefined) this.options.onError(new CaravanError('BUS_UNAVAILABLE', message, { cause: e }));
      else process.emitWarning(`caravan: ${message}`);
    });
    return () => {
      this.consumers.delete(entry);
      void entry.stop();
    };
  }

  /**
   * Waits for every publish to be stored and stops the subscriptions (their durables are
   * deleted). The connection stays open: it is connectJetStream's to close. After a
   * flushWithin that gave up there is nothing left to wait for.
   */
  async close(): Promise<void> {
    if (this.publisher.abandoned) return;
    await this.flush();
    this.publisher.sendHeldAcks();
    for (const c of this.consumers) await c.stop();
    this.consumers.clear();
  }
}
