import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InMemoryBus } from '../../engine/local/InMemoryBus.js';
import { JetStreamBus } from '../../engine/nats/JetStreamBus.js';
import { natsConnectionOptions } from '../../engine/nats/natsConnectionOptions.js';
import { eventId, type RunEvent } from '../../engine/run/RunEvent.js';
import { eventSubject, runSubjects, type Bus } from '../../engine/run/Bus.js';
import { NatsServer, natsServerBinaries } from '../harness/natsServer.js';
import { until } from '../harness/until.js';

function event(runId: string, task: string, attempt: number, type: 'task.started' | 'task.heartbeat' = 'task.started', at = 1): RunEvent {
  return { runId, at, type, task, attempt };
}

function publish(bus: Bus, e: RunEvent, origin: 'engine' | 'agent' = 'agent'): void {
  bus.publish(eventSubject('wf', e.runId, 'task' in e ? e.task : undefined), e, { msgId: eventId(e), origin });
}

/** The behaviour every Bus must have, whatever carries the events. */
function busContract(name: string, make: () => Promise<Bus>, available: () => boolean): void {
  describe.skipIf(!available())(`Bus contract: ${name}`, () => {
    let bus: Bus;
    beforeAll(async () => {
      bus = await make();
    });
    afterAll(async () => {
      await bus.close();
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
  });
}

const servers: NatsServer[] = [];

busContract('in-memory', async () => new InMemoryBus(), () => true);
for (const { label, bin } of natsServerBinaries()) {
  busContract(`NATS JetStream, ${label}`, async () => {
    const server = await NatsServer.start(undefined, { bin });
    servers.push(server);
    return JetStreamBus.connect({ connection: await natsConnectionOptions({}, [server.url]) });
  }, () => true);
}

afterAll(async () => {
  for (const server of servers) await server.close();
});
