import type { RunEvent } from '../run/RunEvent.js';

/** One event as a live-event subscriber gets it, with the id it resumes from. */
export interface FedEvent {
  /**
   * Where the event is: its JetStream stream sequence on the NATS bus, its 1-based index in
   * the run's journal and events.ndjson on the in-memory bus; undefined where there is none
   * to resume from (every run's events on the in-memory bus).
   */
  id: number | undefined;
  event: RunEvent;
}

/** Why a run's events end: it ended, it is no longer live here without an end, or reading failed. */
export type TimelineEnd = { reason: 'run-ended'; status: 'succeeded' | 'failed' | 'cancelled' } | { reason: 'not-live' } | { reason: 'error'; message: string };

/** The types of the events a run ends with. */
const FINAL = new Map<RunEvent['type'], 'succeeded' | 'failed' | 'cancelled'>([['run.succeeded', 'succeeded'], ['run.failed', 'failed'], ['run.cancelled', 'cancelled']]);

/** The status a run's final event ends it with; undefined for every other event. */
export function finalStatus(e: RunEvent): 'succeeded' | 'failed' | 'cancelled' | undefined {
  return FINAL.get(e.type);
}

/**
 * One run's events so far, in order, growing until the run ends: read once from the stream
 * or the journal and shared by every subscriber of the run, each holding only its index. A
 * thousand subscribers cost one reader and one copy of the events, not a thousand.
 */
export class RunTimeline {
  readonly events: FedEvent[] = [];
  private endedWith: TimelineEnd | undefined;
  private waiters: Array<() => void> = [];
  private waking = false;

  constructor(readonly runId: string) {}

  get ended(): TimelineEnd | undefined {
    return this.endedWith;
  }

  /** Adds events read; waiting subscribers are woken once per turn of the event loop, not per event. */
  append(events: readonly FedEvent[]): void {
    if (this.endedWith !== undefined || events.length === 0) return;
    for (const e of events) this.events.push(e);
    this.wake();
  }

  end(how: TimelineEnd): void {
    if (this.endedWith !== undefined) return;
    this.endedWith = how;
    this.wake();
  }

  /** The index of the first event whose id is above `after` (ids only grow along a timeline). */
  indexAfter(after: number): number {
    let lo = 0;
    let hi = this.events.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.events[mid]!.id ?? 0) <= after) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Resolves when events are added or the timeline ends (or at once, if it has ended). */
  changed(): Promise<void> {
    if (this.endedWith !== undefined) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private wake(): void {
    if (this.waking) return;
    this.waking = true;
    setImmediate(() => {
      this.waking = false;
      const w = this.waiters;
      this.waiters = [];
      for (const r of w) r();
    });
  }
}
