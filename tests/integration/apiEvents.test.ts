import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ApiTokens } from '../../engine/api/ApiTokens.js';
import type { EventStreamOptions } from '../../engine/api/eventRoutes.js';
import { startController, type RunningController } from '../../engine/api/startController.js';
import type { RunEvent } from '../../engine/run/RunEvent.js';
import { MemoryLogger } from '../../engine/run/Logger.js';
import { withEnv } from '../harness/cli.js';
import { tempRepo, workflow } from '../harness/gitRepo.js';
import { NatsServer, natsServerBinaries } from '../harness/natsServer.js';
import { SseClient, type SseMessage } from '../harness/sseClient.js';
import { until } from '../harness/until.js';

/**
 * Live events over Server-Sent Events from a real controller listening on a socket, on a
 * real Git repository, read by a real HTTP client: on the in-memory bus (ids are journal
 * indexes) and on a real nats-server (ids are stream sequences).
 */

const OPERATOR = 'operator-token-0123456789abcdef';
const steps = workflow('steps', '  tasks:\n' + ['a', 'b', 'c', 'd', 'e'].map((t, i) => `    - { name: ${t}, ${i > 0 ? `needs: [${'abcde'[i - 1]}], ` : ''}run: "sleep 0.3; echo ${t}" }\n`).join(''));
const fan = workflow('fan', '  tasks:\n' + [1, 2, 3, 4, 5, 6].map((i) => `    - { name: t${i}, run: "echo t${i}" }\n`).join('') + '    - { name: last, needs: [t1, t2, t3, t4, t5, t6], run: "echo last" }\n');
const slow = workflow('slow', '  tasks:\n    - { name: wait, run: "sleep 30" }\n');
// Three tasks of 1,000 log lines of 4,000 characters each (the runner keeps megabytes of them).
const chatty = workflow('chatty', '  tasks:\n' + [1, 2, 3].map((i) => `    - name: talk${i}\n      run: |\n        L=$(head -c 4000 /dev/zero | tr "\\\\0" x)\n        for i in $(seq 1000); do echo "$L"; done\n`).join(''));

interface Opened {
  ctl: RunningController;
  url: string;
  logger: MemoryLogger;
  start(name: string): Promise<string>;
  stream(path: string, headers?: Record<string, string>): SseClient;
  recorded(runId: string): Promise<RunEvent[]>;
}

/** Sends a request for an event stream with a 4 KB receive buffer, then never reads. */
const STUCK_CLIENT = [
  'import socket, sys, time',
  's = socket.socket()',
  's.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)',
  "s.connect(('127.0.0.1', int(sys.argv[1])))",
  "s.sendall(('GET %s HTTP/1.1\\r\\nHost: x\\r\\nAccept: text/event-stream\\r\\n\\r\\n' % sys.argv[2]).encode())",
  'time.sleep(300)',
].join('\n');
const hasPython = spawnSync('python3', ['--version']).status === 0;
const stuckClients: ChildProcess[] = [];

const running: RunningController[] = [];
const clients: SseClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const p of stuckClients.splice(0)) p.kill();
  for (const r of running.splice(0)) await r.stop();
});

async function open(bus: 'memory' | 'nats', events: Partial<EventStreamOptions> = {}, natsUrl?: string): Promise<Opened> {
  const dir = await tempRepo({ 'steps.yaml': steps, 'fan.yaml': fan, 'slow.yaml': slow, 'chatty.yaml': chatty });
  const logger = new MemoryLogger();
  const tokens = new ApiTokens([{ name: 'ops', token: OPERATOR, roles: ['operator'] }]);
  const ctl = await withEnv({ NATS_URL: natsUrl }, () => startController({
    repoDir: dir, intervalMs: 3_600_000, logger, bus, listen: { host: '127.0.0.1', port: 0 },
    api: { tokens, openReads: true, events: { heartbeatMs: 200, ...events } },
  }));
  running.push(ctl);
  const url = ctl.server!.url;
  await until('the first sync', () => ctl.controller.status().lastSync !== undefined);
  return {
    ctl, url, logger,
    async start(name) {
      const res = await fetch(`${url}/api/v1/workflows/${name}/runs`, { method: 'POST', headers: { authorization: `Bearer ${OPERATOR}`, 'content-type': 'application/json' }, body: '{}' });
      expect(res.status).toBe(201);
      return ((await res.json()) as { runId: string }).runId;
    },
    stream(path, headers = {}) {
      const c = new SseClient(`${url}${path}`, headers);
      clients.push(c);
      return c;
    },
    async recorded(runId) {
      await until(`run ${runId} recorded as ended`, async () => ['succeeded', 'failed', 'cancelled'].includes((await ctl.app.audit.readRun(runId))?.run.status ?? ''));
      return (await ctl.app.audit.readRun(runId))!.events;
    },
  };
}

