import type { GitAuditStore } from '../audit/GitAuditStore.js';
import { JournalTail } from '../audit/JournalTail.js';
import { CaravanError } from '../errors/CaravanError.js';
import { runSubjects, subjectToken } from '../run/Bus.js';
import type { EventLog } from '../run/EventLog.js';
import { noopLogger, type Logger } from '../run/Logger.js';
import type { RunEvent } from '../run/RunEvent.js';
import { isFinal } from '../run/RunEvent.js';
import type { LiveRuns } from './LiveRuns.js';
import type { RunQueries } from './RunQueries.js';
import { finalStatus, RunTimeline, type FedEvent } from './RunTimeline.js';

export interface RunEventFeedOptions {
  live: LiveRuns;
  audit: GitAuditStore;
  queries: RunQueries;
  /** The bus's stored events (NATS); undefined on the in-memory bus, where journals are read. */
  eventLog: () => Promise<EventLog | undefined>;
  /** How often a live run's journal (and the list of live runs) is read again; default 50 ms. */
  pollMs?: number;
  /** Events of every run held for one slow subscriber before it is dropped; default 10,000. */
  maxQueued?: number;
  logger?: Logger;
}

/** A subscription to one run's shared timeline; release it when done. */
export interface RunSubscription {
  timeline: RunTimeline;
  release(): void;
}

/**
 * Live events for subscribers (the API's SSE routes): one run's events, replayed then
 * followed until it ends, or every run's. On the NATS bus they come from the events stream,
 * ids being stream sequences; on the in-memory bus from the runs' journals (and the audit
 * branch once a run is written there), ids being 1-based indexes in the journal, which
 * events.ndjson on caravan/runs holds in the same order.
 */
export class RunEventFeed {
  private readonly timelines = new Map<string, { timeline: RunTimeline; users: number; stop: AbortController }>();
  private readonly log: Logger;

  constructor(private readonly o: RunEventFeedOptions) {
    this.log = o.logger ?? noopLogger;
  }

  /** What the ids are: stream sequences (NATS) or journal indexes (in memory). */
  async ids(): Promise<'stream' | 'journal'> {
    return (await this.o.eventLog()) !== undefined ? 'stream' : 'journal';
  }

  /** Subscribes to one run's events (RUN_NOT_FOUND if there is no such run). */
  async openRun(runId: string): Promise<RunSubscription> {
    let entry = this.timelines.get(runId);
    if (entry === undefined) {
      const view = await this.o.queries.get(runId);
      // Another subscriber may have opened it while this one read the run.
      entry = this.timelines.get(runId);
      if (entry === undefined) {
        const created = { timeline: new RunTimeline(runId), users: 0, stop: new AbortController() };
        entry = created;
        this.timelines.set(runId, created);
        const { workflow, status } = view.snapshot;
        void this.fill(created.timeline, workflow, isFinal(status), created.stop.signal).catch((e: unknown) => {
          this.log.error('reading a run\'s events failed', { run: runId, err: e });
          created.timeline.end({ reason: 'error', message: e instanceof CaravanError ? e.message : 'reading the run\'s events failed' });
        });
      }
    }
    const e = entry;
    e.users++;
    let released = false;
    return {
      timeline: e.timeline,
      release: () => {
        if (released) return;
        released = true;
        if (--e.users > 0) return;
        e.stop.abort();
        if (this.timelines.get(runId) === e) this.timelines.delete(runId);
      },
    };
  }

  /**
   * Every run's events (of one workflow, if given), as they come, in batches; never ends
   * by itself. On NATS from stream sequence `after` (default: new events only); in memory
   * from now, without ids. A subscriber that lets more than maxQueued events wait is ended
   * with SUBSCRIBER_TOO_SLOW.
   */
  async *all(filter: { workflow?: string; after?: number }, signal: AbortSignal): AsyncGenerator<FedEvent[], void, void> {
    const eventLog = await this.o.eventLog();
    if (eventLog !== undefined) {
      const pattern = filter.workflow !== undefined ? `caravan.ev.${subjectToken(filter.workflow)}.>` : 'caravan.ev.>';
      const reading = await eventLog.read(pattern, filter.after ?? (await eventLog.lastSeq()), signal);
      for await (const m of reading.events) yield [{ id: m.seq, event: m.event }];
      return;
    }
    yield* this.allFromJournals(filter.workflow, signal);
  }

  private async fill(timeline: RunTimeline, workflow: string, wasFinal: boolean, signal: AbortSignal): Promise<void> {
    const eventLog = await this.o.eventLog();
    if (eventLog !== undefined) return this.fillFromStream(eventLog, timeline, workflow, wasFinal, signal);
    const end = await this.followRecord(timeline.runId, 0, (events, first) => timeline.append(events.map((event, i) => ({ id: first + i, event }))), signal);
    if (end !== undefined) timeline.end(end);
  }

