import type { RunEvent } from './RunEvent.js';

/**
 * The port task events travel through: in memory by default, NATS JetStream for real. A
 * subject is `caravan.ev.<workflow>.<run>.<task>`. Every implementation keeps these rules
 * (tests/contract/bus.contract.test.ts):
 * - delivery is asynchronous (never inside publish) and in publish order per subscription;
 * - an event published again with the same `msgId` within the bus's window is kept once;
 * - a subscription also gets the matching events published before it (those the bus still
 *   keeps), oldest first, then the new ones: the engine subscribes only after it replayed
 *   its journal, and the reports that arrived in between must not be lost.
 */
export interface Bus {
  /**
   * Publishes one event; `msgId` de-duplicates (Nats-Msg-Id), `origin` travels with it. A
   * bus that stores events may return a promise that settles once this one is stored (a
   * runner acknowledges its work item only then); the embedded bus returns nothing.
   */
  publish(subject: string, event: RunEvent, options: { msgId: string; origin: 'engine' | 'agent' }): void | Promise<void>;
  /** Subscribes to a subject pattern (`*` one token, `>` the rest). Returns an unsubscribe function. */
  subscribe(pattern: string, handler: (event: RunEvent, meta: { subject: string; origin: 'engine' | 'agent' }) => void): () => void;
  /**
   * Stops this bus's subscriptions and waits for what it published to be delivered or
   * stored. A bus on a shared connection leaves the connection to whoever opened it.
   */
  close(): Promise<void>;
}

// Subjects are part of the wire protocol; these re-exports keep existing imports working.
export { eventSubject, runSubjects, subjectToken } from './protocol.js';

/**
 * Whether a subject matches a pattern (`*` one token, `>` the rest), as NATS matches them:
 * the embedded bus filters with it.
 */
export function subjectMatches(pattern: string, subject: string): boolean {
  // The common case (`prefix.>` with no `*`) needs no splitting: it is on every delivery.
  if (pattern.endsWith('.>') && !pattern.includes('*')) return subject.startsWith(pattern.slice(0, -1));
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length) return false;
    if (p[i] !== '*' && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}