/** The run events of a stream (its `end` left out), parsed. */
function eventsOf(messages: readonly SseMessage[]): RunEvent[] {
  return messages.filter((m) => m.event !== 'end').map((m) => JSON.parse(m.data) as RunEvent);
}

/** Up to and including the run's final event: what a run's stream carries. */
function throughEnd(events: readonly RunEvent[]): RunEvent[] {
  const i = events.findIndex((e) => e.type === 'run.succeeded' || e.type === 'run.failed' || e.type === 'run.cancelled');
  return events.slice(0, i + 1);
}

/** Disconnects mid-run, waits until the run has moved on, and reconnects with Last-Event-ID. */
async function resumeAcrossDisconnect(o: Opened): Promise<{ runId: string; first: SseMessage[]; second: SseMessage[] }> {
  const runId = await o.start('steps');
  const one = o.stream(`/api/v1/runs/${runId}/events`);
  await until('a few events on the first connection', () => one.messages.length >= 4);
  one.close();
  await one.done;
  const first = [...one.messages];
  // Events come while nobody listens: the ones the reconnect must deliver.
  await until('the run to move on', async () => (await o.ctl.app.queries.get(runId)).snapshot.tasks['c']?.status === 'succeeded');
  const two = o.stream(`/api/v1/runs/${runId}/events`, { 'last-event-id': first[first.length - 1]!.id! });
  await two.done;
  expect(two.status).toBe(200);
  expect(two.ended).toBe(true);
  return { runId, first, second: two.messages };
}

function expectEnd(messages: readonly SseMessage[], status: string): void {
  const end = messages[messages.length - 1]!;
  expect(end.event).toBe('end');
  expect(end.id).toBeUndefined();
  expect(JSON.parse(end.data)).toEqual({ runId: expect.any(String), reason: 'run-ended', status });
}

