/**
 * One pool agent for the pool benchmark, in its own process: the same code as
 * `caravan agent pool` (startPoolAgent), plus the moment of each success's publish on the
 * shared wall clock (performance.timeOrigin + now(), microsecond resolution), which it
 * writes to stdout as JSON when the parent sends SIGTERM.
 * argv: <nats url> <workflow> <pool> <concurrency>
 */
import { startPoolAgent } from '../../agents/agentCommand.js';
import { connectJetStream } from '../../engine/nats/connectJetStream.js';
import { natsConnectionOptions } from '../../engine/nats/natsConnectionOptions.js';

const [url, workflow, pool, concurrency] = process.argv.slice(2);
const succeededAt: Record<string, number> = {};
const nats = await connectJetStream({ connection: await natsConnectionOptions({}, [url!]) });
const bus = nats.bus;
const publish = bus.publish.bind(bus);
bus.publish = (subject, e, o) => {
  if (e.type === 'task.succeeded') succeededAt[`${e.runId}/${e.task}`] = performance.timeOrigin + performance.now();
  return publish(subject, e, o);
};
const stop = await startPoolAgent(nats.workQueue, bus, workflow!, pool!, Number(concurrency));
process.stdout.write('ready\n');
await new Promise<void>((r) => process.once('SIGTERM', r));
await stop();
await nats.close();
process.stdout.write(JSON.stringify(succeededAt) + '\n');
