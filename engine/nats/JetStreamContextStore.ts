import { headers } from '@nats-io/transport-node';
import { StorageType, type JetStreamManager, type StoredMsg } from '@nats-io/jetstream';
import { CaravanError } from '../errors/CaravanError.js';
import type { ContextStore } from '../run/ContextStore.js';
import { contextSubject } from '../run/protocol.js';
import { NANOS_PER_MS, createStreamIfMissing, isStreamNotFound } from './jetStreamAdmin.js';
import type { JetStreamPublisher } from './JetStreamPublisher.js';

export const CONTEXT_STREAM = 'CARAVAN_CONTEXT';

/**
 * The ContextStore on a JetStream stream: one message per key on `caravan.ctx.<key>` (the
 * stream keeps the last per subject), kept a week. Made by connectJetStream, on its shared
 * connection.
 */
export class JetStreamContextStore implements ContextStore {
  private stream: Promise<void> | undefined;

  constructor(private readonly jsm: JetStreamManager, private readonly publisher: JetStreamPublisher) {}

  async put(key: string, data: string): Promise<void> {
    this.stream ??= createStreamIfMissing(this.jsm, { name: CONTEXT_STREAM, subjects: ['caravan.ctx.>'], storage: StorageType.File, max_msgs_per_subject: 1, max_age: 7 * 24 * 3_600_000 * NANOS_PER_MS }).then(() => undefined);
    await this.stream;
    const h = headers();
    h.set('Nats-Msg-Id', `ctx:${key}`);
    await this.publisher.publish(contextSubject(key), data, h);
  }

  async get(key: string): Promise<string> {
    let m: StoredMsg | null;
    try {
      m = await this.jsm.streams.getMessage(CONTEXT_STREAM, { last_by_subj: contextSubject(key) });
    } catch (e) {
      // No context was ever stored through this server: the stream is not there either.
      if (!isStreamNotFound(e)) throw e;
      m = null;
    }
    // The subject token's escaping is not one-to-one (`a:b` and `a_3ab` share a token): the
    // message id says which key the stored text belongs to.
    if (m === null || m.header.get('Nats-Msg-Id') !== `ctx:${key}`) {
      throw new CaravanError('CONTEXT_NOT_FOUND', `no stored context ${key} on ${CONTEXT_STREAM}`, { data: { key, stream: CONTEXT_STREAM } });
    }
    return m.string();
  }
}
