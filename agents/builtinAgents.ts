import { setLongTimeout } from '../engine/run/longTimeout.js';
import { request } from 'undici';
import type { AgentAction, AgentIo, AgentResult, AgentType } from './AgentType.js';
import { shellAgent } from './shellAgent.js';

const MAX_BODY = 64 * 1024;

/** Does nothing and succeeds; `with.outputs` become its outputs (for tests and benchmarks). */
export const noopAgent: AgentType = {
  name: 'noop',
  run(action: AgentAction): Promise<AgentResult> {
    const given = (action.with?.['outputs'] ?? {}) as Record<string, unknown>;
    const outputs: Record<string, string> = {};
    for (const name of action.outputs) outputs[name] = typeof given[name] === 'string' ? (given[name] as string) : JSON.stringify(given[name] ?? '');
    return Promise.resolve({ ok: true, outputs });
  },
};

/** Sleeps for `sleep`, or until cancelled. */
export const sleepAgent: AgentType = {
  name: 'sleep',
  run(action: AgentAction, io: AgentIo): Promise<AgentResult> {
    if (io.signal.aborted) return Promise.resolve({ ok: false, error: 'cancelled', retryable: false });
    return new Promise((done) => {
      const ms = action.sleepMs ?? 0;
      const timeout = action.timeoutMs !== undefined && action.timeoutMs < ms;
      const t = setLongTimeout(() => {
        io.signal.removeEventListener('abort', onAbort);
        done(timeout ? { ok: false, error: `timed out after ${action.timeoutMs} ms`, retryable: true, failure: 'timeout' } : { ok: true, outputs: {} });
      }, timeout ? action.timeoutMs! : ms);
      const onAbort = (): void => {
        t.clear();
        done({ ok: false, error: 'cancelled', retryable: false });
      };
      io.signal.addEventListener('abort', onAbort, { once: true });
    });
  },
};

/** One HTTP request; a 2xx answer is success. Outputs: status, body, and a JSON body's top-level keys. */
export const httpAgent: AgentType = {
  name: 'http',
  async run(action: AgentAction, io: AgentIo): Promise<AgentResult> {
    const h = action.http;
    if (h === undefined) return { ok: false, error: 'the http agent needs http.url', retryable: false };
    let url: URL;
    try {
      url = new URL(h.url);
    } catch {
      // URL's TypeError says no more than this failure does.
      return { ok: false, error: `'${h.url}' is not an absolute URL`, retryable: false };
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return { ok: false, error: `unsupported URL scheme ${url.protocol}`, retryable: false };
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(h.headers ?? {})) if (typeof v === 'string') headers[k] = v;
    let body: string | undefined;
    if (h.body !== undefined) {
      body = typeof h.body === 'string' ? h.body : JSON.stringify(h.body);
      if (typeof h.body !== 'string' && headers['content-type'] === undefined && headers['Content-Type'] === undefined) headers['content-type'] = 'application/json';
    }
    const timeout = action.timeoutMs !== undefined ? AbortSignal.timeout(action.timeoutMs) : undefined;
    const signals = timeout !== undefined ? [io.signal, timeout] : [io.signal];
    try {
      const res = await request(url, { method: h.method ?? 'GET', headers, ...(body !== undefined ? { body } : {}), signal: AbortSignal.any(signals) });
      const text = (await res.body.text()).slice(0, MAX_BODY);
      io.log('stdout', `${h.method ?? 'GET'} ${url.origin}${url.pathname} -> ${res.statusCode}`);
      if (res.statusCode < 200 || res.statusCode > 299) {
        return { ok: false, error: `HTTP ${res.statusCode} from ${shownUrl(url)}`, retryable: res.statusCode >= 500 || res.statusCode === 429, failure: 'exit' };
      }
      const available: Record<string, string> = { status: String(res.statusCode), body: text };
      try {
        const json: unknown = JSON.parse(text);
        if (json !== null && typeof json === 'object' && !Array.isArray(json)) {
          for (const [k, v] of Object.entries(json)) available[k] ??= typeof v === 'string' ? v : JSON.stringify(v);
        }
      } catch {
        // Not JSON: status and body only.
      }
      const outputs: Record<string, string> = {};
      for (const name of action.outputs) {
        if (available[name] === undefined) return { ok: false, error: `declared output '${name}' is not in the response`, retryable: false };
        outputs[name] = available[name];
      }
      return { ok: true, outputs };
    } catch (e) {
      if (io.signal.aborted) return { ok: false, error: 'cancelled', retryable: false };
      // Whether the timeout fired is read from its signal, not from the error undici rejected with.
      const msg = timeout?.aborted === true ? `timed out after ${action.timeoutMs} ms` : (e as Error).message;
      return { ok: false, error: `request to ${shownUrl(url)} failed: ${msg}`, retryable: true, failure: timeout?.aborted === true ? 'timeout' : 'infrastructure' };
    }
  },
};

/**
 * A request's URL as a failure names it: all of it (which path and query failed matters when
 * one host serves many hooks), without the user name and password a URL may carry. Secret
 * values elsewhere in it are masked in the failure message like anywhere else.
 */
function shownUrl(url: URL): string {
  const shown = new URL(url.href);
  shown.username = '';
  shown.password = '';
  shown.hash = '';
  return shown.href;
}

/** The agent types known to this process; plugins add theirs with register(). */
export class AgentRegistry {
  private readonly types = new Map<string, AgentType>();

  constructor(types: AgentType[] = [shellAgent, httpAgent, noopAgent, sleepAgent]) {
    for (const t of types) this.register(t);
  }

  register(t: AgentType): void {
    this.types.set(t.name, t);
  }

  get(name: string): AgentType | undefined {
    return this.types.get(name);
  }

  names(): string[] {
    return [...this.types.keys()].sort();
  }
}
