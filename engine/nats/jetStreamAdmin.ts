import { JetStreamApiCodes, JetStreamApiError, type ConsumerConfig, type JetStreamManager, type StreamConfig } from '@nats-io/jetstream';

/** JetStream durations are nanoseconds. */
export const NANOS_PER_MS = 1_000_000;

/** A stream's configuration as Caravan writes it: a name and whatever it sets. */
export type StreamSettings = Partial<StreamConfig> & { name: string };

/** A durable consumer's configuration as Caravan writes it. */
export type DurableSettings = Partial<ConsumerConfig> & { durable_name: string };

/** JetStream's typed answer for a stream that does not exist (err_code 10059). */
export function isStreamNotFound(e: unknown): boolean {
  return e instanceof JetStreamApiError && e.code === JetStreamApiCodes.StreamNotFound;
}

/** JetStream's typed answer for a consumer that does not exist (err_code 10014). */
export function isConsumerNotFound(e: unknown): boolean {
  return e instanceof JetStreamApiError && e.code === JetStreamApiCodes.ConsumerNotFound;
}

/** Creates the stream, or brings an existing one to `config` (the events stream: its limits are ours). */
export async function ensureStream(jsm: JetStreamManager, config: StreamSettings): Promise<void> {
  if (!(await createStreamIfMissing(jsm, config))) await jsm.streams.update(config.name, config);
}

/**
 * Creates a stream unless it exists (left as it is: another controller may have tuned it).
 * Returns whether it was created.
 */
export async function createStreamIfMissing(jsm: JetStreamManager, config: StreamSettings): Promise<boolean> {
  try {
    await jsm.streams.info(config.name);
    return false;
  } catch (e) {
    if (!isStreamNotFound(e)) throw e;
    await jsm.streams.add(config);
    return true;
  }
}

/**
 * Creates a durable consumer, or brings one made by another build or another agent to this
 * config (max_ack_pending and ack_wait; the rest cannot change). A plain add would be
 * refused by servers from 2.10 on when the config differs, and accepted as an update by
 * 2.9: doing it explicitly behaves the same on both.
 */
export async function ensureConsumer(jsm: JetStreamManager, stream: string, config: DurableSettings): Promise<void> {
  let existing: ConsumerConfig;
  try {
    existing = (await jsm.consumers.info(stream, config.durable_name)).config;
  } catch (e) {
    if (!isConsumerNotFound(e)) throw e;
    await jsm.consumers.add(stream, config);
    return;
  }
  const changed = (['max_ack_pending', 'ack_wait'] as const).filter((k) => config[k] !== undefined && existing[k] !== config[k]);
  if (changed.length > 0) await jsm.consumers.update(stream, config.durable_name, Object.fromEntries(changed.map((k) => [k, config[k]])));
}
