import { subjectMatches, type Bus } from '../run/Bus.js';
import type { RunEvent } from '../run/RunEvent.js';

interface Sub {
  pattern: string;
  handler: Parameters<Bus['subscribe']>[1];
}

/**
 * The embedded bus: delivery is asynchronous (a microtask later, in publish order), so the
 * engine behaves as it does over NATS, and a message id seen within the window is dropped,
 * as JetStream does with Nats-Msg-Id.
 */
export class InMemoryBus implements Bus {
  private readonly subs = new Set<Sub>();
  private readonly seen = new Set<string>();
  private readonly order: string[] = [];
  private queue: Array<() => void> = [];
  private scheduled = false;

  constructor(private readonly dedupeWindow = 100_000) {}

  publish(subject: string, event: RunEvent, options: { msgId: string; origin: 'engine' | 'agent' }): void {
    if (this.seen.has(options.msgId)) return;
    this.seen.add(options.msgId);
    this.order.push(options.msgId);
    if (this.order.length > this.dedupeWindow) this.seen.delete(this.order.shift()!);
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
    this.subs.add(sub);
    return () => this.subs.delete(sub);
  }

  async close(): Promise<void> {
    this.subs.clear();
  }
}