describe('SSE on the in-memory bus (ids are journal indexes)', () => {
  it('a client that disconnects mid-run and reconnects with Last-Event-ID misses nothing and sees nothing twice', async () => {
    const o = await open('memory');
    const { runId, first, second } = await resumeAcrossDisconnect(o);
    expectEnd(second, 'succeeded');
    const all = [...first, ...second.slice(0, -1)];
    const recorded = throughEnd(await o.recorded(runId));
    // Ids are the 1-based indexes of events.ndjson: every one once, in order.
    expect(all.map((m) => Number(m.id))).toEqual(recorded.map((_, i) => i + 1));
    expect(all.map((m) => m.event)).toEqual(recorded.map((e) => e.type));
    expect(eventsOf(all)).toEqual(recorded);
    expect(second.length).toBeGreaterThan(1);
  }, 60_000);

  it('100 concurrent subscribers of one run all receive every event, and each stream ends with the run', async () => {
    const o = await open('memory', { maxSubscribers: 150 });
    const runId = await o.start('fan');
    const subs = Array.from({ length: 100 }, () => o.stream(`/api/v1/runs/${runId}/events`));
    await Promise.all(subs.map((s) => s.done));
    const recorded = throughEnd(await o.recorded(runId));
    for (const s of subs) {
      expect(s.status).toBe(200);
      expect(s.ended).toBe(true);
      expectEnd(s.messages, 'succeeded');
      expect(eventsOf(s.messages)).toEqual(recorded);
      expect(s.messages.slice(0, -1).map((m) => Number(m.id))).toEqual(recorded.map((_, i) => i + 1));
    }
  }, 60_000);

  it('an idle stream gets heartbeats, and ends when the run is cancelled', async () => {
    const o = await open('memory');
    const runId = await o.start('slow');
    const s = o.stream(`/api/v1/runs/${runId}/events`);
    await until('a heartbeat on the idle stream', () => s.comments.includes('keep-alive'), 10_000);
    expect(s.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    const res = await fetch(`${o.url}/api/v1/runs/${runId}/cancel`, { method: 'POST', headers: { authorization: `Bearer ${OPERATOR}`, 'content-type': 'application/json' }, body: '{}' });
    expect(res.status).toBe(202);
    await s.done;
    expectEnd(s.messages, 'cancelled');
    expect(eventsOf(s.messages)).toEqual(throughEnd(await o.recorded(runId)));
  }, 60_000);

  it('a finished run replays from Last-Event-ID and ends; an unknown run is a 404 and a malformed Last-Event-ID a 400, with the error body', async () => {
    const o = await open('memory');
    const runId = await o.start('fan');
    const recorded = throughEnd(await o.recorded(runId));
    const s = o.stream(`/api/v1/runs/${runId}/events`, { 'last-event-id': '3' });
    await s.done;
    expect(s.messages.slice(0, -1).map((m) => Number(m.id))).toEqual(recorded.slice(3).map((_, i) => i + 4));
    expectEnd(s.messages, 'succeeded');

    const missing = o.stream('/api/v1/runs/20260101T000000Z-nope/events');
    await missing.done;
    expect(missing.status).toBe(404);
    expect(JSON.parse(missing.body)).toMatchObject({ error: { code: 'RUN_NOT_FOUND' } });
    for (const bad of ['abc', '-1', '1.5', '99999999999999999999']) {
      const b = o.stream(`/api/v1/runs/${runId}/events`, { 'last-event-id': bad });
      await b.done;
      expect(b.status, bad).toBe(400);
      expect(JSON.parse(b.body)).toMatchObject({ error: { code: 'BAD_REQUEST', details: { field: 'headers.last-event-id' } } });
    }
    const traversal = o.stream('/api/v1/runs/..%2F..%2Fetc/events');
    await traversal.done;
    expect([400, 404]).toContain(traversal.status);
  }, 60_000);

  it('past the subscriber limit a stream is refused with 503 and the error body, and a place frees when a client leaves', async () => {
    const o = await open('memory', { maxSubscribers: 2 });
    const runId = await o.start('slow');
    const a = o.stream(`/api/v1/runs/${runId}/events`);
    const b = o.stream('/api/v1/events');
    await Promise.all([a.opened, b.opened]);
    expect([a.status, b.status]).toEqual([200, 200]);
    const c = o.stream(`/api/v1/runs/${runId}/events`);
    await c.done;
    expect(c.status).toBe(503);
    expect(JSON.parse(c.body)).toMatchObject({ error: { code: 'TOO_MANY_SUBSCRIBERS', details: { maxSubscribers: 2 } } });
    a.close();
    await until('a place to free', async () => {
      const d = new SseClient(`${o.url}/api/v1/runs/${runId}/events`);
      clients.push(d);
      await d.opened;
      return d.status === 200;
    }, 10_000, 50);
  }, 60_000);

  // A client that never reads needs a small receive window: Node cannot set SO_RCVBUF, and
  // the kernel's autotuned one (up to net.ipv4.tcp_rmem, 32 MB here) would hold the whole run.
  it.skipIf(!hasPython)('a client that stops reading is dropped with a logged reason, while one that reads gets every event', async () => {
    const o = await open('memory', { maxBufferedBytes: 256 * 1024, stallMs: 500 });
    const runId = await o.start('chatty');
    const stuck = spawn('python3', ['-c', STUCK_CLIENT, new URL(o.url).port, `/api/v1/runs/${runId}/events`], { stdio: ['ignore', 'pipe', 'inherit'] });
    stuckClients.push(stuck);
    const reader = o.stream(`/api/v1/runs/${runId}/events`);
    await until('the stuck client to be dropped', () => o.logger.entries.some((e) => e.msg === 'event subscriber dropped'), 60_000, 50);
    const drop = o.logger.entries.find((e) => e.msg === 'event subscriber dropped')!;
    expect(drop.level).toBe('warn');
    expect(drop.fields).toMatchObject({ run: runId, caller: 'anonymous', reason: expect.stringMatching(/read nothing for 500 ms|bytes waited/) });
    await reader.done;
    expectEnd(reader.messages, 'succeeded');
    expect(eventsOf(reader.messages)).toEqual(throughEnd(await o.recorded(runId)));
    // Far more than the 256 KB the stuck client was allowed to leave unread.
    expect(reader.messages.reduce((n, m) => n + m.data.length, 0)).toBeGreaterThan(2 * 1024 * 1024);
    expect(o.logger.entries.filter((e) => e.msg === 'event subscriber dropped')).toHaveLength(1);
  }, 120_000);

  it('every run\'s events, filtered by workflow, without ids, as runs record them', async () => {
    const o = await open('memory');
    const s = o.stream('/api/v1/events?workflow=fan');
    await s.opened;
    const other = await o.start('steps');
    const runId = await o.start('fan');
    const recorded = throughEnd(await o.recorded(runId));
    await until('the fan run\'s final event on the all-runs stream', () => s.messages.some((m) => m.event === 'run.succeeded'));
    expect(s.messages.every((m) => m.id === undefined)).toBe(true);
    expect(eventsOf(s.messages).every((e) => e.runId === runId)).toBe(true);
    expect(eventsOf(s.messages)).toEqual(recorded);
    expect(other).not.toBe(runId);
    const resume = o.stream('/api/v1/events', { 'last-event-id': '5' });
    await resume.done;
    expect(resume.status).toBe(400);
  }, 60_000);
});

for (const { label, bin } of natsServerBinaries()) describe(`SSE on the NATS bus against a real ${label} (ids are stream sequences)`, () => {
  let nats: NatsServer;
  beforeAll(async () => {
    nats = await NatsServer.start(undefined, { bin });
  }, 60_000);
  afterAll(async () => {
    await nats?.close();
  });

  it('a client that disconnects mid-run and reconnects with Last-Event-ID misses nothing and sees nothing twice', async () => {
    const o = await open('nats', {}, nats.url);
    const { runId, first, second } = await resumeAcrossDisconnect(o);
    expectEnd(second, 'succeeded');
    const all = [...first, ...second.slice(0, -1)];
    const ids = all.map((m) => Number(m.id));
    // Stream sequences: strictly increasing, so none twice.
    for (let i = 1; i < ids.length; i++) expect(ids[i]).toBeGreaterThan(ids[i - 1]!);
    // Nothing missed: a subscriber reading the whole run afterwards gets the same messages.
    const whole = o.stream(`/api/v1/runs/${runId}/events`);
    await whole.done;
    expect(whole.messages.slice(0, -1)).toEqual(all);
    // And the stream holds what the run recorded (its checkpoints are the recorder's, not the bus's).
    const recorded = throughEnd(await o.recorded(runId)).filter((e) => e.type !== 'checkpoint');
    const key = (e: RunEvent): string => JSON.stringify(e);
    expect(eventsOf(all).map(key).sort()).toEqual(recorded.map(key).sort());
  }, 60_000);

  it('every run\'s events carry stream sequences and resume from Last-Event-ID', async () => {
    const o = await open('nats', {}, nats.url);
    const s = o.stream('/api/v1/events?workflow=fan');
    await s.opened;
    const runId = await o.start('fan');
    await until('the run\'s final event on the all-runs stream', () => s.messages.some((m) => m.event === 'run.succeeded'));
    const mine = s.messages.filter((m) => (JSON.parse(m.data) as RunEvent).runId === runId);
    expect(mine.length).toBeGreaterThan(5);
    const cut = mine[2]!;
    const resumed = o.stream('/api/v1/events?workflow=fan', { 'last-event-id': cut.id! });
    await until('the resumed stream to catch up', () => resumed.messages.some((m) => m.event === 'run.succeeded'));
    expect(resumed.messages.filter((m) => (JSON.parse(m.data) as RunEvent).runId === runId)).toEqual(mine.slice(3));
  }, 60_000);
});
