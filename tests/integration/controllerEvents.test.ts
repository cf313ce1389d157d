import { jetstream } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startController, type RunningController } from '../../engine/api/startController.js';
import { MemoryLogger } from '../../engine/run/Logger.js';
import { withEnv } from '../harness/cli.js';
import { tempRepo, workflow } from '../harness/gitRepo.js';
import { NatsServer } from '../harness/natsServer.js';
import { until } from '../harness/until.js';

const orders = workflow('orders', '  params:\n    order: { type: integer, required: true }\n  triggers:\n    - event: { subject: shop.orders.created }\n  tasks:\n    - { name: note, run: "echo order ${{ params.order }} >> orders.log" }\n');

describe('event triggers in the controller (a real nats-server)', () => {
  let server: NatsServer;
  let nc: NatsConnection;
  const running: RunningController[] = [];
  beforeAll(async () => {
    server = await NatsServer.start();
    nc = await connect({ servers: server.url });
  }, 60_000);
  afterEach(async () => {
    for (const r of running.splice(0)) await r.stop();
  });
  afterAll(async () => {
    await nc?.close();
    await server?.close();
  });

  it('a message with a good payload starts one run with its params, a repeat of its id starts nothing, and a bad payload starts nothing and is logged', async () => {
    const dir = await tempRepo({ 'orders.yaml': orders });
    await writeFile(join(dir, '.gitignore'), 'orders.log\n');
    const logger = new MemoryLogger();
    const ctl = await withEnv({ NATS_URL: server.url }, () => startController({ repoDir: dir, bus: 'nats', intervalMs: 3_600_000, logger }));
    running.push(ctl);
    const js = jetstream(nc);
    const publish = (payload: unknown, msgID: string): Promise<unknown> => js.publish('shop.orders.created', new TextEncoder().encode(JSON.stringify(payload)), { msgID });
    await publish({ order: 42 }, 'order-42');
    await until('the order run to note the order', async () => (await readFile(join(dir, 'orders.log'), 'utf8').catch(() => '')) === 'order 42\n');
    // The same message id again (a publisher retrying): JetStream and the controller drop it.
    await publish({ order: 42 }, 'order-42');
    await publish({ order: 'forty-three' }, 'order-43');
    await until('the bad payload to be refused', () => logger.entries.some((e) => e.msg === 'event refused: its params do not fit the workflow'));
    const refused = logger.entries.find((e) => e.msg === 'event refused: its params do not fit the workflow')!;
    expect(refused.fields).toMatchObject({ workflow: 'orders', subject: 'shop.orders.created', messageId: 'order-43', reason: expect.stringMatching(/order/) });
    // The reason names the param, never the payload's value.
    expect(JSON.stringify(refused)).not.toContain('forty-three');
    await publish({ order: 44 }, 'order-44');
    await until('the next good order', async () => (await readFile(join(dir, 'orders.log'), 'utf8').catch(() => '')) === 'order 42\norder 44\n');
    await until('the second run to be logged', () => logger.entries.filter((e) => e.msg === 'run started by an event').length >= 2);
    await ctl.stop();
    expect(logger.entries.filter((e) => e.msg === 'run started by an event').map((e) => e.fields['messageId'])).toEqual(['order-42', 'order-44']);
    expect(ctl.controller.refusedEvents).toBe(1);
  });
});
