import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startPoolAgent } from '../../agents/agentCommand.js';
import { connectJetStream } from '../../engine/nats/connectJetStream.js';
import type { JetStreamBus } from '../../engine/nats/JetStreamBus.js';
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
const CONCURRENCY = Number(process.env['POOL_CONCURRENCY'] ?? 5);
const ROUNDS = Number(process.env['POOL_ROUNDS'] ?? 5);
const WARMUP = Number(process.env['POOL_WARMUP'] ?? 1);
/**
 * nats-server's GOMAXPROCS, empty (the default) for Go's own, one thread per core. With 1,
 * on a two-core machine that the broker, the engine and the agents share, the broker's
 * goroutine hand-offs stay on one core instead of preempting the engine's thread on the
 * other, as a broker on a machine of its own would.
 */
const NATS_GOMAXPROCS = process.env['POOL_NATS_GOMAXPROCS'] ?? '';

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
  agent_processes: boolean;
  /** nats-server's GOMAXPROCS ('' for Go's default). */
  nats_gomaxprocs: string;
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
 * rounds (default 1) that are reported but not counted. The engine queues each attempt on
 * the pool's work queue; pool agents (POOL_AGENTS, default 1, each POOL_CONCURRENCY at a
 * time, default 5; in this process, or each in a process of its own with
 * POOL_AGENT_PROCESSES=1) take them and report over JetStream. Coordination overhead: from
 * an agent publishing a task's success to the engine queueing its successor.
 */
export async function poolBench(chains = 100, length = 100): Promise<PoolResult> {
  if (!requireServer('nats-server', 'apt-get install -y nats-server')) throw new Error('nats-server is required');
  const server = await NatsServer.start(undefined, NATS_GOMAXPROCS === '' ? {} : { env: { GOMAXPROCS: NATS_GOMAXPROCS } });
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
    const nats = await connectJetStream({ connection });
    const bus = nats.bus;
    await nats.workQueue.ensureStream();
    const times = new Timings([...plan.tasks.keys()], WARMUP + ROUNDS);
    const now = (): number => performance.timeOrigin + performance.now();
    const inProcess = process.env['POOL_AGENT_PROCESSES'] !== '1';
    // In-process agents by default; POOL_AGENT_PROCESSES=1 runs each agent in a process of
    // its own (startPoolAgent, as in `caravan agent pool`), which reports when it published
    // each success once it is stopped.
    const agents = !inProcess
      ? await Promise.all(Array.from({ length: AGENTS }, async () => {
        const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./poolAgentChild.ts', import.meta.url)), server.url, 'poolbench', 'p', String(CONCURRENCY)], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        child.stdout.on('data', (c: Buffer) => { out += c.toString(); });
        const exited = new Promise<void>((r) => child.once('exit', () => r()));
        while (!out.includes('ready\n')) await new Promise((r) => setTimeout(r, 20));
        return {
          stop: async () => {
            child.kill('SIGTERM');
            await exited;
            const published = JSON.parse(out.slice(out.indexOf('ready\n') + 6)) as Record<string, number>;
            for (const [k, v] of Object.entries(published)) times.set('succeeded', k.slice(0, k.indexOf('/')), k.slice(k.indexOf('/') + 1), v);
          },
        };
      }))
      : await Promise.all(Array.from({ length: AGENTS }, async () => {
        const n = await connectJetStream({ connection });
        const b = n.bus;
        // The moment a task succeeds is when its agent publishes the result.
        const publish = b.publish.bind(b);
        b.publish = (subject, e, o) => {
          if (e.type === 'task.succeeded') times.set('succeeded', e.runId, e.task, now());
          return publish(subject, e, o);
        };
        const stop = await startPoolAgent(n.workQueue, b, 'poolbench', 'p', CONCURRENCY);
        return { stop: async () => { await stop(); await n.close(); } };
      }));
    const clock = realClock();
    const nomad = new NomadExecutor(new NomadClient({ address: 'http://127.0.0.1:1' }), bus, clock, { natsServers: [server.url], fallback: new LocalExecutor(bus, clock, { baseDir: process.cwd() }), workQueue: nats.workQueue });
    const executor: Executor = {
      start(req) {
        times.set('queued', req.runId, req.dispatch.instance, now());
        nomad.start(req);
      },
      cancel: (r, i, a) => nomad.cancel(r, i, a),
      close: () => nomad.close(),
    };
    // When the engine itself receives each success: splits the overhead into NATS transit
    // (agent publish to engine receipt) and the engine's own part (receipt to the next publish).
    const observed = Object.create(bus) as JetStreamBus;
    observed.subscribe = (pattern, handler) => bus.subscribe(pattern, (e, meta) => {
      if (e.type === 'task.succeeded') times.set('received', e.runId, e.task, now());
      handler(e, meta);
    });
    const runs: Array<{ runId: string; wall: number; nodeUs: number; serverUs: number }> = [];
    for (let r = 0; r < WARMUP + ROUNDS; r++) {
      const runId = `poolbench-${r}`;
      const engine = new RunEngine({ plan, runId, executor, bus: observed, clock, publishDecisions: false, tickMs: 60_000 });
      const server0 = processCpuUs(server.pid!);
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      engine.start({}, 'bench');
      const state = await engine.done();
      const wall = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      const serverUs = processCpuUs(server.pid!) - server0;
      if (state.status !== 'succeeded') throw new Error(`run ${state.status}`);
      runs.push({ runId, wall, nodeUs: (cpu.user + cpu.system) / plan.tasks.size, serverUs: serverUs / plan.tasks.size });
    }
    await Promise.all(agents.map((a) => a.stop()));
    await nats.close();
    const all = runs.map((x, r) => measure(plan, r, x.wall, times, x.nodeUs, x.serverUs));
    const warmup = all.slice(0, WARMUP);
    const rounds = all.slice(WARMUP);
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
      agent_processes: !inProcess,
      nats_gomaxprocs: NATS_GOMAXPROCS,
      rounds,
      warmup,
    };
  } finally {
    await server.close();
  }
}

