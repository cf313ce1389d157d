import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { hostname, tmpdir } from 'node:os';
import { AgentRegistry } from './builtinAgents.js';
import { environmentSecrets } from './prepareAction.js';
import { AttemptRunner } from './runAttempt.js';
import { realClock } from '../engine/run/Clock.js';
import { connectJetStream } from '../engine/nats/connectJetStream.js';
import { natsConnectionOptions } from '../engine/nats/natsConnectionOptions.js';
import type { Bus } from '../engine/run/Bus.js';
import { noopLogger, type Logger } from '../engine/run/Logger.js';
import type { ExpressionContext } from '../engine/run/evaluate.js';
import type { DispatchPayload } from '../engine/run/protocol.js';
import { PoolAgentStopping, type StopConsuming, type WorkQueue } from '../engine/run/WorkQueue.js';
import { parseDuration } from '../engine/spec/parseDuration.js';
import type { TaskSpec } from '../engine/spec/Workflow.js';

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
  const stdout = one('--stdout-output');
  if (stdout !== undefined) {
    const maxBytes = one('--stdout-max-bytes');
    task.outputs = [...(task.outputs ?? []), { name: stdout, from: 'stdout', ...(maxBytes !== undefined ? { maxBytes: Number(maxBytes) } : {}) }];
  }
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
  const nats = await connectJetStream({ connection: await natsConnectionOptions(process.env, payload.nats) });
  const bus = nats.bus;
  const task = taskFrom(p);
  const context = payload.contextRef !== undefined ? (JSON.parse(await nats.contexts.get(payload.contextRef)) as ExpressionContext) : payload.context ?? { params: {}, tasks: {}, run: {} };
  const runner = attemptRunner(bus, p.flags.get('--mask-env') ?? []);
  const { result } = await runner.run({ runId: payload.runId, workflow: payload.workflow, instance: payload.instance, attempt: payload.attempt, kind: 'task', task, context, ...(task.timeout !== undefined ? { timeoutMs: parseDuration(task.timeout)! } : {}) });
  runner.close();
  // A runner must not outlive its reports forever: without NATS its allocation ends with
  // EX_TEMPFAIL, which the controller's watch of Nomad turns into a failed (retried) attempt.
  const waitS = secondsFromEnv('CARAVAN_REPORT_TIMEOUT_S', 120);
  const delivered = await bus.flushWithin(waitS * 1000);
  await nats.close();
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
/** The allocation's task directory, under Nomad. */
const taskDir = process.env['NOMAD_TASK_DIR'];

/**
 * This process's attempt runner, reporting on `bus` as the agent: `task.started` once an
 * attempt has run 100 ms (a shorter one reports once), a heartbeat every 5 s, every log line
 * also on this process's output (Nomad keeps it), failures naming this host.
 */
function attemptRunner(bus: Bus, maskEnv: readonly string[] = [], logger: Logger = noopLogger): AttemptRunner {
  return new AttemptRunner({
    logger,
    events: bus,
    clock: realClock(),
    registry: agents,
    secrets: environmentSecrets,
    maskEnv,
    scratchRoot: taskDir ?? tmpdir(),
    baseDir: taskDir ?? process.cwd(),
    startReportDelayMs: 100,
    heartbeatMs: 5000,
    host,
    echo: (stream, line) => void (stream === 'stderr' ? process.stderr : process.stdout).write(line + '\n'),
    // A stopping pool agent hands its attempts back to the queue; another agent reports them.
    unreported: (reason) => reason instanceof PoolAgentStopping,
  });
}

/**
 * One pool agent's work loop: takes the pool's items from `workQueue` and reports on `bus`
 * (also used in-process by the pool benchmark and the tests).
 */
export function startPoolAgent(workQueue: WorkQueue, bus: Bus, workflow: string, pool: string, concurrency: number, logger: Logger = noopLogger): Promise<StopConsuming> {
  const runner = attemptRunner(bus, [], logger);
  return workQueue.consume(workflow, pool, concurrency, async (item, signal) => {
    // Nothing is logged per item that runs to its end: at thousands of tasks a second the
    // events on the stream are the record, and a line each would cost more than the task.
    const { reported } = await runner.run({ ...item, kind: 'task' }, signal);
    if (reported === undefined) logger.info('handed a work item back to the queue', { run: item.runId, task: item.instance, attempt: item.attempt });
    return reported !== undefined ? { reported } : {};
  });
}

/**
 * `caravan agent pool --workflow W --pool P --concurrency N --health-port PORT`: one agent of
 * a pool (a Nomad service allocation). It answers /health for the Consul check, takes work
 * items from the pool's queue, runs them with the attempt runner, and stops cleanly on SIGTERM/SIGINT.
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
  // A long-running process under Nomad: JSON lines on standard error, which Nomad keeps.
  const { createLogger } = await import('../engine/telemetry/createLogger.js');
  const logger = createLogger({ name: 'caravan-agent', bindings: { workflow, pool, alloc: process.env['NOMAD_ALLOC_ID'] } });
  const health = createServer((req, res) => {
    res.statusCode = req.url === '/health' ? 200 : 404;
    res.end(req.url === '/health' ? 'ok\n' : '');
  });
  await new Promise<void>((r) => health.listen(Number(one('--health-port') ?? '0'), '0.0.0.0', r));
  // How long a taken item may go without word from its agent before another agent gets it.
  const address = health.address();
  const nats = await connectJetStream({
    connection: await natsConnectionOptions(process.env),
    workAckWaitMs: secondsFromEnv('CARAVAN_WORK_ACK_WAIT_S', 30) * 1000,
    onError: (err) => logger.error('NATS consumer failed', { err }),
  });
  const stop = await startPoolAgent(nats.workQueue, nats.bus, workflow, pool, concurrency, logger);
  logger.info('pool agent started', { concurrency, healthPort: typeof address === 'object' && address !== null ? address.port : undefined });
  const signal = await new Promise<NodeJS.Signals>((r) => {
    process.once('SIGTERM', () => r('SIGTERM'));
    process.once('SIGINT', () => r('SIGINT'));
  });
  // Stopped (a scale-down, a new job version): what runs gets CARAVAN_DRAIN_S to finish,
  // within the 30 s kill_timeout of the compiled pool job; the rest goes back to the queue.
  const drainS = secondsFromEnv('CARAVAN_DRAIN_S', 25, { zero: true });
  logger.info('pool agent draining', { signal, drainS });
  await stop(drainS * 1000);
  await nats.close();
  health.close();
  logger.info('pool agent stopped');
  return 0;
}
