import { maskSecrets } from './maskSecrets.js';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentRegistry } from './builtinAgents.js';
import { environmentSecrets, prepareAction } from './prepareAction.js';
import type { AgentResult } from './AgentType.js';
import { JetStreamBus, PoolAgentStopping, type WorkItem } from '../engine/nats/JetStreamBus.js';
import { natsConnectionOptions } from '../engine/nats/natsConnectionOptions.js';
import { eventSubject } from '../engine/run/Bus.js';
import type { ExpressionContext } from '../engine/run/evaluate.js';
import { eventId, type RunEvent } from '../engine/run/RunEvent.js';
import { parseDuration } from '../engine/spec/parseDuration.js';
import type { TaskSpec } from '../engine/spec/Workflow.js';

/** What the engine sends with each dispatch (the Nomad dispatch payload). */
export interface DispatchPayload {
  runId: string;
  workflow: string;
  /** Instance key: the task name, or `name[i]` for a forEach item. */
  instance: string;
  attempt: number;
  kind: 'task' | 'compensate';
  /** The attempt's context; absent when it was too large for Nomad's payload (see contextRef). */
  context?: ExpressionContext;
  /** Key of the context on the CARAVAN_CONTEXT stream, when it did not fit the payload. */
  contextRef?: string;
  /** NATS servers to report to (credentials come from the allocation's environment). */
  nats: string[];
}

interface ParsedArgs {
  action: string;
  flags: Map<string, string[]>;
  command: string[];
}

function parse(argv: readonly string[]): ParsedArgs {
  const [action, ...rest] = argv;
  const flags = new Map<string, string[]>();
  let i = 0;
  while (i < rest.length && rest[i] !== '--') {
    const f = rest[i]!;
    const v = rest[i + 1] ?? '';
    flags.set(f, [...(flags.get(f) ?? []), v]);
    i += 2;
  }
  return { action: action ?? '', flags, command: rest.slice(i + 1) };
}

/** Rebuilds the task from the runner's arguments, as compiled into the Nomad job. */
function taskFrom(p: ParsedArgs): TaskSpec {
  const one = (f: string): string | undefined => p.flags.get(f)?.[0];
  const task: TaskSpec = { name: one('--task') ?? 'task' };
  const outputs = one('--outputs');
  if (outputs !== undefined) task.outputs = outputs.split(',');
  const timeout = one('--timeout');
  if (timeout !== undefined) task.timeout = timeout;
  const cwd = one('--cwd');
  if (cwd !== undefined) task.workingDir = cwd;
  const env: Record<string, { fromHost: string }> = {};
  for (const kv of p.flags.get('--env-from-host') ?? []) {
    const eq = kv.indexOf('=');
    env[kv.slice(0, eq)] = { fromHost: kv.slice(eq + 1) };
  }
  if (Object.keys(env).length > 0) task.env = env;
  switch (p.action) {
    case 'shell':
      task.run = p.command.join(' ');
      break;
    case 'exec':
      task.args = p.command;
      break;
    case 'http': {
      const headers: Record<string, string> = {};
      for (const h of p.flags.get('--header') ?? []) headers[h.slice(0, h.indexOf(':'))] = h.slice(h.indexOf(':') + 1).trim();
      for (const h of p.flags.get('--header-from-env') ?? []) {
        const eq = h.indexOf('=');
        headers[h.slice(0, eq)] = process.env[h.slice(eq + 1)] ?? '';
      }
      const body = one('--body');
      task.http = { url: one('--url') ?? '', method: (one('--method') ?? 'GET') as 'GET', headers, ...(body !== undefined ? { body } : {}) };
      break;
    }
    case 'sleep':
      task.sleep = one('--duration') ?? '0s';
      break;
    case 'noop':
      task.agent = 'noop';
      break;
    default:
      task.agent = one('--type') ?? p.action;
      task.with = JSON.parse(one('--with') ?? '{}') as Record<string, unknown>;
  }
  return task;
}

/**
 * `caravan agent <action> ... --payload FILE [-- command]`: the task runner inside a Nomad
 * allocation. It reads the attempt's context from the dispatch payload, runs the action with
 * the agent registry, and reports started, heartbeats, logs and the result on NATS JetStream
 * (ids `<run>:<task>:<attempt>:<event>`, so a report sent twice is stored once). Its exit code
 * is the task's: 0 on success.
 */
