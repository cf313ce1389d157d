import { forgetOldest } from '../run/forgetOldest.js';
import { attemptKey, type WorkItem, type WorkRef } from '../run/protocol.js';
import { PoolAgentStopping, type StopConsuming, type WorkHandler, type WorkQueue } from '../run/WorkQueue.js';

/** One consumer of a pool's queue and the items it has taken. */
interface Consumer {
  concurrency: number;
  handle: WorkHandler;
  stopping: boolean;
  /** Items taken and not yet done with, by attempt key; `running` while the handler runs. */
  taken: Map<string, { item: WorkItem; abort: AbortController; running: boolean }>;
  running: number;
  idle: (() => void) | undefined;
}

/** One workflow's pool: its waiting items (oldest first) and its consumers. */
interface Pool {
  queue: WorkItem[];
  consumers: Consumer[];
  /** Where the next hand-out starts, so consumers take turns. */
  turn: number;
  /** Cancels for items not taken yet (JetStream's agents remember them the same way). */
  cancelled: Set<string>;
}

/** Settings of the embedded work queue. */
export interface InMemoryWorkQueueOptions {
  /** How many attempt keys are remembered to drop a repeated hand-off (JetStream: a two-minute window). */
  dedupeWindow?: number;
  /** An item whose handler gave it up without a report or a rejection is handed out again after this long (default 30 s). */
  ackWaitMs?: number;
}

/**
 * The embedded WorkQueue: pools and their agents in this process. Hand-outs are
 * asynchronous (a microtask later), as over NATS, and each item goes to one consumer with a
 * free slot, the consumers taking turns.
 */
export class InMemoryWorkQueue implements WorkQueue {
  private readonly pools = new Map<string, Pool>();
  private readonly seen = new Set<string>();
  private scheduled = false;

  constructor(private readonly options: InMemoryWorkQueueOptions = {}) {}

  async enqueue(workflow: string, pool: string, item: WorkItem): Promise<void> {
    const id = attemptKey(item.runId, item.instance, item.attempt);
    if (this.seen.has(id)) return;
    this.seen.add(id);
    forgetOldest(this.seen, this.options.dedupeWindow ?? 100_000);
    this.pool(workflow, pool).queue.push(item);
    this.schedule();
  }

  cancel(workflow: string, pool: string, ref: WorkRef): void {
    const p = this.pool(workflow, pool);
    const key = attemptKey(ref.runId, ref.instance, ref.attempt);
    for (const c of p.consumers) {
      const taken = c.taken.get(key);
      if (taken !== undefined) {
        taken.abort.abort();
        return;
      }
    }
    // Not taken: the item is skipped when its turn comes (it may also not be queued yet).
    p.cancelled.add(key);
    forgetOldest(p.cancelled, 10_000);
  }

  async consume(workflow: string, pool: string, concurrency: number, handle: WorkHandler): Promise<StopConsuming> {
    const p = this.pool(workflow, pool);
    const c: Consumer = { concurrency, handle, stopping: false, taken: new Map(), running: 0, idle: undefined };
    p.consumers.push(c);
    this.schedule();
    const allDone = (): Promise<void> => (c.running === 0 ? Promise.resolve() : new Promise<void>((r) => { c.idle = r; }));
    return async (drainMs = 0) => {
      c.stopping = true;
      p.consumers.splice(p.consumers.indexOf(c), 1);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([allDone(), new Promise<void>((r) => { timer = setTimeout(r, drainMs); })]);
      clearTimeout(timer);
      for (const [key, t] of c.taken) {
        if (!t.running || t.abort.signal.aborted) continue;
        t.abort.abort(new PoolAgentStopping());
        c.taken.delete(key);
        this.handBack(p, t.item);
      }
      await allDone();
    };
  }

  private pool(workflow: string, pool: string): Pool {
    const key = `${workflow}\n${pool}`;
    let p = this.pools.get(key);
    if (p === undefined) {
      p = { queue: [], consumers: [], turn: 0, cancelled: new Set() };
      this.pools.set(key, p);
    }
    return p;
  }

  /** Puts an item back at the head of its queue: it was taken first, it runs first. */
  private handBack(p: Pool, item: WorkItem): void {
    p.queue.unshift(item);
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      for (const p of this.pools.values()) this.handOut(p);
    });
  }

  /** Gives waiting items to consumers with a free slot, in turns, until either runs out. */
  private handOut(p: Pool): void {
    while (p.queue.length > 0) {
      const n = p.consumers.length;
      let chosen: Consumer | undefined;
      for (let i = 0; i < n && chosen === undefined; i++) {
        const c = p.consumers[(p.turn + i) % n]!;
        if (!c.stopping && c.running < c.concurrency) {
          chosen = c;
          p.turn = (p.turn + i + 1) % n;
        }
      }
      if (chosen === undefined) return;
      const item = p.queue.shift()!;
      const key = attemptKey(item.runId, item.instance, item.attempt);
      if (p.cancelled.delete(key)) continue;
      this.run(p, chosen, key, item);
    }
  }

  private run(p: Pool, c: Consumer, key: string, item: WorkItem): void {
    const abort = new AbortController();
    const taken = { item, abort, running: true };
    c.taken.set(key, taken);
    c.running++;
    const free = (): void => {
      taken.running = false;
      c.running--;
      if (c.running === 0) c.idle?.();
      this.schedule();
    };
    c.handle(item, abort.signal).then(
      ({ reported }) => {
        free();
        if (reported === undefined) {
          // Handed back already if the consumer stopped it; otherwise it was given up
          // without a word, and comes back after the ack wait, as on JetStream.
          if (c.taken.delete(key)) setTimeout(() => this.handBack(p, item), this.options.ackWaitMs ?? 30_000).unref();
          return;
        }
        // Done with once its report is stored; a report that is never stored leaves the
        // item to come back after the ack wait.
        reported.then(
          () => c.taken.delete(key),
          () => {
            c.taken.delete(key);
            setTimeout(() => this.handBack(p, item), this.options.ackWaitMs ?? 30_000).unref();
          },
        );
      },
      () => {
        free();
        // Unless a stopping consumer handed it back already.
        if (c.taken.delete(key)) this.handBack(p, item);
      },
    );
  }
}