/**
 * When each task's success was published, reached the engine, and the task was queued, per
 * round, on the wall clock shared with agent processes. Typed arrays indexed by task rather
 * than maps of strings: the bench should not feed the garbage collector it is measuring.
 */
class Timings {
  private readonly index = new Map<string, number>();
  private readonly at: Record<'succeeded' | 'received' | 'queued', Float64Array[]>;

  constructor(readonly tasks: string[], rounds: number) {
    tasks.forEach((t, i) => this.index.set(t, i));
    const arrays = (): Float64Array[] => Array.from({ length: rounds }, () => new Float64Array(tasks.length).fill(Number.NaN));
    this.at = { succeeded: arrays(), received: arrays(), queued: arrays() };
  }

  set(kind: 'succeeded' | 'received' | 'queued', runId: string, task: string, t: number): void {
    this.at[kind][Number(runId.slice(runId.lastIndexOf('-') + 1))]![this.index.get(task)!] = t;
  }

  get(kind: 'succeeded' | 'received' | 'queued', round: number, task: string): number {
    return this.at[kind][round]![this.index.get(task)!]!;
  }
}

function measure(plan: RunPlan, r: number, wall: number, times: Timings, nodeUs: number, serverUs: number): PoolRound {
  const overheads: number[] = [];
  const inEngine: number[] = [];
  for (const t of plan.tasks.values()) {
    const need = t.needs[0];
    if (need === undefined) continue;
    const queued = times.get('queued', r, t.name);
    overheads.push(queued - times.get('succeeded', r, need));
    inEngine.push(queued - times.get('received', r, need));
  }
  if (overheads.some((x) => !Number.isFinite(x))) throw new Error(`round ${r}: a success or a successor was not timed`);
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
