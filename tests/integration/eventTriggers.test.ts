import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EventTriggerSource, eventTriggerSubjects, planCapture, subjectMatches, subjectsOverlap, type EventTriggerSourceOptions, type EventTriggerSubject, type TriggerEvent } from '../../engine/nats/EventTriggerSource.js';
import { isStreamNotFound } from '../../engine/nats/jetStreamAdmin.js';
import { MemoryLogger } from '../../engine/run/Logger.js';
import type { Workflow } from '../../engine/spec/Workflow.js';
import { NatsServer, natsServerBinaries } from '../harness/natsServer.js';
import { until } from '../harness/until.js';

/** Reads one source's events in order; a missing event fails the test instead of hanging it. */
class Reader {
  private readonly it: AsyncIterator<TriggerEvent>;

  constructor(source: EventTriggerSource) {
    this.it = source.events()[Symbol.asyncIterator]();
  }

  async next(what = 'an event'): Promise<TriggerEvent> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), 15_000); });
    try {
      const r = await Promise.race([this.it.next(), late]);
      if (r.done === true) throw new Error(`events() ended while waiting for ${what}`);
      return r.value;
    } finally {
      clearTimeout(timer);
    }
  }
}

describe('trigger subject patterns (no server)', () => {
  it('matches `*` to one token and a final `>` to one or more', () => {
    expect(subjectMatches('orders.*', 'orders.created')).toBe(true);
    expect(subjectMatches('orders.*', 'orders.eu.created')).toBe(false);
    expect(subjectMatches('orders.*', 'orders')).toBe(false);
    expect(subjectMatches('orders.>', 'orders.eu.created')).toBe(true);
    expect(subjectMatches('orders.>', 'orders')).toBe(false);
    expect(subjectMatches('orders.created', 'orders.created')).toBe(true);
    expect(subjectMatches('orders.created', 'orders.created.x')).toBe(false);
  });

  it('knows which patterns overlap, as JetStream judges them', () => {
    expect(subjectsOverlap('a.*.c', 'a.b.*')).toBe(true);
    expect(subjectsOverlap('a.b', 'a.b.c')).toBe(false);
    expect(subjectsOverlap('a', 'a.>')).toBe(false);
    expect(subjectsOverlap('*.>', '$JS.API.INFO')).toBe(true);
    expect(subjectsOverlap('a.x.>', 'a.y.>')).toBe(false);
  });

  it('captures covered patterns once, merges overlapping ones into the narrowest cover, and refuses what would overlap blocked subjects', () => {
    expect(planCapture(['orders.*', 'orders.>', 'orders.created'].sort(), []).captures).toEqual(['orders.>']);
    expect(planCapture(['a.*.c', 'a.b.*'], []).captures).toEqual(['a.*.*']);
    expect(planCapture(['x.y', 'z.w'], []).captures).toEqual(['x.y', 'z.w']);
    const plan = planCapture(['*.>', 'ok.one', 'shop.*.paid', 'shop.eu.*'], [{ subject: '$JS.>', owner: 'NATS' }, { subject: 'shop.us.x', owner: 'stream SHOP' }]);
    expect(plan.captures).toEqual(['ok.one', 'shop.*.paid']);
    expect(plan.refused.get('*.>')).toMatch(/overlaps \$JS\.> \(NATS\)/);
    // shop.eu.* alone is fine, but covering it together with shop.*.paid would take shop.us.x.
    expect(plan.refused.get('shop.eu.*')).toMatch(/shop\.\*\.\*.*overlaps shop\.us\.x \(stream SHOP\)/);
  });

  it('lists the event triggers of workflows with their fixed params', () => {
    const wf = (name: string, triggers: Workflow['spec']['triggers']): Workflow => ({ apiVersion: 'caravan/v1', kind: 'Workflow', metadata: { name }, spec: { tasks: [], ...(triggers !== undefined ? { triggers } : {}) } });
    expect(eventTriggerSubjects([
      wf('a', [{ push: { paths: ['x/**'] } }, { event: { subject: 'orders.created', params: { region: 'eu' } } }]),
      wf('b', undefined),
      wf('c', [{ event: { subject: 'orders.>' } }]),
    ])).toEqual([{ workflow: 'a', subject: 'orders.created', params: { region: 'eu' } }, { workflow: 'c', subject: 'orders.>' }]);
  });
});

