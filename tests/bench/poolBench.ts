import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startPoolAgent } from '../../agents/agentCommand.js';
import { JetStreamBus } from '../../engine/nats/JetStreamBus.js';
import { natsConnectionOptions } from '../../engine/nats/natsConnectionOptions.js';
import { NomadClient } from '../../engine/nomad/NomadClient.js';
import { NomadExecutor } from '../../engine/nomad/NomadExecutor.js';
import { LocalExecutor } from '../../engine/local/LocalExecutor.js';
import { realClock } from '../../engine/run/Clock.js';
import type { Executor } from '../../engine/run/Executor.js';
import { RunEngine } from '../../engine/run/RunEngine.js';
import { buildRunPlan, type RunPlan } from '../../engine/run/RunPlan.js';
import { validateText } from '../../engine/spec/validateWorkflows.js';
import { NatsServer, requireServer } from '../harness/natsServer.js';
import { median, percentile, round } from './stats.js';

const AGENTS = Number(process.env['POOL_AGENTS'] ?? 1);
const CONCURRENCY = Number(process.env['POOL_CONCURRENCY'] ?? 6);
const ROUNDS = Number(process.env['POOL_ROUNDS'] ?? 5);
const WARMUP = Number(process.env['POOL_WARMUP'] ?? 1);

/** One run of the 10,000-task DAG. */
export interface PoolRound {
  tasks_per_s: number;
  coord_p50_ms: number;
  coord_p99_ms: number;
  /** The engine's part alone: from receiving a success to publishing the successor. */
  engine_p50_ms: number;
  engine_p99_ms: number;
  /** CPU time per task of this process (engine, in-process agents, bench) and of nats-server. */
  node_cpu_us_per_task: number;
  server_cpu_us_per_task: number;
}

/** The medians over the rounds, and every round. */
export interface PoolResult extends PoolRound {
  suite: 'pool';
  tasks: number;
  agents: number;
  concurrency: number;
  rounds: PoolRound[];
  /** Rounds run first and left out of the medians: a cold process is still compiling its hot paths. */
  warmup: PoolRound[];
}

/** CPU time (user + system) of another process so far, in microseconds. */
function processCpuUs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10_000; // clock ticks of 10 ms
}

/**
 * 10,000 `noop` tasks (100 independent chains of 100) through an agent pool on a real
 * nats-server, POOL_ROUNDS times (default 5; the figures are the medians) after POOL_WARMUP
 * rounds (default 1) that are reported but not counted: the engine queues
 * each attempt on the pool's work queue, pool agents (POOL_AGENTS, default 1, each
 * POOL_CONCURRENCY at a time, default 6; in this process, or real `caravan agent pool`
 * processes with POOL_AGENT_PROCESSES=1) take them and report over JetStream. Coordination
 * overhead: from an agent publishing a task's success to the engine queueing its successor.
 */
