import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InMemoryBus } from '../../engine/local/InMemoryBus.js';
import { connectJetStream } from '../../engine/nats/connectJetStream.js';
import { natsConnectionOptions } from '../../engine/nats/natsConnectionOptions.js';
import { eventId, type RunEvent } from '../../engine/run/RunEvent.js';
import { eventSubject, runSubjects, type Bus } from '../../engine/run/Bus.js';
import { NatsServer, natsServerBinaries } from '../harness/natsServer.js';
import { until } from '../harness/until.js';

function event(runId: string, task: string, attempt: number, type: 'task.started' | 'task.heartbeat' = 'task.started', at = 1): RunEvent {
  return { runId, at, type, task, attempt };
}

/** Publishes one event; what the bus returns settles once it is stored (NATS), or at once (in memory). */
function publish(bus: Bus, e: RunEvent, origin: 'engine' | 'agent' = 'agent'): void | Promise<void> {
  return bus.publish(eventSubject('wf', e.runId, 'task' in e ? e.task : undefined), e, { msgId: eventId(e), origin });
}

/** A bus for the suite, and how to close it with whatever it runs on. */
interface Opened {
  bus: Bus;
  close: () => Promise<void>;
}

/** The behaviour every Bus must have, whatever carries the events. */
function busContract(name: string, make: () => Promise<Opened>, available: () => boolean): void {
  describe.skipIf(!available())(`Bus contract: ${name}`, () => {
    let bus: Bus;
    let opened: Opened;
    beforeAll(async () => {
      opened = await make();
      bus = opened.bus;
    });
    afterAll(async () => {
      await opened.close();
    });

    it('delivers a run\'s events in publish order, with their origin, and nothing of other runs', async () => {
      const got: Array<[string, string, string]> = [];
      const stop = bus.subscribe(runSubjects('wf', 'run-a'), (e, meta) => got.push([e.type, 'task' in e ? e.task : '', meta.origin]));
      for (let i = 0; i < 50; i++) publish(bus, event('run-a', `t${i}`, 1), i % 2 === 0 ? 'agent' : 'engine');
      publish(bus, event('run-b', 'other', 1));
      await until('50 events', () => got.length >= 50);
      expect(got).toEqual(Array.from({ length: 50 }, (_, i) => ['task.started', `t${i}`, i % 2 === 0 ? 'agent' : 'engine']));
      stop();
    });

    it('stores an event published twice with the same id once', async () => {
      const got: string[] = [];
      const stop = bus.subscribe(runSubjects('wf', 'run-dup'), (e) => got.push('task' in e ? e.task : ''));
      const e = event('run-dup', 'x', 1);
      publish(bus, e);
      publish(bus, e);
      publish(bus, event('run-dup', 'y', 1));
      await until('2 events', () => got.length >= 2);
      // Let a third (wrong) delivery arrive if there were one: wait for a later marker.
      publish(bus, event('run-dup', 'z', 1));
      await until('the marker', () => got.includes('z'));
      expect(got).toEqual(['x', 'y', 'z']);
      stop();
    });

    it('matches subjects with * and >', async () => {
      const got: string[] = [];
      const stop = bus.subscribe('caravan.ev.wf.*.only', (e) => got.push(e.runId));
      publish(bus, event('r1', 'only', 1));
      publish(bus, event('r2', 'not', 1));
      publish(bus, event('r3', 'only', 1));
      await until('2 events', () => got.length >= 2);
      expect(got).toEqual(['r1', 'r3']);
      stop();
    });

    it('gives a late subscriber the events published before it, from the first, in order, then the new ones', async () => {
      // The engine subscribes only after replaying its journal: reports that arrived in
      // between must still reach it.
      const stored: Array<void | Promise<void>> = [];
      for (let i = 0; i < 20; i++) stored.push(publish(bus, event('run-late', `t${i}`, 1), i % 2 === 0 ? 'agent' : 'engine'));
      stored.push(publish(bus, event('run-other', 'x', 1)));
      // Every one of them stored before anybody subscribes.
      await Promise.all(stored);
      const got: Array<[string, string]> = [];
      const stop = bus.subscribe(runSubjects('wf', 'run-late'), (e, meta) => got.push(['task' in e ? e.task : '', meta.origin]));
      for (let i = 20; i < 25; i++) publish(bus, event('run-late', `t${i}`, 1));
      await until('25 events', () => got.length >= 25);
      expect(got).toEqual(Array.from({ length: 25 }, (_, i) => [`t${i}`, i < 20 && i % 2 === 1 ? 'engine' : 'agent']));
      stop();
    });

    it('delivers nothing inside publish: a handler never runs before publish returns', async () => {
      const got: string[] = [];
      const stop = bus.subscribe(runSubjects('wf', 'run-async'), (e) => got.push(e.type));
      publish(bus, event('run-async', 'a', 1));
      expect(got).toEqual([]);
      await until('the event', () => got.length === 1);
      stop();
    });
  });
}

const servers: NatsServer[] = [];

busContract('in-memory', async () => {
  const bus = new InMemoryBus();
  return { bus, close: () => bus.close() };
}, () => true);
for (const { label, bin } of natsServerBinaries()) {
  busContract(`NATS JetStream, ${label}`, async () => {
    const server = await NatsServer.start(undefined, { bin });
    servers.push(server);
    const nats = await connectJetStream({ connection: await natsConnectionOptions({}, [server.url]) });
    return { bus: nats.bus, close: () => nats.close() };
  }, () => true);
}

afterAll(async () => {
  for (const server of servers) await server.close();
});
