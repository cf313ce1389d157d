import { request, type ClientRequest, type IncomingMessage } from 'node:http';

/** One message of an event stream as a client parses it. */
export interface SseMessage {
  id: string | undefined;
  event: string;
  data: string;
}

/**
 * A real Server-Sent Events client over a socket (fastify's inject() cannot stream): the
 * response's status and headers, each message and comment as they arrive, and whether the
 * server ended the stream.
 */
export class SseClient {
  readonly messages: SseMessage[] = [];
  readonly comments: string[] = [];
  status = 0;
  headers: IncomingMessage['headers'] = {};
  /** The body of a response that was not a stream (an error). */
  body = '';
  ended = false;
  private buffer = '';
  private readonly req: ClientRequest;
  readonly done: Promise<void>;
  readonly opened: Promise<void>;

  constructor(url: string, headers: Record<string, string> = {}) {
    let opened!: () => void;
    this.opened = new Promise((r) => { opened = r; });
    this.req = request(url, { headers: { accept: 'text/event-stream', ...headers } });
    this.done = new Promise((resolve) => {
      this.req.on('response', (res) => {
        this.status = res.statusCode ?? 0;
        this.headers = res.headers;
        opened();
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          if (this.status !== 200) this.body += chunk;
          else this.parse(chunk);
        });
        res.on('end', () => {
          this.ended = true;
          resolve();
        });
        res.on('close', () => resolve());
        res.on('error', () => resolve());
      });
      this.req.on('error', () => {
        opened();
        resolve();
      });
    });
    this.req.end();
  }

  /** Goes away mid-stream, as a client whose network dropped. */
  close(): void {
    this.req.destroy();
  }

  private parse(chunk: string): void {
    this.buffer += chunk;
    let cut: number;
    while ((cut = this.buffer.indexOf('\n\n')) >= 0) {
      const block = this.buffer.slice(0, cut);
      this.buffer = this.buffer.slice(cut + 2);
      const m: SseMessage = { id: undefined, event: 'message', data: '' };
      let isMessage = false;
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) this.comments.push(line.slice(1).trim());
        else {
          isMessage = true;
          const i = line.indexOf(':');
          const field = i < 0 ? line : line.slice(0, i);
          const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
          if (field === 'id') m.id = value;
          else if (field === 'event') m.event = value;
          else if (field === 'data') m.data = m.data === '' ? value : `${m.data}\n${value}`;
        }
      }
      if (isMessage) this.messages.push(m);
    }
  }
}