export async function poolBench(chains = 100, length = 100): Promise<PoolResult> {
  if (!requireServer('nats-server', 'apt-get install -y nats-server')) throw new Error('nats-server is required');
  const server = await NatsServer.start();
  try {
    const tasks: string[] = [];
    for (let c = 0; c < chains; c++) for (let i = 0; i < length; i++) tasks.push(`    - { name: c${c}-${i}, pool: p, agent: noop${i > 0 ? `, needs: [c${c}-${i - 1}]` : ''} }\n`);
    const wf = validateText('pool.yaml', `apiVersion: caravan/v1\nkind: Workflow\nmetadata:\n  name: poolbench\nspec:\n  pools:\n    p: { count: 4, concurrency: 64 }\n  tasks:\n${tasks.join('')}`).workflow!;
    // The workflow gives the pool room for all 100 chains (4 x 64), so the engine queues each
    // successor as soon as its need succeeds and the figure holds no wait for capacity; the
    // agents actually taking work are POOL_AGENTS x POOL_CONCURRENCY, and the backlog waits
    // in the work queue.
    const plan = buildRunPlan(wf, { maxParallel: 256 });
    const connection = await natsConnectionOptions({}, [server.url]);
    const bus = await JetStreamBus.connect({ connection });
    await bus.ensureWorkStream();
    const succeededAt = new Map<string, number>();
    const inProcess = process.env['POOL_AGENT_PROCESSES'] !== '1';
    // In-process agents by default (on two cores, separate processes mostly add context
    // switches); POOL_AGENT_PROCESSES=1 runs real `caravan agent pool` processes instead.
    const agents = !inProcess
      ? Array.from({ length: AGENTS }, () => {
        const child = spawn(process.execPath, [fileURLToPath(new URL('../../bin/caravan.js', import.meta.url)), 'agent', 'pool', '--workflow', 'poolbench', '--pool', 'p', '--concurrency', String(CONCURRENCY)], { env: { ...process.env, NATS_URL: server.url }, stdio: ['ignore', 'inherit', 'inherit'] });
        return { stop: () => new Promise<void>((r) => { child.once('exit', () => r()); child.kill('SIGTERM'); }) };
      })
      : await Promise.all(Array.from({ length: AGENTS }, async () => {
        const b = await JetStreamBus.connect({ connection });
        // The moment a task succeeds is when its agent publishes the result.
        const publish = b.publish.bind(b);
        b.publish = (subject, e, o) => {
          if (e.type === 'task.succeeded') succeededAt.set(e.task, performance.now());
          return publish(subject, e, o);
        };
        const stop = await startPoolAgent(b, 'poolbench', 'p', CONCURRENCY);
        return { stop: async () => { await stop(); await b.close(); } };
      }));
    if (!inProcess) {
      // Agents in other processes: the engine process sees a success when it arrives.
      bus.subscribe('caravan.ev.poolbench.>', (e) => {
        if (e.type === 'task.succeeded') succeededAt.set(e.task, performance.now());
      });
    }
    const queuedAt = new Map<string, number>();
    const receivedAt = new Map<string, number>();
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
    // When the engine itself receives each success: splits the overhead into NATS transit
    // (agent publish to engine receipt) and the engine's own part (receipt to the next publish).
    const observed = Object.create(bus) as JetStreamBus;
    observed.subscribe = (pattern, handler) => bus.subscribe(pattern, (e, meta) => {
      if (e.type === 'task.succeeded') receivedAt.set(e.task, performance.now());
      handler(e, meta);
    });
    const rounds: PoolRound[] = [];
    const warmup: PoolRound[] = [];
    for (let r = 0; r < WARMUP + ROUNDS; r++) {
      succeededAt.clear();
      queuedAt.clear();
      receivedAt.clear();
      const engine = new RunEngine({ plan, runId: `poolbench-${r}`, executor, bus: observed, clock, publishDecisions: false, tickMs: 60_000 });
      const server0 = processCpuUs(server.pid!);
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      engine.start({}, 'bench');
      const state = await engine.done();
      const wall = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      const serverUs = processCpuUs(server.pid!) - server0;
      if (state.status !== 'succeeded') throw new Error(`run ${state.status}`);
      (r < WARMUP ? warmup : rounds).push(measure(plan, wall, { succeededAt, receivedAt, queuedAt }, (cpu.user + cpu.system) / plan.tasks.size, serverUs / plan.tasks.size));
    }
    await Promise.all(agents.map((a) => a.stop()));
    await bus.close();
    const mid = (k: keyof PoolRound, digits: number): number => round(median(rounds.map((x) => x[k])), digits);
    return {
      suite: 'pool',
      tasks: plan.tasks.size,
      tasks_per_s: Math.round(mid('tasks_per_s', 0)),
      coord_p50_ms: mid('coord_p50_ms', 2),
      coord_p99_ms: mid('coord_p99_ms', 2),
      engine_p50_ms: mid('engine_p50_ms', 2),
      engine_p99_ms: mid('engine_p99_ms', 2),
      node_cpu_us_per_task: mid('node_cpu_us_per_task', 0),
      server_cpu_us_per_task: mid('server_cpu_us_per_task', 0),
      agents: AGENTS,
      concurrency: CONCURRENCY,
      rounds,
      warmup,
    };
  } finally {
    await server.close();
  }
}

function measure(plan: RunPlan, wall: number, at: { succeededAt: Map<string, number>; receivedAt: Map<string, number>; queuedAt: Map<string, number> }, nodeUs: number, serverUs: number): PoolRound {
  const overheads: number[] = [];
  const inEngine: number[] = [];
  for (const t of plan.tasks.values()) {
    const need = t.needs[0];
    if (need === undefined || !at.succeededAt.has(need)) continue;
    overheads.push(at.queuedAt.get(t.name)! - at.succeededAt.get(need)!);
    inEngine.push(at.queuedAt.get(t.name)! - at.receivedAt.get(need)!);
  }
  return {
    tasks_per_s: Math.round(plan.tasks.size / wall),
    coord_p50_ms: round(percentile(overheads, 50), 2),
    coord_p99_ms: round(percentile(overheads, 99), 2),
    engine_p50_ms: round(percentile(inEngine, 50), 2),
    engine_p99_ms: round(percentile(inEngine, 99), 2),
    node_cpu_us_per_task: Math.round(nodeUs),
    server_cpu_us_per_task: Math.round(serverUs),
  };
}
