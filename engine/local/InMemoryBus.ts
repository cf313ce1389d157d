import { subjectMatches, type Bus } from '../run/Bus.js';
import type { RunEvent } from '../run/RunEvent.js';

interface Sub {
  pattern: string;
  handler: Parameters<Bus['subscribe']>[1];
}

/** A published event, kept for subscribers yet to come. */
interface Kept {
  msgId: string;
  subject: string;
  event: RunEvent;
  origin: 'engine' | 'agent';
}

/**
 * The embedded bus: delivery is asynchronous (a microtask later, in publish order), so the
 * engine behaves as it does over NATS, and a message id seen within the window is dropped,
 * as JetStream does with Nats-Msg-Id. The last `dedupeWindow` events are kept, as a stream
 * keeps them: a new subscription gets the matching ones first, oldest first.
 */
export class InMemoryBus implements Bus {
  private readonly subs = new Set<Sub>();
  private readonly seen = new Set<string>();
  private readonly kept: Kept[] = [];
  private queue: Array<() => void> = [];
  private scheduled = false;

  constructor(private readonly dedupeWindow = 100_000) {}

  publish(subject: string, event: RunEvent, options: { msgId: string; origin: 'engine' | 'agent' }): void {
    if (this.seen.has(options.msgId)) return;
    this.seen.add(options.msgId);
    this.kept.push({ msgId: options.msgId, subject, event, origin: options.origin });
    if (this.kept.length > this.dedupeWindow) this.seen.delete(this.kept.shift()!.msgId);
    for (const sub of this.subs) {
      if (subjectMatches(sub.pattern, subject)) this.queue.push(() => sub.handler(event, { subject, origin: options.origin }));
    }
    if (!this.scheduled && this.queue.length > 0) {
      this.scheduled = true;
      queueMicrotask(() => this.drain());
    }
  }

  private drain(): void {
    this.scheduled = false;
    const batch = this.queue;
    this.queue = [];
    for (const deliver of batch) deliver();
  }

  subscribe(pattern: string, handler: Sub['handler']): () => void {
    const sub = { pattern, handler };
    // What was published before, queued ahead of anything published from now on.
    for (const k of this.kept) {
      if (subjectMatches(pattern, k.subject)) this.queue.push(() => handler(k.event, { subject: k.subject, origin: k.origin }));
    }
    if (!this.scheduled && this.queue.length > 0) {
      this.scheduled = true;
      queueMicrotask(() => this.drain());
    }
    this.subs.add(sub);
    return () => this.subs.delete(sub);
  }

  async close(): Promise<void> {
    this.subs.clear();
  }
}
