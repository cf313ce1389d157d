import { createInbox, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node';
import type { JsMsg } from '@nats-io/jetstream';
import { CaravanError } from '../errors/CaravanError.js';
import type { Metrics } from '../run/Metrics.js';

interface PendingAck {
  resolve: () => void;
  reject: (e: Error) => void;
  until: number;
}

/**
 * Acknowledged JetStream publishes for everything on one connection (events, work items,
 * contexts), over one inbox subscription, and the work items' acknowledgements that ride
 * along with them. Shared by the bus, the work queue and the context store of a
 * connection: one inbox, and a held ack leaves with whichever of them sends next.
 */
export class JetStreamPublisher {
  private acks: { inbox: string; next: number; pending: Map<string, PendingAck>; sweep: NodeJS.Timeout } | undefined;
  private heldAcks: JsMsg[] = [];
  private heldAcksTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private gaveUp = false;

  /** `metrics` counts each publish's outcome (caravan_backend_requests_total{backend="nats"}). */
  constructor(private readonly nc: NatsConnection, private readonly metrics?: Metrics) {}

  /**
   * True once the connection is closing or its owner gave up on unstored publishes: retries
   * stop, and work items are no longer acknowledged (their reports may not be stored).
   */
  get closed(): boolean {
    return this.stopped;
  }

  /** True once give-up was called: close() then does not wait for a server that is not coming back. */
  get abandoned(): boolean {
    return this.gaveUp;
  }

  /** Stops retries and acknowledgements at once (see closed). */
  giveUp(): void {
    this.stopped = true;
    this.gaveUp = true;
  }

  /**
   * A JetStream publish: stored once the stream's acknowledgement arrives (a reply to a
   * per-message subject under one inbox subscription). nats.js's own `js.publish` does the
   * same with a subscription entry, a timer and an error object per message; this path is
   * 1.6-1.8 times faster (`npm run bench -- nats-publish`). A message with
   * no ack within `timeoutMs` is failed by one sweeper; the callers retry with the same
   * Nats-Msg-Id, so the stream still stores it once.
   */
  publish(subject: string, data: string, h: MsgHdrs, timeoutMs = 5000): Promise<void> {
    const a = (this.acks ??= this.listenForAcks());
    const key = (a.next++).toString(36);
    const m = this.metrics;
    return new Promise<void>((resolve, reject) => {
      // Counted where the outcome is known (ack, error reply, sweep), not with a then() per publish.
      const pending = m === undefined ? { resolve, reject } : {
        resolve: () => { m.backendRequest('nats', 'ok'); resolve(); },
        reject: (e: Error) => { m.backendRequest('nats', 'error'); reject(e); },
      };
      a.pending.set(key, { ...pending, until: Date.now() + timeoutMs });
      this.sendHeldAcks();
      try {
        this.nc.publish(subject, data, { reply: `${a.inbox}.${key}`, headers: h });
      } catch (e) {
        a.pending.delete(key);
        pending.reject(e as Error);
      }
    });
  }

  /**
   * Acknowledges a work item with the next message this connection sends, or within 10 ms.
   * No one waits for a work item's ack (only its redelivery, 30 s later, does), and on a
   * loopback socket each write costs as much as the rest of a short task: riding along
   * with the next result saves one write per task.
   */
  holdAck(m: JsMsg): void {
    // Closed before its report was stored (the report was given up): leave the item to be
    // delivered again.
    if (this.stopped) return;
    this.heldAcks.push(m);
    this.heldAcksTimer ??= setTimeout(() => this.sendHeldAcks(), 10);
  }

  /** Sends the held acknowledgements now. */
  sendHeldAcks(): void {
    if (this.heldAcks.length === 0) return;
    clearTimeout(this.heldAcksTimer);
    this.heldAcksTimer = undefined;
    const held = this.heldAcks;
    this.heldAcks = [];
    try {
      for (const m of held) m.ack();
    } catch {
      // Connection closed: the items go to another agent after the ack wait, as after a
      // crash. Nothing is lost, so nothing to tell.
    }
  }

  /**
   * Ends publishing on this connection, before it closes: held acks are sent (unless the
   * owner gave up), no retry starts any more, and the sweeper stops (a publish still waiting
   * is one its owner already waited for, or gave up on).
   */
  close(): void {
    if (!this.gaveUp) this.sendHeldAcks();
    clearTimeout(this.heldAcksTimer);
    this.heldAcksTimer = undefined;
    this.stopped = true;
    if (this.acks !== undefined) clearInterval(this.acks.sweep);
  }

  private listenForAcks(): NonNullable<JetStreamPublisher['acks']> {
    const inbox = createInbox();
    const pending = new Map<string, PendingAck>();
    this.nc.subscribe(`${inbox}.*`, {
      callback: (err, m) => {
        // The subscription ends only with the connection: nothing waits any more.
        if (err !== null) return;
        const key = m.subject.slice(inbox.length + 1);
        const p = pending.get(key);
        if (p === undefined) return;
        pending.delete(key);
        // 503: no stream listens on the subject; otherwise a PubAck, or an API error.
        if (m.headers?.hasError === true) p.reject(new CaravanError('BUS_UNAVAILABLE', `JetStream publish failed: ${m.headers.code} ${m.headers.description}`));
        else {
          const text = m.string();
          if (text.includes('"error"')) p.reject(new CaravanError('BUS_UNAVAILABLE', `JetStream publish failed: ${text}`));
          else p.resolve();
        }
      },
    });
    const sweep = setInterval(() => {
      const now = Date.now();
      for (const [key, p] of pending) {
        if (p.until > now) continue;
        pending.delete(key);
        p.reject(new CaravanError('BUS_UNAVAILABLE', 'no acknowledgement from JetStream in time'));
      }
    }, 250);
    sweep.unref();
    return { inbox, next: 0, pending, sweep };
  }
}
