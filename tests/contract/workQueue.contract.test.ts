import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InMemoryWorkQueue } from '../../engine/local/InMemoryWorkQueue.js';
import { connectJetStream } from '../../engine/nats/connectJetStream.js';
import { natsConnectionOptions } from '../../engine/nats/natsConnectionOptions.js';
import type { WorkItem } from '../../engine/run/protocol.js';
import { PoolAgentStopping, type WorkQueue } from '../../engine/run/WorkQueue.js';
import { NatsServer, natsServerBinaries } from '../harness/natsServer.js';
import { until } from '../harness/until.js';

/** How long an item given up without a report waits before it comes back, in both implementations. */
const ACK_WAIT_MS = 1000;

/** An item of run `r-<workflow>`: run ids are unique, and a queue drops an attempt key it has seen. */
function item(workflow: string, instance: string, attempt = 1): WorkItem {
  const runId = `r-${workflow}`;
  return { runId, workflow, instance, attempt, task: { name: instance, agent: 'noop' }, context: { params: { n: 1 }, tasks: {}, run: { id: runId } }, timeoutMs: 5000, defaultsEnv: { A: 'b' } };
}

function later(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A queue for the suite, and how to close it with whatever it runs on. */
interface Opened {
  queue: WorkQueue;
  close: () => Promise<void>;
}

/** The behaviour every WorkQueue must have (see engine/run/WorkQueue.ts), whatever holds the items. */
function workQueueContract(name: string, make: () => Promise<Opened>): void {
  describe(`WorkQueue contract: ${name}`, () => {
    let q: WorkQueue;
    let opened: Opened;
    // Each test has a workflow of its own: a pool's durable consumer outlives a test on JetStream.
    let n = 0;
    const wf = (): string => `wq${++n}`;
    beforeAll(async () => {
      opened = await make();
      q = opened.queue;
    });
    afterAll(async () => {
      await opened.close();
    });

    it('hands each item, as it was queued, to exactly one of the pool\'s consumers, and none of another pool\'s', async () => {
      const w = wf();
      const got: Array<[string, WorkItem]> = [];
      const consumer = (who: string) => q.consume(w, 'p', 2, async (i) => {
        got.push([who, i]);
        return { reported: Promise.resolve() };
      });
      let other = 0;
      const stops = [await consumer('a'), await consumer('b'), await q.consume(w, 'q', 2, async () => {
        other++;
        return { reported: Promise.resolve() };
      })];
      for (let i = 0; i < 20; i++) await q.enqueue(w, 'p', item(w, `t${i}`));
      await until('20 items', () => got.length >= 20);
      await later(200);
      expect(got.map(([, i]) => i.instance).sort()).toEqual(Array.from({ length: 20 }, (_, i) => `t${i}`).sort());
      expect(got.find(([, i]) => i.instance === 't3')![1]).toEqual(item(w, 't3'));
      expect(other).toBe(0);
      for (const stop of stops) await stop();
    });

    it('runs at most `concurrency` items at once on a consumer, and fills every slot', async () => {
      const w = wf();
      let running = 0;
      let most = 0;
      let done = 0;
      const stop = await q.consume(w, 'p', 3, async () => {
        most = Math.max(most, ++running);
        await later(50);
        running--;
        done++;
        return { reported: Promise.resolve() };
      });
      for (let i = 0; i < 12; i++) await q.enqueue(w, 'p', item(w, `t${i}`));
      await until('12 items', () => done === 12);
      expect(most).toBe(3);
      await stop();
    });

    it('lets two consumers of concurrency 1 run two items together (a busy consumer holds no second item)', async () => {
      const w = wf();
      const started = new Set<string>();
      const both = async (i: WorkItem) => {
        started.add(i.instance);
        await until('both to run', () => started.size === 2);
        return { reported: Promise.resolve() };
      };
      const stops = [await q.consume(w, 'p', 1, both), await q.consume(w, 'p', 1, both)];
      await q.enqueue(w, 'p', item(w, 'x'));
      await q.enqueue(w, 'p', item(w, 'y'));
      await until('both started', () => started.size === 2);
      for (const stop of stops) await stop();
    });

    it('drops an attempt queued again with the same attempt key', async () => {
      const w = wf();
      const got: string[] = [];
      const stop = await q.consume(w, 'p', 4, async (i) => {
        got.push(`${i.instance}#${i.attempt}`);
        return { reported: Promise.resolve() };
      });
      await q.enqueue(w, 'p', item(w, 'a'));
      await q.enqueue(w, 'p', item(w, 'a'));
      await q.enqueue(w, 'p', item(w, 'a', 2));
      await q.enqueue(w, 'p', item(w, 'marker'));
      await until('the marker', () => got.includes('marker#1'));
      await later(200);
      expect(got.sort()).toEqual(['a#1', 'a#2', 'marker#1']);
      await stop();
    });

    it('delivers an item again when its handler throws', async () => {
      const w = wf();
      let calls = 0;
      const stop = await q.consume(w, 'p', 1, async () => {
        if (++calls === 1) throw new Error('agent trouble');
        return { reported: Promise.resolve() };
      });
      await q.enqueue(w, 'p', item(w, 'flaky'));
      await until('the second delivery', () => calls === 2);
      await stop();
    });

    it('is done with an item once its report is stored: it does not come back after the ack wait', async () => {
      const w = wf();
      const got: string[] = [];
      const stop = await q.consume(w, 'p', 2, async (i) => {
        got.push(i.instance);
        return { reported: later(50) };
      });
      await q.enqueue(w, 'p', item(w, 'once'));
      await until('the item', () => got.length === 1);
      await later(ACK_WAIT_MS * 2);
      expect(got).toEqual(['once']);
      await stop();
    });

    it('aborts a running attempt that is cancelled, and never starts a queued one that is', async () => {
      const w = wf();
      const started: string[] = [];
      const aborted: string[] = [];
      const stop = await q.consume(w, 'p', 1, async (i, signal) => {
        started.push(i.instance);
        await new Promise<void>((r) => signal.addEventListener('abort', () => r()));
        aborted.push(i.instance);
        return { reported: Promise.resolve() };
      });
      await q.enqueue(w, 'p', item(w, 'running'));
      await until('the first to start', () => started.length === 1);
      await q.enqueue(w, 'p', item(w, 'queued'));
      await q.enqueue(w, 'p', item(w, 'marker'));
      // The consumer is busy: `queued` waits (in the queue, or held by the consumer).
      q.cancel(w, 'p', { runId: `r-${w}`, instance: 'queued', attempt: 1 });
      // Cancels reach a consumer in the order they were sent: the slot this next one frees
      // is taken only after `queued` is known to be cancelled.
      q.cancel(w, 'p', { runId: `r-${w}`, instance: 'running', attempt: 1 });
      await until('the running one aborted', () => aborted.includes('running'));
      await until('the marker to start', () => started.includes('marker'));
      expect(started).toEqual(['running', 'marker']);
      q.cancel(w, 'p', { runId: `r-${w}`, instance: 'marker', attempt: 1 });
      await stop();
    });

    it('when stopped, lets a short attempt finish within the drain, and hands a long one back at once', async () => {
      const w = wf();
      const reasons: unknown[] = [];
      const started: string[] = [];
      let shortDone = false;
      const stop = await q.consume(w, 'p', 2, async (i, signal) => {
        started.push(i.instance);
        if (i.instance === 'short') {
          await later(100);
          shortDone = true;
          return { reported: Promise.resolve() };
        }
        await new Promise<void>((r) => signal.addEventListener('abort', () => r()));
        reasons.push(signal.reason);
        return {};
      });
      await q.enqueue(w, 'p', item(w, 'long'));
      await q.enqueue(w, 'p', item(w, 'short'));
      await until('both attempts to start', () => started.length === 2);
      const t0 = Date.now();
      await stop(500);
      expect(shortDone).toBe(true);
      expect(reasons).toHaveLength(1);
      expect(reasons[0]).toBeInstanceOf(PoolAgentStopping);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(450);
      // Handed back, not left to the ack wait: another consumer gets it long before.
      const got: string[] = [];
      const t1 = Date.now();
      const stopOther = await q.consume(w, 'p', 2, async (i) => {
        got.push(i.instance);
        return { reported: Promise.resolve() };
      });
      await until('the long one again', () => got.includes('long'));
      expect(Date.now() - t1).toBeLessThan(ACK_WAIT_MS);
      await later(200);
      expect(got).toEqual(['long']);
      await stopOther();
    });
  });
}

const servers: NatsServer[] = [];

workQueueContract('in-memory', async () => ({ queue: new InMemoryWorkQueue({ ackWaitMs: ACK_WAIT_MS }), close: async () => undefined }));
for (const { label, bin } of natsServerBinaries()) {
  workQueueContract(`NATS JetStream, ${label}`, async () => {
    const server = await NatsServer.start(undefined, { bin });
    servers.push(server);
    const nats = await connectJetStream({ connection: await natsConnectionOptions({}, [server.url]), workAckWaitMs: ACK_WAIT_MS });
    return { queue: nats.workQueue, close: () => nats.close() };
  });
}

afterAll(async () => {
  for (const server of servers) await server.close();
});