for (const { label, bin } of natsServerBinaries()) describe(`event triggers against a real ${label}`, () => {
  let server: NatsServer;
  let nc: NatsConnection;
  let js: JetStreamClient;
  let jsm: JetStreamManager;
  const opened: EventTriggerSource[] = [];
  const streams: string[] = [];
  let n = 0;

  beforeAll(async () => {
    server = await NatsServer.start(undefined, { bin });
    nc = await connect({ servers: server.url });
    js = jetstream(nc);
    jsm = await jetstreamManager(nc);
  });
  afterEach(async () => {
    for (const s of opened.splice(0)) await s.close();
    // Streams may not overlap: each test's goes, so the next may capture what it likes.
    for (const s of streams.splice(0)) {
      await jsm.streams.delete(s).catch((e: unknown) => {
        // A test that failed before its stream was made.
        if (!isStreamNotFound(e)) throw e;
      });
    }
  });
  afterAll(async () => {
    await nc.close();
    await server.close();
  });

  /** A stream and durable of this test's own, and a subject prefix no other test uses. */
  function scene(): { stream: string; durable: string; p: string } {
    n++;
    streams.push(`TRIGGERS_T${n}`);
    return { stream: `TRIGGERS_T${n}`, durable: `controller-${n}`, p: `t${n}` };
  }

  async function open(s: { stream: string; durable: string }, subjects: EventTriggerSubject[], extra: Partial<EventTriggerSourceOptions> = {}): Promise<{ source: EventTriggerSource; events: Reader; logger: MemoryLogger }> {
    const logger = new MemoryLogger();
    const source = await EventTriggerSource.open({ connection: [server.url], subjects, logger, stream: s.stream, durable: s.durable, ...extra });
    opened.push(source);
    return { source, events: new Reader(source), logger };
  }

  async function close(source: EventTriggerSource): Promise<void> {
    opened.splice(opened.indexOf(source), 1);
    await source.close();
  }

  async function publish(subject: string, payload: unknown, msgID?: string): Promise<{ duplicate: boolean; seq: number }> {
    const body = typeof payload === 'string' ? payload : JSON.stringify(payload);
    return js.publish(subject, body, msgID !== undefined ? { msgID } : {});
  }

  /** Messages left in the stream: a work-queue stream removes each one once it is acked or terminated. */
  async function stored(stream: string): Promise<number> {
    return (await jsm.streams.info(stream)).state.messages;
  }

  it('delivers a JSON object payload as one event with its params and its Nats-Msg-Id, else the stream sequence, as id', async () => {
    const s = scene();
    const { events } = await open(s, [{ workflow: 'report', subject: `${s.p}.orders.created` }]);
    await publish(`${s.p}.orders.created`, { quarter: 'Q3', count: 2, tags: ['a'] }, 'order-1');
    const e = await events.next();
    expect({ workflow: e.workflow, subject: e.subject, id: e.id, params: e.params }).toEqual({ workflow: 'report', subject: `${s.p}.orders.created`, id: 'order-1', params: { quarter: 'Q3', count: 2, tags: ['a'] } });
    await e.ack();
    const { seq } = await publish(`${s.p}.orders.created`, '');
    const bare = await events.next();
    expect(bare.id).toBe(`seq:${seq}`);
    // An empty payload carries no params of its own.
    expect(bare.params).toEqual({});
    await bare.ack();
    await until('both acks to remove their messages', async () => (await stored(s.stream)) === 0, 5000);
  });

  it('keeps a message published while no source is open, and delivers it when one opens', async () => {
    const s = scene();
    const subjects = [{ workflow: 'report', subject: `${s.p}.sales.uploaded` }];
    await close((await open(s, subjects)).source);
    await publish(`${s.p}.sales.uploaded`, { file: 'q3.csv' }, 'upload-7');
    const { events } = await open(s, subjects);
    const e = await events.next('the message published while closed');
    expect([e.id, e.params]).toEqual(['upload-7', { file: 'q3.csv' }]);
    await e.ack();
  });

  it('does not deliver an acked message again after close and reopen; one left unsettled comes again', async () => {
    const s = scene();
    const subjects = [{ workflow: 'report', subject: `${s.p}.go` }];
    const first = await open(s, subjects);
    await publish(`${s.p}.go`, { n: 1 }, 'm1');
    await publish(`${s.p}.go`, { n: 2 }, 'm2');
    const m1 = await first.events.next();
    expect(m1.id).toBe('m1');
    await m1.ack();
    expect((await first.events.next()).id).toBe('m2');
    await close(first.source);
    const again = await open(s, subjects);
    // In stream order: m1 would come first had its ack been lost.
    const e = await again.events.next('the unsettled message');
    expect(e.id).toBe('m2');
    await e.ack();
    await until('the stream to be empty', async () => (await stored(s.stream)) === 0, 5000);
  });

  it('a message held longer than the ack wait is not sent again while its event waits', async () => {
    const s = scene();
    const { events } = await open(s, [{ workflow: 'slow', subject: `${s.p}.go` }], { ackWaitMs: 1500 });
    await publish(`${s.p}.go`, {}, 'held');
    const e = await events.next();
    // Twice the ack wait: without the progress reports the server would send it again.
    await new Promise((r) => setTimeout(r, 3500));
    expect((await jsm.consumers.info(s.stream, s.durable)).num_redelivered).toBe(0);
    await publish(`${s.p}.go`, {}, 'next');
    const next = await events.next();
    expect(next.id).toBe('next');
    await e.ack();
    await next.ack();
    await until('both messages to be gone', async () => (await stored(s.stream)) === 0, 5000);
  });

  it('keeps receiving across a server restart, and recreates its consumer when it is deleted', async () => {
    const s = scene();
    const { events, logger } = await open(s, [{ workflow: 'report', subject: `${s.p}.go` }]);
    await server.restart();
    await until('the publisher to be back', () => !nc.isClosed() && nc.info !== undefined);
    await until('a publish to be stored', async () => publish(`${s.p}.go`, {}, 'after-restart').then(() => true, () => false));
    const e = await events.next('the message published after the restart');
    expect(e.id).toBe('after-restart');
    await e.ack();
    // nats-server 2.9 may refuse the first delete after a restart (a consumer directory still being written).
    await until('the consumer to be deleted', () => jsm.consumers.delete(s.stream, s.durable).then(() => true, () => false), 10_000, 200);
    await until('the consumer to be recreated', () => logger.entries.some((l) => l.msg === 'trigger stream and consumer recreated'), 20_000);
    await publish(`${s.p}.go`, {}, 'after-delete');
    const again = await events.next('the message published after the consumer was deleted');
    expect(again.id).toBe('after-delete');
    await again.ack();
  });

  it('a Nats-Msg-Id published twice within the duplicate window arrives once', async () => {
    const s = scene();
    const { events } = await open(s, [{ workflow: 'report', subject: `${s.p}.go` }]);
    expect((await publish(`${s.p}.go`, { n: 1 }, 'same')).duplicate).toBe(false);
    expect((await publish(`${s.p}.go`, { n: 2 }, 'same')).duplicate).toBe(true);
    await publish(`${s.p}.go`, { n: 3 }, 'after');
    const a = await events.next();
    const b = await events.next();
    expect([a.id, a.params, b.id]).toEqual(['same', { n: 1 }, 'after']);
    await a.ack();
    await b.ack();
  });

  it('refuses a payload that is not JSON, not an object or over 64 KiB: reported with a reason (never the payload), terminated, not delivered again', async () => {
    const s = scene();
    const refusals: Array<[string, string, string]> = [];
    const subjects = [{ workflow: 'report', subject: `${s.p}.go` }];
    const { source, events, logger } = await open(s, subjects, { onRefused: (w, subj, reason) => refusals.push([w, subj, reason]) });
    const secret = 'hunter2-SECRET-payload';
    await publish(`${s.p}.go`, `not json ${secret}`, 'not-json');
    await publish(`${s.p}.go`, [secret], 'array');
    const big = JSON.stringify({ pad: secret + 'x'.repeat(65 * 1024) });
    await publish(`${s.p}.go`, big, 'big');
    // Exactly 64 KiB is still taken.
    const fits = JSON.stringify({ pad: 'y'.repeat(64 * 1024 - 10) });
    expect(Buffer.byteLength(fits)).toBe(64 * 1024);
    await publish(`${s.p}.go`, fits, 'fits');
    const e = await events.next('the 64 KiB payload');
    expect(e.id).toBe('fits');
    await e.ack();
    expect(refusals).toEqual([
      ['report', `${s.p}.go`, 'payload is not JSON'],
      ['report', `${s.p}.go`, 'payload is an array, not a JSON object of params'],
      ['report', `${s.p}.go`, expect.stringMatching(/^payload of 66\d\d\d bytes is over the 65536-byte limit$/)],
    ]);
    expect(source.refused).toBe(3);
    const warned = logger.lines('warn').filter((l) => l.msg === 'event trigger message refused');
    expect(warned.map((l) => [l.fields.id, l.fields.workflow, typeof l.fields.reason])).toEqual([['not-json', 'report', 'string'], ['array', 'report', 'string'], ['big', 'report', 'string']]);
    expect(JSON.stringify(logger.entries)).not.toContain(secret);
    // Terminated messages leave a work-queue stream; one merely left alone would stay.
    await until('the refused messages to be gone from the stream', async () => (await stored(s.stream)) === 0, 5000);
    await close(source);
    const again = await open(s, subjects);
    await publish(`${s.p}.go`, { n: 1 }, 'sentinel');
    expect((await again.events.next('the sentinel')).id).toBe('sentinel');
  });

  it('wildcard triggers: one event per workflow whose subject matches, one message settled when all are', async () => {
    const s = scene();
    const { source, events } = await open(s, [
      { workflow: 'any-order', subject: `${s.p}.orders.*` },
      { workflow: 'everything', subject: `${s.p}.orders.>` },
      // Two triggers of one workflow match: one event, with the first one's fixed params.
      { workflow: 'created', subject: `${s.p}.orders.created`, params: { via: 'exact' } },
      { workflow: 'created', subject: `${s.p}.orders.*`, params: { via: 'wildcard' } },
      { workflow: 'other', subject: `${s.p}.invoices.*` },
    ]);
    expect(source.streamSubjects).toEqual([`${s.p}.invoices.*`, `${s.p}.orders.>`]);
    await publish(`${s.p}.orders.created`, { id: 1 }, 'o1');
    const got = [await events.next(), await events.next(), await events.next()];
    expect(got.map((e) => e.workflow).sort()).toEqual(['any-order', 'created', 'everything']);
    expect(got.every((e) => e.id === 'o1' && e.subject === `${s.p}.orders.created`)).toBe(true);
    expect(got.find((e) => e.workflow === 'created')!.params).toEqual({ via: 'exact', id: 1 });
    await publish(`${s.p}.orders.eu.created`, { id: 2 }, 'o2');
    const deep = await events.next();
    expect([deep.workflow, deep.id]).toEqual(['everything', 'o2']);
    for (const e of got.slice(0, 2)) await e.ack();
    // One of o1's workflows has not answered yet: the message stays.
    expect(await stored(s.stream)).toBe(2);
    await got[2]!.ack();
    await deep.ack();
    await until('both messages to be gone', async () => (await stored(s.stream)) === 0, 5000);
  });

  it('after one workflow naks, the message comes again for that workflow only', async () => {
    const s = scene();
    const { events } = await open(s, [{ workflow: 'a', subject: `${s.p}.go` }, { workflow: 'b', subject: `${s.p}.go` }]);
    await publish(`${s.p}.go`, {}, 'm');
    const first = [await events.next(), await events.next()];
    expect(first.map((e) => e.workflow).sort()).toEqual(['a', 'b']);
    await first.find((e) => e.workflow === 'a')!.ack();
    await first.find((e) => e.workflow === 'b')!.nak();
    const again = await events.next('the redelivery');
    expect([again.workflow, again.id]).toEqual(['b', 'm']);
    await again.ack();
    await until('the message to be gone', async () => (await stored(s.stream)) === 0, 5000);
  });

  it('updateSubjects captures a new subject and routes it to its workflow', async () => {
    const s = scene();
    const { source, events } = await open(s, [{ workflow: 'a', subject: `${s.p}.a` }]);
    // Nothing captures the subject yet: JetStream does not answer the publish.
    await expect(publish(`${s.p}.b`, { n: 1 })).rejects.toThrow();
    await source.updateSubjects([{ workflow: 'a', subject: `${s.p}.a` }, { workflow: 'b', subject: `${s.p}.b` }]);
    expect([...source.streamSubjects].sort()).toEqual([`${s.p}.a`, `${s.p}.b`]);
    expect((await jsm.streams.info(s.stream)).config.subjects?.sort()).toEqual([`${s.p}.a`, `${s.p}.b`]);
    await publish(`${s.p}.b`, { n: 2 }, 'b1');
    const e = await events.next();
    expect([e.workflow, e.params]).toEqual(['b', { n: 2 }]);
    await e.ack();
  });

  it('merges a trigger\'s fixed params under the payload\'s, with ${{ event.* }} resolved', async () => {
    const s = scene();
    const refusals: string[] = [];
    const { events } = await open(s, [
      { workflow: 'deploy', subject: `${s.p}.deploy.*`, params: { region: 'eu', env: '${{ event.tokens[2] }}', source: 'from ${{ event.subject }} (${{ event.id }})', size: '${{ event.payload.replicas }}', fixed: 3 } },
      { workflow: 'broken', subject: `${s.p}.deploy.*`, params: { x: '${{ params.region }}' } },
    ], { onRefused: (w, _subj, reason) => refusals.push(`${w}: ${reason}`) });
    await publish(`${s.p}.deploy.prod`, { region: 'us', replicas: 4 }, 'd1');
    const e = await events.next();
    expect(e.workflow).toBe('deploy');
    expect(e.params).toEqual({ region: 'us', env: 'prod', source: `from ${s.p}.deploy.prod (d1)`, size: 4, fixed: 3, replicas: 4 });
    await e.ack();
    // A fixed param that reads what triggers cannot give refuses that workflow's events, not the other's.
    expect(refusals).toEqual([expect.stringMatching(/^broken: param x: expression 'params.region'/)]);
    await until('the message to be gone', async () => (await stored(s.stream)) === 0, 5000);
  });

  it('reports triggers the stream cannot capture, and widens overlapping ones into one subject', async () => {
    const s = scene();
    streams.push('SHOP');
    await jsm.streams.add({ name: 'SHOP', subjects: [`${s.p}.shop.>`] });
    const { source, events, logger } = await open(s, [
      { workflow: 'greedy', subject: '*.>' },
      { workflow: 'shop', subject: `${s.p}.shop.paid` },
      { workflow: 'bad', subject: 'not a subject' },
      { workflow: 'x', subject: `${s.p}.a.*.c` },
      { workflow: 'y', subject: `${s.p}.a.b.*` },
    ]);
    expect(source.uncapturedTriggers.map((u) => [u.workflow, u.reason])).toEqual([
      ['bad', expect.stringContaining('not a NATS subject')],
      ['greedy', expect.stringContaining('overlaps $JS.>')],
      ['shop', `overlaps ${s.p}.shop.> (stream SHOP)`],
    ]);
    expect(logger.lines('error').filter((l) => l.msg === 'event trigger cannot be captured; it will not fire').map((l) => l.fields.workflow)).toEqual(['bad', 'greedy', 'shop']);
    expect(source.streamSubjects).toEqual([`${s.p}.a.*.*`]);
    // Caught by the wider subject but for no trigger: dropped, logged.
    await publish(`${s.p}.a.z.z`, {}, 'nobody');
    await publish(`${s.p}.a.b.c`, {}, 'both');
    const got = [await events.next(), await events.next()];
    expect(got.map((e) => `${e.workflow}:${e.id}`).sort()).toEqual(['x:both', 'y:both']);
    expect(logger.lines('info').some((l) => l.msg === 'event trigger message matches no workflow; dropped' && l.fields.id === 'nobody')).toBe(true);
    for (const e of got) await e.ack();
    await until('both messages to be gone', async () => (await stored(s.stream)) === 0, 5000);
  });
});
