import { DeliverPolicy, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import type { EventLog, EventLogReading, LoggedEvent } from '../run/EventLog.js';
import type { RunEvent } from '../run/RunEvent.js';
import { EVENTS_STREAM } from './JetStreamBus.js';

const DECODER = new TextDecoder();

/** How many messages an ordered consumer buffers ahead of its reader. */
const BATCH = 256;

/**
 * The events stream read by sequence: each reading is an ordered consumer (ephemeral, no
 * acknowledgements, recreated by the client after a gap) with a subject filter, starting at
 * `opt_start_seq = after + 1`. Nothing is left on the server: an ordered consumer is
 * deleted when closed, and expires on its own if the process dies.
 */
export class JetStreamEventLog implements EventLog {
  constructor(private readonly js: JetStreamClient, private readonly jsm: JetStreamManager, private readonly stream = EVENTS_STREAM) {}

  async lastSeq(): Promise<number> {
    return (await this.jsm.streams.info(this.stream)).state.last_seq;
  }

  async read(pattern: string, after: number, signal: AbortSignal): Promise<EventLogReading> {
    const consumer = await this.js.consumers.get(this.stream, {
      filter_subjects: pattern,
      ...(after > 0 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: after + 1 } : { deliver_policy: DeliverPolicy.All }),
    });
    const pending = (await consumer.info(true)).num_pending;
    const messages = await consumer.consume({ max_messages: BATCH });
    const stop = (): void => void messages.close().catch(() => undefined);
    if (signal.aborted) stop();
    else signal.addEventListener('abort', stop, { once: true });
    async function* events(): AsyncGenerator<LoggedEvent, void, void> {
      try {
        for await (const m of messages) {
          // The payload is JetStreamBus's: the event and its origin.
          const { e } = JSON.parse(DECODER.decode(m.data)) as { e: RunEvent };
          yield { seq: m.seq, event: e };
        }
      } finally {
        signal.removeEventListener('abort', stop);
        stop();
      }
    }
    return { pending, events: events() };
  }
}
