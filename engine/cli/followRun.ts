import { CaravanError } from '../errors/CaravanError.js';
import type { ApiClient, RunDetail } from './ApiClient.js';

export interface FollowRunOptions {
  /** Stops following (the generator returns); the run goes on in the controller. */
  signal?: AbortSignal;
  /** The first wait between reads, and again after each change (default 200 ms). */
  minIntervalMs?: number;
  /** The longest wait while nothing changes (default 2 s). */
  maxIntervalMs?: number;
  /** Failed reads in a row before giving up (default 8, about half a minute at the longest wait). */
  maxFailures?: number;
}

const OVER: ReadonlySet<string> = new Set(['succeeded', 'failed', 'cancelled']);

/** Whether a run's detail is its last: over, and no longer held by the controller. */
export function isOver(d: RunDetail): boolean {
  return OVER.has(d.run.status) && !d.live;
}

/**
 * A run in the controller as it goes on: its detail at once, then each time it changes,
 * until it is over. This is the one place that knows how a remote run is followed: it reads
 * GET /api/v1/runs/{id} with a wait that doubles while nothing changes (bounded), so a long
 * run costs a read every few seconds and a short one is seen at once. The SSE route
 * (/api/v1/runs/{id}/events) can take its place behind this signature.
 *
 * A controller that restarts or a network that drops for a moment is waited out (reads
 * failing `maxFailures` times in a row end the follow with the last error).
 */
export async function* followRun(client: ApiClient, runId: string, options: FollowRunOptions = {}): AsyncGenerator<RunDetail, void, void> {
  const min = options.minIntervalMs ?? 200;
  const max = Math.max(min, options.maxIntervalMs ?? 2_000);
  const maxFailures = options.maxFailures ?? 8;
  let wait = min;
  let failures = 0;
  let last: string | undefined;
  for (;;) {
    if (aborted(options.signal)) return;
    let detail: RunDetail | undefined;
    try {
      detail = await client.getRun(runId, options.signal);
      failures = 0;
    } catch (e) {
      if (aborted(options.signal)) return;
      // Only a controller out of reach is waited out; a refusal (401, 404) will not change.
      const transient = e instanceof CaravanError && (e.code === 'CONTROLLER_UNREACHABLE' || e.code === 'CONTROLLER_RATE_LIMITED' || (e.code === 'CONTROLLER_API' && e.data['retryable'] === true));
      if (!transient || ++failures >= maxFailures) throw e;
      wait = max;
    }
    if (detail !== undefined) {
      // The event count moves with every change of state; status and live cover the record being written.
      const mark = `${detail.run.events}/${detail.run.status}/${String(detail.live)}`;
      if (mark !== last) {
        last = mark;
        wait = min;
        yield detail;
      } else {
        wait = Math.min(max, wait * 2);
      }
      if (isOver(detail)) return;
    }
    await sleep(wait, options.signal);
  }
}

/** A function, so the compiler does not narrow `aborted` across the awaits in between. */
function aborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    // An abort that came while the caller had the last detail: no event will come for it.
    if (aborted(signal)) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
