import type { ServerResponse } from 'node:http';

/** Limits of one Server-Sent Events response. */
export interface SseLimits {
  /** A comment line this often keeps proxies from closing an idle stream. */
  heartbeatMs: number;
  /** Bytes the socket may hold unsent before the client counts as not reading. */
  maxBufferedBytes: number;
  /** How long a full socket may stay full before the client is dropped. */
  stallMs: number;
}

/** The headers of every event stream (the server's security headers are added to them). */
const HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-store',
  // nginx buffers responses unless told not to; an event held there is an event late.
  'x-accel-buffering': 'no',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  'referrer-policy': 'no-referrer',
};

/** One line of `data:` per event: JSON has no raw newlines, so one line always holds it. */
export function formatEvent(id: number | undefined, type: string, data: unknown): string {
  return `${id !== undefined ? `id: ${id}\n` : ''}event: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
}

/**
 * A Server-Sent Events response written straight to the socket, with a heartbeat and
 * backpressure: send() waits while the socket is full, and a client that reads nothing for
 * stallMs, or lets more than maxBufferedBytes wait, is disconnected (`dropped` says why).
 * Nothing is buffered here beyond what the socket holds.
 */
export class SseStream {
  private readonly abort = new AbortController();
  private heartbeat: NodeJS.Timeout | undefined;
  private droppedFor: string | undefined;

  constructor(private readonly res: ServerResponse, private readonly limits: SseLimits) {
    res.once('close', () => this.close());
  }

  /** Aborted when the client goes away, the stream is dropped, or ended. */
  get signal(): AbortSignal {
    return this.abort.signal;
  }

  /** Why the stream was dropped (a slow client); undefined otherwise. */
  get dropped(): string | undefined {
    return this.droppedFor;
  }

  start(): void {
    this.res.writeHead(200, HEADERS);
    // The client learns the stream is open before the first event (a proxy flushes on it).
    this.res.write(': open\n\n');
    this.heartbeat = setInterval(() => {
      if (!this.abort.signal.aborted && this.res.writableLength === 0) this.res.write(': keep-alive\n\n');
    }, this.limits.heartbeatMs);
    this.heartbeat.unref();
  }

  /** Writes `text`; resolves when the socket can take more (false: the stream is closed). */
  async send(text: string): Promise<boolean> {
    if (this.abort.signal.aborted) return false;
    // Checked before writing: one write may be larger than the limit (a batch of long log
    // lines) for a client that reads well; what must not grow is what is left unread.
    if (this.res.writableLength > this.limits.maxBufferedBytes) {
      this.drop(`more than ${this.limits.maxBufferedBytes} bytes waited for the client to read them`);
      return false;
    }
    if (this.res.write(text)) return true;
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        this.drop(`the client read nothing for ${this.limits.stallMs} ms`);
        settle(false);
      }, this.limits.stallMs);
      const onDrain = (): void => settle(true);
      const onAbort = (): void => settle(false);
      this.res.once('drain', onDrain);
      this.abort.signal.addEventListener('abort', onAbort, { once: true });
      const res = this.res;
      const signal = this.abort.signal;
      function settle(ok: boolean): void {
        clearTimeout(timer);
        res.off('drain', onDrain);
        signal.removeEventListener('abort', onAbort);
        resolve(ok && !signal.aborted);
      }
    });
  }

  /** Ends the response after what was written. */
  end(): void {
    if (this.abort.signal.aborted) return;
    this.close();
    this.res.end();
  }

  private drop(reason: string): void {
    this.droppedFor ??= reason;
    this.close();
    this.res.destroy();
  }

  private close(): void {
    clearInterval(this.heartbeat);
    if (!this.abort.signal.aborted) this.abort.abort();
  }
}
