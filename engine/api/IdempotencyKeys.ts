import { createHash } from 'node:crypto';
import type { KeyValue } from '../run/Registry.js';
import { ApiError } from './ApiError.js';

export interface IdempotencyOptions {
  /** How long a key holds its run (default 24 h, as Stripe's). */
  ttlMs?: number;
  /** Keys kept at most; past it the oldest go first (default 10,000). */
  max?: number;
  now?: () => number;
}

interface Entry {
  /** Absent while the run is being started. */
  runId?: string;
  workflow: string;
  /** SHA-256 of the params as sent: the same key with other params is a mistake, not a retry. */
  params: string;
  at: number;
}

const PREFIX = 'caravan/api/idempotency/';

/**
 * Idempotency keys of POST /workflows/{name}/runs, durable in the controller's key-value
 * store (Consul KV when there is a registry, so a new leader honours the old leader's keys;
 * else files under .git/caravan/kv). A key is scoped to the caller and the workflow, held
 * with check-and-set while its run starts, and forgotten after the TTL.
 */
export class IdempotencyKeys {
  private readonly ttlMs: number;
  private readonly max: number;
  private readonly now: () => number;
  private writes = 0;

  constructor(private readonly kv: KeyValue, options: IdempotencyOptions = {}) {
    this.ttlMs = options.ttlMs ?? 24 * 3600_000;
    this.max = options.max ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  /**
   * Runs `start` once per (caller, workflow, key): the first request starts the run and
   * records it; a repeat gets the recorded run id and `created: false`.
   */
  async once(scope: { caller: string; workflow: string; key: string; params: unknown }, start: () => Promise<string>): Promise<{ runId: string; created: boolean }> {
    const id = PREFIX + createHash('sha256').update(`${scope.caller}\0${scope.workflow}\0${scope.key}`).digest('hex');
    const params = createHash('sha256').update(JSON.stringify(scope.params ?? {})).digest('hex');
    const existing = await this.kv.getKey(id);
    const entry = existing !== undefined ? parse(existing.value) : undefined;
    const live = entry !== undefined && this.now() - entry.at < this.ttlMs ? entry : undefined;
    if (live !== undefined) {
      if (live.params !== params) throw new ApiError(409, 'IDEMPOTENCY_KEY_REUSED', `idempotency key '${scope.key}' was used for a run of ${scope.workflow} with other params; use a new key`, { idempotencyKey: scope.key });
      if (live.runId === undefined) throw new ApiError(409, 'IDEMPOTENCY_KEY_IN_USE', `a run with idempotency key '${scope.key}' is being started; ask again in a moment`, { idempotencyKey: scope.key });
      return { runId: live.runId, created: false };
    }
    const claim: Entry = { workflow: scope.workflow, params, at: this.now() };
    // Check-and-set on the index read above: of two requests racing with one key, one wins.
    if (!(await this.kv.putKey(id, JSON.stringify(claim), { cas: existing?.index ?? 0 }))) {
      throw new ApiError(409, 'IDEMPOTENCY_KEY_IN_USE', `a run with idempotency key '${scope.key}' is being started; ask again in a moment`, { idempotencyKey: scope.key });
    }
    let runId: string;
    try {
      runId = await start();
    } catch (e) {
      // Not started: the key is free again, so the caller can fix the request and retry.
      await this.kv.deleteKey(id).catch(() => undefined);
      throw e;
    }
    await this.kv.putKey(id, JSON.stringify({ ...claim, runId }));
    if (++this.writes % 100 === 1) await this.prune();
    return { runId, created: true };
  }

  /** Drops expired keys, then the oldest past the bound. */
  async prune(): Promise<void> {
    const keys = await this.kv.listKeys(PREFIX);
    const dated: Array<{ key: string; at: number }> = [];
    for (const key of keys) {
      const v = await this.kv.getKey(key);
      const e = v !== undefined ? parse(v.value) : undefined;
      if (e === undefined || this.now() - e.at >= this.ttlMs) await this.kv.deleteKey(key);
      else dated.push({ key, at: e.at });
    }
    dated.sort((a, b) => a.at - b.at);
    for (const d of dated.slice(0, Math.max(0, dated.length - this.max))) await this.kv.deleteKey(d.key);
  }
}

function parse(text: string): Entry | undefined {
  try {
    const e = JSON.parse(text) as Partial<Entry>;
    return typeof e.at === 'number' && typeof e.params === 'string' && typeof e.workflow === 'string' ? (e as Entry) : undefined;
  } catch {
    // Not ours or damaged: treated as absent, and overwritten.
    return undefined;
  }
}