  /** One ordered consumer per watched run, from the first of its events the stream keeps. */
  private async fillFromStream(eventLog: EventLog, timeline: RunTimeline, workflow: string, wasFinal: boolean, signal: AbortSignal): Promise<void> {
    const reading = await eventLog.read(runSubjects(workflow, timeline.runId), 0, signal);
    // A run that ended before: what the stream kept of it, then the end (its final event may have aged out).
    if (wasFinal && reading.pending === 0) return timeline.end({ reason: 'not-live' });
    let read = 0;
    for await (const m of reading.events) {
      timeline.append([{ id: m.seq, event: m.event }]);
      const status = finalStatus(m.event);
      if (status !== undefined) return timeline.end({ reason: 'run-ended', status });
      if (wasFinal && ++read >= reading.pending) return timeline.end({ reason: 'not-live' });
    }
  }

  /**
   * Follows a run's recorded events from index `seen` (0: all): its journal while it is
   * live here, then the audit branch once the journal is gone. Returns how it ended;
   * undefined when aborted. Liveness is asked before each read, so the last read comes
   * after the run stopped and nothing recorded is missed.
   */
  private async followRecord(runId: string, seen: number | 'end', deliver: (events: RunEvent[], first: number) => void, signal: AbortSignal): Promise<{ reason: 'run-ended'; status: 'succeeded' | 'failed' | 'cancelled' } | { reason: 'not-live' } | undefined> {
    const tail = new JournalTail(this.o.live.journalPath(runId));
    let count = 0;
    let skip = seen;
    const take = (events: readonly RunEvent[], restarted: boolean): 'succeeded' | 'failed' | 'cancelled' | undefined => {
      if (restarted) count = 0;
      const fresh: RunEvent[] = [];
      let first = 0;
      for (const e of events) {
        count++;
        if (skip === 'end' || count <= skip) continue;
        if (fresh.length === 0) first = count;
        fresh.push(e);
        const status = finalStatus(e);
        if (status !== undefined) {
          deliver(fresh, first);
          return status;
        }
      }
      if (skip !== 'end') skip = Math.max(skip, count);
      if (fresh.length > 0) deliver(fresh, first);
      return undefined;
    };
    let read = false;
    while (!signal.aborted) {
      const live = (await this.o.live.get(runId)) !== undefined;
      const got = await tail.read();
      if (got === undefined) {
        if (read || !live) {
          // The journal is gone (written to Git and removed), or there never was one here.
          const stored = await this.o.audit.readRun(runId);
          if (skip === 'end') skip = count;
          const status = take(stored?.events.slice(count) ?? [], false);
          return status !== undefined ? { reason: 'run-ended', status } : { reason: 'not-live' };
        }
      } else {
        read = true;
        const status = take(got.events, got.restarted);
        if (status !== undefined) return { reason: 'run-ended', status };
        if (got.more) continue;
        if (skip === 'end') skip = count;
        if (!live) return { reason: 'not-live' };
      }
      await pause(this.o.pollMs ?? 50, signal);
    }
    return undefined;
  }

  /** Every live run's journal followed, new runs found by looking at the live runs each poll. */
  private async *allFromJournals(workflow: string | undefined, signal: AbortSignal): AsyncGenerator<FedEvent[], void, void> {
    const max = this.o.maxQueued ?? 10_000;
    let queue: FedEvent[] = [];
    let wake: (() => void) | undefined;
    let overflow = false;
    const followed = new Set<string>();
    const inner = new AbortController();
    const stopInner = (): void => inner.abort();
    signal.addEventListener('abort', stopInner, { once: true });
    let firstLook = true;
    const look = async (): Promise<void> => {
      for (const run of await this.o.live.list()) {
        if (followed.has(run.runId) || (workflow !== undefined && run.workflow !== workflow)) continue;
        followed.add(run.runId);
        // Runs live when the subscription began: only what they record from now on.
        const from = firstLook ? 'end' as const : 0;
        void this.followRecord(run.runId, from, (events) => {
          for (const event of events) queue.push({ id: undefined, event });
          if (queue.length > max) {
            overflow = true;
            inner.abort();
          }
          wake?.();
        }, inner.signal).catch((e: unknown) => this.log.warn('following a run\'s journal failed', { run: run.runId, err: e }))
          .finally(() => setTimeout(() => followed.delete(run.runId), 60_000).unref());
      }
      firstLook = false;
    };
    try {
      while (!inner.signal.aborted) {
        await look();
        if (queue.length > 0) {
          const batch = queue;
          queue = [];
          yield batch;
          continue;
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, this.o.pollMs ?? 50);
          wake = done;
          inner.signal.addEventListener('abort', done, { once: true });
          function done(): void {
            clearTimeout(timer);
            inner.signal.removeEventListener('abort', done);
            resolve();
          }
        });
        wake = undefined;
      }
      if (overflow) throw new CaravanError('SUBSCRIBER_TOO_SLOW', `more than ${max} events waited for this subscriber`, { data: { max } });
    } finally {
      signal.removeEventListener('abort', stopInner);
      inner.abort();
    }
  }
}

/** Waits `ms`, or less if `signal` aborts. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}
