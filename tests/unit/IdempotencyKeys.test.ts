import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ApiError } from '../../engine/api/ApiError.js';
import { IdempotencyKeys } from '../../engine/api/IdempotencyKeys.js';
import { FileKeyValue } from '../../engine/local/FileKeyValue.js';
import { until } from '../harness/until.js';

/** Idempotency keys on the file key-value store the controller uses without Consul. */

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function store(): Promise<FileKeyValue> {
  const dir = await mkdtemp(join(tmpdir(), 'caravan-idem-'));
  dirs.push(dir);
  return new FileKeyValue(dir);
}

const scope = (key: string, params: unknown = { a: 1 }, caller = 'ops'): { caller: string; workflow: string; key: string; params: unknown } => ({ caller, workflow: 'wf', key, params });

describe('IdempotencyKeys', () => {
  it('starts once per key, survives a new instance on the same store, and expires after the TTL', async () => {
    const kv = await store();
    let now = 1_000_000;
    let n = 0;
    const start = async (): Promise<string> => `run-${++n}`;
    const keys = new IdempotencyKeys(kv, { ttlMs: 60_000, now: () => now });
    expect(await keys.once(scope('k'), start)).toEqual({ runId: 'run-1', created: true });
    expect(await new IdempotencyKeys(kv, { ttlMs: 60_000, now: () => now }).once(scope('k'), start)).toEqual({ runId: 'run-1', created: false });
    expect(await keys.once(scope('k', { a: 1 }, 'other'), start)).toEqual({ runId: 'run-2', created: true });
    now += 60_000;
    expect(await keys.once(scope('k'), start)).toEqual({ runId: 'run-3', created: true });
  });

  it('refuses the same key with other params, frees a key whose run did not start, and lets one of two racing requests start', async () => {
    const kv = await store();
    const keys = new IdempotencyKeys(kv);
    await keys.once(scope('k'), async () => 'run-1');
    const reused = await keys.once(scope('k', { a: 2 }), async () => 'never').catch((e: unknown) => e);
    expect(reused).toBeInstanceOf(ApiError);
    expect((reused as ApiError).code).toBe('IDEMPOTENCY_KEY_REUSED');

    await expect(keys.once(scope('bad'), async () => { throw new Error('params invalid'); })).rejects.toThrow('params invalid');
    expect(await keys.once(scope('bad'), async () => 'run-2')).toEqual({ runId: 'run-2', created: true });

    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let started = 0;
    const slow = async (): Promise<string> => {
      started++;
      await gate;
      return 'run-3';
    };
    const racing = [keys.once(scope('race'), slow).catch((e: unknown) => e), keys.once(scope('race'), slow).catch((e: unknown) => e)];
    // One of them holds the key and is starting its run; the other must have been refused by then.
    await until('one request to start its run', () => started === 1);
    release();
    const results = await Promise.all(racing);
    expect(results.filter((r) => !(r instanceof ApiError))).toEqual([{ runId: 'run-3', created: true }]);
    expect(results.filter((r) => r instanceof ApiError).map((r) => (r as ApiError).code)).toEqual(['IDEMPOTENCY_KEY_IN_USE']);
    expect(started).toBe(1);
  });

  it('keeps at most `max` keys, dropping the oldest', async () => {
    const kv = await store();
    let now = 0;
    const keys = new IdempotencyKeys(kv, { max: 3, now: () => now });
    for (let i = 0; i < 5; i++) {
      now += 1000;
      await keys.once(scope(`k${i}`), async () => `run-${i}`);
    }
    await keys.prune();
    expect(await kv.listKeys('caravan/api/idempotency/')).toHaveLength(3);
    // The oldest is forgotten: its key starts a new run; the newest is still held.
    expect((await keys.once(scope('k0'), async () => 'again')).created).toBe(true);
    expect((await keys.once(scope('k4'), async () => 'again')).created).toBe(false);
  });
});
