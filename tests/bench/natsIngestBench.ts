import { jetstream, jetstreamManager, AckPolicy, DeliverPolicy } from '@nats-io/jetstream';
import { connectJetStream } from '../../engine/nats/connectJetStream.js';
import { natsConnectionOptions } from '../../engine/nats/natsConnectionOptions.js';
import { eventSubject, runSubjects } from '../../engine/run/Bus.js';
import { applyRunEvent, initialRunState } from '../../engine/run/reduceRun.js';
import { eventId, type RunEvent } from '../../engine/run/RunEvent.js';
import { buildRunPlan } from '../../engine/run/RunPlan.js';
import { validateText } from '../../engine/spec/validateWorkflows.js';
import { NatsServer, requireServer } from '../harness/natsServer.js';

export interface IngestResult {
  suite: 'nats-ingest';
  events: number;
  events_per_s: number;
  raw_consume_per_s: number;
}

/**
 * Task events consumed from JetStream and reduced by the run engine, against a real
 * nats-server started for the purpose. The stream is filled first (pipelined publishes);
 * then the engine's consumer (durable pull, batched acks, JSON decode, reducer) is timed
 * until every event is applied, and a plain nats.js consumer of the same messages
 * (no decode, no reduce) is timed for comparison.
 */
export async function natsIngestBench(events = 100_000): Promise<IngestResult> {
  if (!requireServer('nats-server', 'apt-get install -y nats-server')) throw new Error('nats-server is required');
  const server = await NatsServer.start();
  try {
    const tasks = events / 2;
    const body = Array.from({ length: tasks }, (_, i) => `    - { name: t${i}, agent: noop }\n`).join('');
    const wf = validateText('ingest.yaml', `apiVersion: caravan/v1\nkind: Workflow\nmetadata:\n  name: ingest\nspec:\n  tasks:\n${body}`).workflow!;
    const plan = buildRunPlan(wf, { maxParallel: tasks });
    const state = initialRunState(plan, 'ingest');
    applyRunEvent(state, plan, { runId: 'ingest', at: 1, type: 'run.started', workflow: 'ingest', params: {}, trigger: 'bench' });
    // The engine queued every task; agents then report started and succeeded for each.
    for (let i = 0; i < tasks; i++) applyRunEvent(state, plan, { runId: 'ingest', at: 2, type: 'task.queued', task: `t${i}`, attempt: 1 });

    const nats = await connectJetStream({ connection: await natsConnectionOptions({}, [server.url]) });
    const bus = nats.bus;
    for (let i = 0; i < tasks; i++) {
      for (const e of [
        { runId: 'ingest', at: 3, type: 'task.started', task: `t${i}`, attempt: 1 },
        { runId: 'ingest', at: 4, type: 'task.succeeded', task: `t${i}`, attempt: 1, outputs: {} },
      ] as RunEvent[]) bus.publish(eventSubject('ingest', 'ingest', `t${i}`), e, { msgId: eventId(e), origin: 'agent' });
      if (i % 5000 === 0) await bus.flush();
    }
    await bus.flush();

    let applied = 0;
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      const stop = bus.subscribe(runSubjects('ingest', 'ingest'), (e) => {
        if (applyRunEvent(state, plan, e)) applied++;
        if (applied === events) {
          stop();
          resolve();
        }
      });
    });
    const engineS = (performance.now() - t0) / 1000;
    if (state.groups.get(`t${tasks - 1}`)!.status !== 'succeeded') throw new Error('events were not applied');

    const jsm = await jetstreamManager(nats.connection);
    await jsm.consumers.add('CARAVAN_EVENTS', { durable_name: 'raw', ack_policy: AckPolicy.None, deliver_policy: DeliverPolicy.All });
    const consumer = await jetstream(nats.connection).consumers.get('CARAVAN_EVENTS', 'raw');
    let raw = 0;
    const t1 = performance.now();
    await new Promise<void>((resolve) => {
      void consumer.consume({ max_messages: 1024, callback: (m) => {
        raw++;
        if (raw === events) {
          void m;
          resolve();
        }
      } });
    });
    const rawS = (performance.now() - t1) / 1000;
    await nats.close();
    return { suite: 'nats-ingest', events, events_per_s: Math.round(events / engineS), raw_consume_per_s: Math.round(events / rawS) };
  } finally {
    await server.close();
  }
}

