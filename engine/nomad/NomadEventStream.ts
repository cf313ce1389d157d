import { CaravanError } from '../errors/CaravanError.js';
import type { NomadClient } from './NomadClient.js';

/** One event from Nomad's event stream (`Payload` holds e.g. `{ Allocation: {...} }`). */
export interface NomadEvent {
  Topic: string;
  Type: string;
  Key: string;
  Namespace?: string;
  Index: number;
  FilterKeys?: string[] | null;
  Payload: Record<string, unknown>;
}

export interface NomadEventStreamOptions {
  /** Topic filters, e.g. `Allocation:*` or `Job:<id>`. */
  topics: string[];
  /** Start after this index (0: from what the server still buffers). */
  afterIndex?: number;
  onEvent: (e: NomadEvent) => void;
  /**
   * Called after every (re)connection. Nomad keeps only a short buffer of events, so a
   * resumed stream may have a gap: a caller that must not miss a change re-reads its state
   * here.
   */
  onConnected?: (reconnect: boolean) => void;
  onError?: (e: Error) => void;
  /** A connection that sends nothing (not even the 10 s heartbeat) this long is reopened. */
  idleMs?: number;
}

/**
 * Reads `GET /v1/event/stream` (newline-delimited JSON, `{}` heartbeats) and reconnects with
 * backoff after any error, resuming after the last index it delivered, so every batch
 * reaches `onEvent` once.
 */
export class NomadEventStream {
  private lastIndex: number;
  private readonly abort = new AbortController();
  private readonly done: Promise<void>;
  private connections = 0;

  constructor(private readonly nomad: NomadClient, private readonly options: NomadEventStreamOptions) {
    this.lastIndex = options.afterIndex ?? 0;
    this.done = this.loop();
  }

  /** The index of the last batch delivered. */
  get index(): number {
    return this.lastIndex;
  }

  private async loop(): Promise<void> {
    for (let failures = 0; !this.abort.signal.aborted; ) {
      const idle = new AbortController();
      const signal = AbortSignal.any([this.abort.signal, idle.signal]);
      let timer: NodeJS.Timeout | undefined;
      const arm = (): void => {
        if (timer !== undefined) clearTimeout(timer);
        timer = setTimeout(() => idle.abort(), this.options.idleMs ?? 35_000);
      };
      try {
        arm();
        const body = await this.nomad.openEventStream(this.options.topics, this.lastIndex === 0 ? 0 : this.lastIndex + 1, signal);
        this.options.onConnected?.(this.connections++ > 0);
        failures = 0;
        let pending = '';
        for await (const chunk of body) {
          arm();
          pending += chunk.toString('utf8');
          let nl: number;
          while ((nl = pending.indexOf('\n')) >= 0) {
            const line = pending.slice(0, nl).trim();
            pending = pending.slice(nl + 1);
            if (line === '' || line === '{}') continue;
            this.deliver(line);
          }
        }
      } catch (e) {
        if (this.abort.signal.aborted) break;
        if (!idle.signal.aborted) this.options.onError?.(e as Error);
      } finally {
        if (timer !== undefined) clearTimeout(timer);
      }
      if (this.abort.signal.aborted) break;
      await new Promise((r) => setTimeout(r, Math.min(5000, 100 * 2 ** failures++)));
    }
  }

  private deliver(line: string): void {
    let batch: { Index?: number; Events?: NomadEvent[] };
    try {
      batch = JSON.parse(line) as typeof batch;
    } catch (e) {
      this.options.onError?.(new CaravanError('NOMAD_API', `unreadable line in Nomad's event stream: ${(e as Error).message}`, { cause: e, data: { line: line.slice(0, 200) } }));
      return;
    }
    const index = batch.Index ?? 0;
    // A reconnect may replay the batch it resumed at; indexes only grow.
    if (index !== 0 && index <= this.lastIndex) return;
    for (const e of batch.Events ?? []) this.options.onEvent(e);
    if (index > this.lastIndex) this.lastIndex = index;
  }

  async close(): Promise<void> {
    this.abort.abort();
    await this.done;
  }
}
