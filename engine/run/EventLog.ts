import type { RunEvent } from './RunEvent.js';

/** One stored event and its position in the log (the JetStream stream sequence). */
export interface LoggedEvent {
  seq: number;
  event: RunEvent;
}

/** A reading of the log: what was stored when it began, then everything stored after. */
export interface EventLogReading {
  /** How many matching events were stored after `after` when the reading began (0: nothing to replay). */
  readonly pending: number;
  /** The events, oldest first, then new ones as they are stored; ends when the signal aborts. */
  readonly events: AsyncIterable<LoggedEvent>;
}

/**
 * The read side of a bus that stores events in order with a sequence number (NATS
 * JetStream's events stream): what live-event subscribers (the API's SSE routes) read, so
 * that a subscriber that comes back after sequence N gets exactly what came after N. The
 * embedded in-memory bus keeps no such log; runs' journals stand in for it there.
 */
export interface EventLog {
  /**
   * Reads the events on subjects matching `pattern` (`*` one token, `>` the rest) stored
   * after sequence `after` (0: from the first kept). Pulled as the caller iterates: a
   * caller that stops iterating holds no more than one batch in memory.
   */
  read(pattern: string, after: number, signal: AbortSignal): Promise<EventLogReading>;
  /** The sequence of the last event stored (0 when none): where a reading of new events only starts. */
  lastSeq(): Promise<number>;
}
