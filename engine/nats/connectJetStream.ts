import { connect, type NatsConnection, type NodeConnectionOptions } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { JetStreamBus, type JetStreamBusOptions } from './JetStreamBus.js';
import { JetStreamContextStore } from './JetStreamContextStore.js';
import { JetStreamEventLog } from './JetStreamEventLog.js';
import { JetStreamPublisher } from './JetStreamPublisher.js';
import { JetStreamWorkQueue, type JetStreamWorkQueueOptions } from './JetStreamWorkQueue.js';

/**
 * Everything to open Caravan's JetStream backends: the connection (natsConnectionOptions
 * reads it from the environment), the events stream's name and limits, the subscriptions'
 * ack batching and the pools' ack wait. `onError` hears the failures nobody waits for.
 */
export interface ConnectJetStreamOptions extends JetStreamBusOptions, JetStreamWorkQueueOptions {
  connection: NodeConnectionOptions;
}

/** The JetStream adapters of one process, on one NATS connection. */
export interface JetStreamBackends {
  /** The one connection; for the server's own APIs (jetstreamManager) and monitoring. */
  readonly connection: NatsConnection;
  readonly bus: JetStreamBus;
  readonly workQueue: JetStreamWorkQueue;
  readonly contexts: JetStreamContextStore;
  /** The events stream read by sequence (live-event subscribers). */
  readonly eventLog: JetStreamEventLog;
  /**
   * Waits for the bus's publishes to be stored (unless flushWithin gave up on them), stops
   * its subscriptions, sends held work acks and closes the connection. Stop work consumers
   * first. Safe to call more than once: the first call does the work, later ones wait for it.
   */
  close(): Promise<void>;
}

/**
 * Opens one NATS connection and makes the bus, the work queue and the context store on it,
 * sharing one publisher (one ack inbox). The events stream is created or brought to its
 * limits before this resolves, so a server without JetStream fails here; the work and
 * context streams are created when first used.
 */
export async function connectJetStream(options: ConnectJetStreamOptions): Promise<JetStreamBackends> {
  const nc = await connect(options.connection);
  try {
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    const publisher = new JetStreamPublisher(nc, options.metrics);
    const bus = new JetStreamBus(js, jsm, publisher, options);
    await bus.ensureStream();
    const workQueue = new JetStreamWorkQueue(nc, js, jsm, publisher, options);
    const contexts = new JetStreamContextStore(jsm, publisher);
    const eventLog = new JetStreamEventLog(js, jsm, bus.stream);
    let closing: Promise<void> | undefined;
    const close = async (): Promise<void> => {
      if (publisher.abandoned) {
        // The server did not store what was published in time; nothing is worth waiting for.
        publisher.close();
        // A connection that fails to close is closed all the same: nothing of it is used again.
        await nc.close().catch(() => undefined);
        return;
      }
      await bus.close();
      publisher.close();
      // Draining lets the subscriptions finish what they received; a connection that is
      // already closed has nothing left to drain.
      await nc.drain().catch(() => undefined);
    };
    return { connection: nc, bus, workQueue, contexts, eventLog, close: () => (closing ??= close()) };
  } catch (e) {
    // No JetStream on the server (or no permission for it): the connection is of no use, and
    // `e`, thrown below, is what the caller must see, not a failure to close.
    await nc.close().catch(() => undefined);
    throw e;
  }
}
