/**
 * Where an attempt's context waits for its runner when it is too large to travel with the
 * attempt (a Nomad dispatch payload holds at most 16 KiB): in memory by default
 * (engine/local/InMemoryContextStore), a JetStream stream for real
 * (engine/nats/JetStreamContextStore). Every implementation keeps these rules
 * (tests/contract/contextStore.contract.test.ts):
 * - get() returns exactly the text last put() under that key, whatever its size or content;
 * - an attempt's context does not change: putting a key again with the same text (an
 *   attempt dispatched again) is harmless. Which text a second put with a different text
 *   leaves is not defined (JetStream drops it within its de-duplication window);
 * - put() resolves only once the text is stored: the runner may ask for it at once, from
 *   another process;
 * - get() of a key that holds nothing rejects with a CaravanError `CONTEXT_NOT_FOUND`;
 * - texts are kept at least as long as an attempt may wait for its runner (JetStream: a week).
 */
export interface ContextStore {
  /** Stores `data` (JSON text of an ExpressionContext, in practice) under `key` (an attemptKey). */
  put(key: string, data: string): Promise<void>;
  /** The text stored under `key`. */
  get(key: string): Promise<string>;
}
