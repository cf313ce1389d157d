import { startPoolAgent } from '../../agents/agentCommand.js';
import { JetStreamBus } from '../../engine/nats/JetStreamBus.js';
import { natsConnectionOptions } from '../../engine/nats/natsConnectionOptions.js';
import { NomadClient } from '../../engine/nomad/NomadClient.js';
import { NomadExecutor } from '../../engine/nomad/NomadExecutor.js';
import { LocalExecutor } from '../../engine/local/LocalExecutor.js';
import { realClock } from '../../engine/run/Clock.js';
import type { Executor } from '../../engine/run/Executor.js';
import { RunEngine } from '../../engine/run/RunEngine.js';
import { buildRunPlan } from '../../engine/run/RunPlan.js';
import { validateText } from '../../engine/spec/validateWorkflows.js';
import { NatsServer, requireServer } from '../harness/natsServer.js';
import { percentile, round } from './stats.js';

export interface PoolResult {
  suite: 'pool';
  tasks: number;
  tasks_per_s: number;
  coord_p50_ms: number;
  coord_p99_ms: number;
}

/**
 * 10,000 `noop` tasks (100 independent chains of 100) through an agent pool on a real
 * nats-server: the engine queues each attempt on the pool's work queue, four in-process pool
 * agents (64 at a time each) take them and report over JetStream. Coordination overhead:
 * from an agent publishing a task's success to the engine queueing its successor.
 */
export async function poolBench(chains = 100, length = 100): Promise<PoolResult> {
  if (!requireServer('nats-server', 'apt-get install -y nats-server')) throw new Error('nats-server is required');
  const server = await NatsServer.start();
  try {
    const tasks: string[] = [];
    for (let c = 0; c < chains; c++) for (let i = 0; i < length; i++) tasks.push(`    - { name: c${c}-${i}, pool: p, agent: noop${i > 0 ? `, needs: [c${c}-${i - 1}]` : ''} }\n`);
    const wf = validateText('pool.yaml', `apiVersion: caravan/v1\nkind: Workflow\nmetadata:\n  name: poolbench\nspec:\n  pools:\n    p: { count: 4, concurrency: 64 }\n  tasks:\n${tasks.join('')}`).workflow!;
    const plan = buildRunPlan(wf, { maxParallel: 256 });
    const connection = await natsConnectionOptions({}, [server.url]);
    const bus = await JetStreamBus.connect({ connection });
    const agents = await Promise.all(Array.from({ length: 4 }, async () => {
      const b = await JetStreamBus.connect({ connection });
      return { b, stop: await startPoolAgent(b, 'poolbench', 'p', 64) };
    }));
    const succeededAt = new Map<string, number>();
    bus.subscribe('caravan.ev.poolbench.>', (e) => {
      if (e.type === 'task.succeeded') succeededAt.set(e.task, performance.now());
    });
    const queuedAt = new Map<string, number>();
    const clock = realClock();
    const nomad = new NomadExecutor(new NomadClient({ address: 'http://127.0.0.1:1' }), bus, clock, { natsServers: [server.url], fallback: new LocalExecutor(bus, clock, { baseDir: process.cwd() }), enqueueWork: (w, p, item) => bus.enqueueWork(w, p, item) });
    const executor: Executor = {
      start(req) {
        queuedAt.set(req.dispatch.instance, performance.now());
        nomad.start(req);
      },
      cancel: (r, i, a) => nomad.cancel(r, i, a),
      close: () => nomad.close(),
    };
    const engine = new RunEngine({ plan, runId: 'poolbench', executor, bus, clock, publishDecisions: false, tickMs: 60_000 });
    const t0 = performance.now();
    engine.start({}, 'bench');
    const state = await engine.done();
    const wall = (performance.now() - t0) / 1000;
    if (state.status !== 'succeeded') throw new Error(`run ${state.status}`);
    const overheads: number[] = [];
    for (const t of plan.tasks.values()) {
      const need = t.needs[0];
      if (need === undefined || !succeededAt.has(need)) continue;
      overheads.push(queuedAt.get(t.name)! - succeededAt.get(need)!);
    }
    for (const a of agents) {
      await a.stop();
      await a.b.close();
    }
    await bus.close();
    return { suite: 'pool', tasks: plan.tasks.size, tasks_per_s: Math.round(plan.tasks.size / wall), coord_p50_ms: round(percentile(overheads, 50), 2), coord_p99_ms: round(percentile(overheads, 99), 2) };
  } finally {
    await server.close();
  }
}