export async function agentCommand(argv: readonly string[], log: (s: string) => void): Promise<number> {
  const p = parse(argv);
  if (p.action === 'pool') return poolAgent(p, log);
  const payloadFile = p.flags.get('--payload')?.[0];
  if (payloadFile === undefined) {
    log('caravan agent: --payload is required\n');
    return 64;
  }
  const payload = JSON.parse(await readFile(payloadFile, 'utf8')) as DispatchPayload;
  const bus = await JetStreamBus.connect({ connection: await natsConnectionOptions(process.env, payload.nats) });
  const task = taskFrom(p);
  const context = payload.contextRef !== undefined ? (JSON.parse(await bus.getContext(payload.contextRef)) as ExpressionContext) : payload.context ?? {};
  const { result } = await runOne(bus, { runId: payload.runId, workflow: payload.workflow, instance: payload.instance, attempt: payload.attempt, task, context, ...(task.timeout !== undefined ? { timeoutMs: parseDuration(task.timeout)! } : {}) }, undefined, p.flags.get('--mask-env') ?? []);
  // A runner must not outlive its reports forever: without NATS its allocation ends with
  // EX_TEMPFAIL, which the controller's watch of Nomad turns into a failed (retried) attempt.
  const waitS = secondsFromEnv('CARAVAN_REPORT_TIMEOUT_S', 120);
  const delivered = await bus.flushWithin(waitS * 1000);
  await bus.close();
  if (!delivered) {
    log(`caravan agent: could not deliver the attempt's reports to NATS within ${waitS} s; giving up\n`);
    return 75;
  }
  return result.ok ? 0 : 1;
}

/** A duration in seconds from the environment; `fallback` when unset or not a usable number. */
function secondsFromEnv(name: string, fallback: number, o: { zero?: boolean } = {}): number {
  const s = Number(process.env[name] ?? fallback);
  return Number.isFinite(s) && (s > 0 || (o.zero === true && s === 0)) ? s : fallback;
}

const agents = new AgentRegistry();
const host = hostname();
const REPORT_START_AFTER_MS = 100;
const HEARTBEAT_MS = 5000;

interface InFlight {
  startedAt: number;
  lastBeat: number;
  sendStarted: () => void;
  beat: () => void;
}

/**
 * One timer for every attempt this runner has in flight (a pool agent runs many): it sends
 * an attempt's `task.started` once it has run REPORT_START_AFTER_MS, and a heartbeat every
 * HEARTBEAT_MS. Two timers per attempt cost a pool of short tasks more than the tasks.
 */
