import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { AgentRegistry } from './builtinAgents.js';
import { environmentSecrets, prepareAction } from './prepareAction.js';
import type { AgentResult } from './AgentType.js';
import { JetStreamBus } from '../engine/nats/JetStreamBus.js';
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
  context: ExpressionContext;
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
  const payloadFile = p.flags.get('--payload')?.[0];
  if (payloadFile === undefined) {
    log('caravan agent: --payload is required\n');
    return 64;
  }
  const payload = JSON.parse(await readFile(payloadFile, 'utf8')) as DispatchPayload;
  const bus = await JetStreamBus.connect({ connection: await natsConnectionOptions(process.env, payload.nats) });
  const subject = eventSubject(payload.workflow, payload.runId, payload.instance);
  const base = { runId: payload.runId, task: payload.instance, attempt: payload.attempt };
  let logged = 0;
  const publish = (e: RunEvent): void => bus.publish(subject, e, { msgId: eventId(e), origin: 'agent' });
  publish({ ...base, type: 'task.started', at: Date.now() });
  const beat = setInterval(() => publish({ ...base, type: 'task.heartbeat', at: Date.now() }), 5000);
  const task = taskFrom(p);
  let result: AgentResult;
  try {
    const prepared = prepareAction(task, 'task', payload.context, { ...(task.timeout !== undefined ? { timeoutMs: parseDuration(task.timeout)! } : {}) }, environmentSecrets);
    const agent = new AgentRegistry().get(prepared.action.agent);
    if (agent === undefined) throw new Error(`unknown agent type '${prepared.action.agent}'`);
    result = await agent.run(prepared.action, {
      log: (stream, line) => {
        if (logged++ < 1000) publish({ ...base, type: 'task.log', at: Date.now() + logged / 1000, stream, line });
        (stream === 'stderr' ? process.stderr : process.stdout).write(line + '\n');
      },
      signal: new AbortController().signal,
      scratchDir: process.env['NOMAD_TASK_DIR'] ?? process.cwd(),
      baseDir: process.env['NOMAD_TASK_DIR'] ?? process.cwd(),
    });
  } catch (e) {
    result = { ok: false, error: (e as Error).message, retryable: false };
  }
  clearInterval(beat);
  const at = Date.now();
  if (result.ok) publish({ ...base, type: 'task.succeeded', at, outputs: result.outputs, ...(result.exitCode !== undefined ? { exitCode: result.exitCode } : {}) });
  else publish({ ...base, type: 'task.failed', at, error: `${result.error} (on ${hostname()})`, retryable: result.retryable, ...(result.exitCode !== undefined ? { exitCode: result.exitCode } : {}) });
  await bus.close();
  return result.ok ? 0 : 1;
}
