import { describe, expect, it } from 'vitest';
import type { ApiClient, RunDetail } from '../../engine/cli/ApiClient.js';
import { followRun } from '../../engine/cli/followRun.js';
import { changes } from '../../engine/cli/SnapshotProgress.js';
import { CaravanError } from '../../engine/errors/CaravanError.js';
import type { RunSnapshot } from '../../engine/run/RunSnapshot.js';

/**
 * How a remote run is followed and shown: followRun against a client whose answers are
 * scripted (the HTTP side is tested end to end in tests/e2e/cliRemote.test.ts), and the
 * progress lines made from two snapshots.
 */

function snap(over: Partial<RunSnapshot> = {}): RunSnapshot {
  return { runId: 'r1', workflow: 'wf', status: 'running', trigger: 'api:ops', params: {}, startedAt: '2026-01-01T00:00:00.000Z', tasks: {}, events: 1, ...over };
}

function detail(run: RunSnapshot, live = run.status === 'running' || run.status === 'paused'): RunDetail {
  return { run, live, from: 'journal', links: { self: '/api/v1/runs/r1', logs: '/api/v1/runs/r1/logs' } };
}

/** A client answering getRun from a script: a detail, or an error to throw. */
function scripted(answers: Array<RunDetail | Error>): ApiClient & { reads: number } {
  const client = {
    where: 'http://controller.test',
    reads: 0,
    async getRun(): Promise<RunDetail> {
      const a = answers[Math.min(client.reads++, answers.length - 1)]!;
      if (a instanceof Error) throw a;
      return a;
    },
    startRun: () => Promise.reject(new Error('not used')),
    listRuns: () => Promise.reject(new Error('not used')),
    logs: () => Promise.reject(new Error('not used')),
    followLogs: () => { throw new Error('not used'); },
    act: () => Promise.reject(new Error('not used')),
    retryRun: () => Promise.reject(new Error('not used')),
  };
  return client;
}

async function all(it: AsyncIterable<RunDetail>): Promise<RunDetail[]> {
  const out: RunDetail[] = [];
  for await (const d of it) out.push(d);
  return out;
}

const fast = { minIntervalMs: 1, maxIntervalMs: 2 };

describe('followRun', () => {
  it('yields each change once and ends when the run is over and no longer live', async () => {
    const a = detail(snap({ events: 1 }));
    const b = detail(snap({ events: 3 }));
    const ending = detail(snap({ events: 5, status: 'succeeded' }), true);
    const over = detail(snap({ events: 5, status: 'succeeded' }), false);
    const client = scripted([a, a, a, b, b, ending, over, detail(snap({ events: 99 }))]);
    const seen = await all(followRun(client, 'r1', fast));
    expect(seen.map((d) => `${d.run.events}/${d.run.status}/${d.live}`)).toEqual(['1/running/true', '3/running/true', '5/succeeded/true', '5/succeeded/false']);
    expect(client.reads).toBe(7);
  });

  it('waits out a controller out of reach, up to maxFailures reads in a row', async () => {
    const down = new CaravanError('CONTROLLER_UNREACHABLE', 'down', { data: { code: 'ECONNREFUSED' } });
    const client = scripted([detail(snap()), down, down, detail(snap({ events: 2, status: 'failed' }), false)]);
    expect((await all(followRun(client, 'r1', { ...fast, maxFailures: 3 }))).map((d) => d.run.status)).toEqual(['running', 'failed']);
    const never = scripted([detail(snap()), down]);
    await expect(all(followRun(never, 'r1', { ...fast, maxFailures: 3 }))).rejects.toThrow('down');
    expect(never.reads).toBe(4);
  });

  it('a refusal ends it at once; an abort ends it quietly', async () => {
    const client = scripted([new CaravanError('RUN_NOT_FOUND', 'no run r1')]);
    await expect(all(followRun(client, 'r1', fast))).rejects.toThrow('no run r1');
    expect(client.reads).toBe(1);
    const stop = new AbortController();
    const seen: RunDetail[] = [];
    for await (const d of followRun(scripted([detail(snap())]), 'r1', { minIntervalMs: 60_000, signal: stop.signal })) {
      seen.push(d);
      stop.abort();
    }
    expect(seen).toHaveLength(1);
  });
});

describe('progress lines from snapshots', () => {
  it('names the run, each task step and the end in the words of the in-process lines', () => {
    const first = snap({ tasks: { build: { status: 'running', attempts: 1 }, gate: { status: 'pending' } } });
    expect(changes(undefined, first)).toEqual(['run r1 of wf started', 'build started']);
    const second = snap({ tasks: { build: { status: 'succeeded', attempts: 1, durationMs: 1500 }, gate: { status: 'waiting', attempts: 1 } } });
    expect(changes(first, second)).toEqual(['build succeeded in 1.5s', 'gate waits for approval (caravan approve r1 gate)']);
    const third = snap({ status: 'failed', failureReason: 'gate rejected', durationMs: 61_000, tasks: { build: { status: 'succeeded', attempts: 1 }, gate: { status: 'failed', attempts: 1, error: 'rejected by bob' } } });
    expect(changes(second, third)).toEqual(['gate failed (attempt 1): rejected by bob', 'run failed: gate rejected']);
    expect(changes(third, third)).toEqual([]);
  });

  it('fan-out items, retries, pauses and a cancel', () => {
    const a = snap({ tasks: { each: { status: 'running', instances: [{ key: 'each[0]', status: 'running', attempts: 1 }, { key: 'each[1]', status: 'queued', attempts: 0 }] } } });
    expect(changes(snap({ tasks: { each: { status: 'pending' } } }), a)).toEqual(['each fans out to 2 items', 'each[0] started']);
    const b = snap({ status: 'paused', tasks: { each: { status: 'running', instances: [{ key: 'each[0]', status: 'retrying', attempts: 1, error: 'exit 1' }, { key: 'each[1]', status: 'queued', attempts: 0, pendingReason: 'no node has 4 GB free' }] } } });
    expect(changes(a, b)).toEqual(['each[0] failed (attempt 1): exit 1', 'each[0] will retry (attempt 2)', 'each[1] waits: no node has 4 GB free', 'run paused']);
    const c = snap({ status: 'cancelled', cancelReason: 'not today', tasks: { each: { status: 'cancelled', reason: 'run cancelled', instances: [{ key: 'each[0]', status: 'running', attempts: 2 }, { key: 'each[1]', status: 'cancelled', attempts: 0 }] } } });
    expect(changes(b, c)).toEqual(['each[0] started (attempt 2)', 'each[1] cancelled', 'each cancelled: run cancelled', 'run cancelled: not today']);
  });
});