const inFlight = new (class {
  private readonly attempts = new Set<InFlight>();
  private timer: NodeJS.Timeout | undefined;

  watch(a: InFlight): void {
    this.attempts.add(a);
    this.timer ??= setInterval(() => this.tick(), REPORT_START_AFTER_MS / 2);
  }

  forget(a: InFlight): void {
    this.attempts.delete(a);
    if (this.attempts.size === 0 && this.timer !== undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private tick(): void {
    const now = Date.now();
    for (const a of this.attempts) {
      if (now - a.startedAt >= REPORT_START_AFTER_MS) a.sendStarted();
      if (now - a.lastBeat >= HEARTBEAT_MS) {
        a.lastBeat = now;
        a.beat();
      }
    }
  }
})();
/** The allocation's task directory, under Nomad. */
const taskDir = process.env['NOMAD_TASK_DIR'];
const scratchRoot = taskDir ?? tmpdir();

/**
 * Runs one attempt with the agent registry and reports it on the bus: started, a heartbeat
 * every 5 s, log lines (at most 1,000), and the result. Used for dispatched tasks and, once
 * per work item, by pool agents. `reported` settles once the result is stored; it is absent
 * when a stopping pool agent handed the attempt back (the result is then not reported).
 */
async function runOne(bus: JetStreamBus, item: WorkItem, signal: AbortSignal = new AbortController().signal, maskEnv: readonly string[] = []): Promise<{ result: AgentResult; reported?: Promise<void> }> {
  const subject = eventSubject(item.workflow, item.runId, item.instance);
  const base = { runId: item.runId, task: item.instance, attempt: item.attempt };
  let logged = 0;
  const publish = (e: RunEvent): Promise<void> => bus.publish(subject, e, { msgId: eventId(e), origin: 'agent' });
  // A task that ends within REPORT_START_AFTER_MS reports once (its result, with startedAt):
  // for a pool of short tasks that is a third fewer messages to store and apply.
  const startedAt = Date.now();
  let startSent = false;
  const sendStarted = (): void => {
    if (startSent) return;
    startSent = true;
    void publish({ ...base, type: 'task.started', at: startedAt });
  };
  const watch: InFlight = { startedAt, lastBeat: startedAt, sendStarted, beat: () => void publish({ ...base, type: 'task.heartbeat', at: Date.now() }) };
  inFlight.watch(watch);
  let result: AgentResult;
  // Secret values this attempt can see: those it resolved itself (a pool item's
  // `{secret: ...}` env) and those Nomad put in its environment (`--mask-env NAME`).
  const secrets: string[] = maskEnv.map((k) => process.env[k]).filter((v): v is string => v !== undefined);
  try {
    const env = item.defaultsEnv as TaskSpec['env'];
    const prepared = prepareAction(item.task as TaskSpec, 'task', item.context as ExpressionContext, { ...(env !== undefined ? { env } : {}), ...(item.timeoutMs !== undefined ? { timeoutMs: item.timeoutMs } : {}) }, environmentSecrets);
    secrets.push(...prepared.secrets);
    const agent = agents.get(prepared.action.agent);
    if (agent === undefined) throw new Error(`unknown agent type '${prepared.action.agent}'`);
    // Only the shell agent writes files (its outputs file); a pool of built-in agents should
    // not pay for a directory per attempt.
    const scratch = agent.name === 'shell' ? await mkdtemp(join(scratchRoot, 'attempt-')) : undefined;
    try {
      result = await agent.run(prepared.action, {
        log: (stream, line) => {
          sendStarted();
          const masked = maskSecrets(line, secrets);
          if (logged++ < 1000) void publish({ ...base, type: 'task.log', at: Date.now() + logged / 1000, stream, line: masked });
          (stream === 'stderr' ? process.stderr : process.stdout).write(masked + '\n');
        },
        signal,
        scratchDir: scratch ?? scratchRoot,
        baseDir: taskDir ?? process.cwd(),
      });
    } finally {
      if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
    }
  } catch (e) {
    result = { ok: false, error: (e as Error).message, retryable: false };
  }
  inFlight.forget(watch);
  if (signal.aborted && signal.reason instanceof PoolAgentStopping) return { result };
  const at = Date.now();
  const start = startSent ? {} : { startedAt };
  const reported = result.ok
    ? publish({ ...base, type: 'task.succeeded', at, outputs: result.outputs, ...(result.exitCode !== undefined ? { exitCode: result.exitCode } : {}), ...start })
    : publish({ ...base, type: 'task.failed', at, error: `${maskSecrets(result.error, secrets)} (on ${host})`, retryable: result.retryable, ...(result.exitCode !== undefined ? { exitCode: result.exitCode } : {}), ...start });
  return { result, reported };
}

/** One pool agent's work loop on an open bus (also used in-process by the pool benchmark). */
export function startPoolAgent(bus: JetStreamBus, workflow: string, pool: string, concurrency: number): Promise<(drainMs?: number) => Promise<void>> {
  return bus.consumeWork(workflow, pool, concurrency, async (item, signal) => {
    const { reported } = await runOne(bus, item, signal);
    return reported !== undefined ? { reported } : {};
  });
}

/**
 * `caravan agent pool --workflow W --pool P --concurrency N --health-port PORT`: one agent of
 * a pool (a Nomad service allocation). It answers /health for the Consul check, takes work
 * items from the pool's queue, runs them with runOne, and stops cleanly on SIGTERM/SIGINT.
 */
async function poolAgent(p: ParsedArgs, log: (s: string) => void): Promise<number> {
  const one = (f: string): string | undefined => p.flags.get(f)?.[0];
  const workflow = one('--workflow');
  const pool = one('--pool');
  if (workflow === undefined || pool === undefined) {
    log('caravan agent pool: --workflow and --pool are required\n');
    return 64;
  }
  const concurrency = Number(one('--concurrency') ?? '1');
  const health = createServer((req, res) => {
    res.statusCode = req.url === '/health' ? 200 : 404;
    res.end(req.url === '/health' ? 'ok\n' : '');
  });
  await new Promise<void>((r) => health.listen(Number(one('--health-port') ?? '0'), '0.0.0.0', r));
  // How long a taken item may go without word from its agent before another agent gets it.
  const bus = await JetStreamBus.connect({ connection: await natsConnectionOptions(process.env), workAckWaitMs: secondsFromEnv('CARAVAN_WORK_ACK_WAIT_S', 30) * 1000 });
  const stop = await startPoolAgent(bus, workflow, pool, concurrency);
  await new Promise<void>((r) => {
    process.once('SIGTERM', r);
    process.once('SIGINT', r);
  });
  // Stopped (a scale-down, a new job version): what runs gets CARAVAN_DRAIN_S to finish,
  // within the 30 s kill_timeout of the compiled pool job; the rest goes back to the queue.
  await stop(secondsFromEnv('CARAVAN_DRAIN_S', 25, { zero: true }) * 1000);
  await bus.close();
  health.close();
  return 0;
}
