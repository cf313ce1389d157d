import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, headers } from '@nats-io/transport-node';
import { connectJetStream } from '../../engine/nats/connectJetStream.js';
import { natsConnectionOptions } from '../../engine/nats/natsConnectionOptions.js';
import { eventSubject } from '../../engine/run/Bus.js';
import { eventId, type RunEvent } from '../../engine/run/RunEvent.js';
import { NatsServer, requireServer } from '../harness/natsServer.js';

export interface NatsPublishResult {
  suite: 'nats-publish';
  messages: number;
  bus_publish_per_s: number;
  js_publish_per_s: number;
}

/**
 * Pipelined, acknowledged JetStream publishes of task events, on a real nats-server started
 * for the purpose: Caravan's bus (one ack inbox, a reply subject per message) against
 * nats.js's `js.publish` with the same headers and message ids, in the same run.
 */
export async function natsPublishBench(n = 50_000): Promise<NatsPublishResult> {
  if (!requireServer('nats-server', 'apt-get install -y nats-server')) throw new Error('nats-server is required');
  const server = await NatsServer.start();
  try {
    const connection = await natsConnectionOptions({}, [server.url]);
    const nats = await connectJetStream({ connection });
    const bus = nats.bus;
    let t = performance.now();
    for (let i = 0; i < n; i++) {
      const e: RunEvent = { runId: 'pub', at: i, type: 'task.succeeded', task: `t${i}`, attempt: 1, outputs: {} };
      bus.publish(eventSubject('bench', 'pub', `t${i}`), e, { msgId: eventId(e), origin: 'agent' });
    }
    await bus.flush();
    const busRate = n / ((performance.now() - t) / 1000);
    await nats.close();

    const nc = await connect(connection);
    await jetstreamManager(nc);
    const js = jetstream(nc);
    t = performance.now();
    const acks: Promise<unknown>[] = [];
    for (let i = 0; i < n; i++) {
      const e: RunEvent = { runId: 'js', at: i, type: 'task.succeeded', task: `t${i}`, attempt: 1, outputs: {} };
      const h = headers();
      h.set('Caravan-Origin', 'agent');
      acks.push(js.publish(eventSubject('bench', 'js', `t${i}`), JSON.stringify({ o: 'a', e }), { msgID: eventId(e), headers: h, timeout: 5000 }));
    }
    await Promise.all(acks);
    const jsRate = n / ((performance.now() - t) / 1000);
    await nc.close();
    return { suite: 'nats-publish', messages: n, bus_publish_per_s: Math.round(busRate), js_publish_per_s: Math.round(jsRate) };
  } finally {
    await server.close();
  }
}
