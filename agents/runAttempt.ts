import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Clock, TimerHandle } from '../engine/run/Clock.js';
import type { ExpressionContext } from '../engine/run/evaluate.js';
import { noopLogger, type Logger } from '../engine/run/Logger.js';
import { attemptKey, eventSubject } from '../engine/run/protocol.js';
import { eventId, type RunEvent } from '../engine/run/RunEvent.js';
import type { EnvMap, TaskSpec } from '../engine/spec/Workflow.js';
import type { AgentAction, AgentIo, AgentResult } from './AgentType.js';
import type { AgentRegistry } from './builtinAgents.js';
import { SecretMask } from './maskSecrets.js';
import { prepareAction, type SecretResolver } from './prepareAction.js';
import type { ShellWorkerPool } from './ShellWorkerPool.js';

/** One attempt to run: which one it is, and everything its action is prepared from. */
export interface Attempt {
  runId: string;
  workflow: string;
  /** Instance key: the task name, or `name[i]` for a forEach item. */
  instance: string;
  attempt: number;
  kind: 'task' | 'compensate';
  task: TaskSpec;
  /** What the task's `${{ }}` expressions see. */
  context: ExpressionContext;
  /** The workflow's `defaults.env`, under the task's own env. */
  defaultsEnv?: EnvMap;
  /** The timeout when the task (or its compensation) sets none of its own. */
  timeoutMs?: number;
  /**
   * Runs instead of preparing the task and running its agent (the local executor's child
   * workflows); reported, heartbeaten and masked like any attempt.
   */
  perform?: () => Promise<AgentResult>;
  /**
   * Takes over the attempt that a dead process started, instead of running its agent: the
   * action is prepared (secrets resolved and masked) exactly as for a fresh start.
   */
  adopt?: (action: AgentAction, io: AgentIo) => Promise<AgentResult>;
}

/** Where the runner reports: a Bus, or the agent's JetStream bus, whose publish says when an event is stored. */
export interface AttemptEvents {
  publish(subject: string, event: RunEvent, options: { msgId: string; origin: 'agent' }): void | Promise<void>;
}

export interface AttemptRunnerOptions {
  events: AttemptEvents;
  /** Event times and the one timer behind every heartbeat and deferred start. */
  clock: Clock;
  registry: AgentRegistry;
  /** Resolves `{secret: {path, key}}` references (locally: the environment). */
  secrets: SecretResolver;
  /** Variables of this process's environment whose values are secrets (`--mask-env NAME`: Nomad filled them). */
  maskEnv?: readonly string[];
  /** Where a shell attempt without workers gets its own directory (for its outputs file). */
  scratchRoot: string;
  /** What relative working directories are resolved against. */
  baseDir: string;
  /** Long-lived shells for commands; their attempts need no scratch directory. */
  workers?: ShellWorkerPool;
  /** Default 5 s. */
  heartbeatMs?: number;
  /**
   * Report `task.started` only once the attempt has run this long or logged a line; one that
   * ends sooner reports once, its result carrying `startedAt` (a pool of short tasks stores a
   * third fewer messages). Unset: `task.started` goes out as the attempt starts.
   */
  startReportDelayMs?: number;
  /** Log lines kept per attempt (default 1,000); later lines are counted, not kept. */
  maxLogLines?: number;
  /** Bytes of log lines kept per attempt (default 1 MiB); later lines are counted, not kept. */
  maxLogBytes?: number;
  /** Every log line, masked and cut, kept or not (the agent copies them to its own output for Nomad). */
  echo?: (stream: 'stdout' | 'stderr', line: string) => void;
  /** Appended to reported failures as ` (on <host>)`, so an operator knows which machine. */
  host?: string;
  /**
   * Whether an attempt aborted for this reason goes unreported: always for the local executor
   * (the engine recorded the cancel itself); for a pool agent, when it is stopping and the
   * item goes back to the queue. By default an aborted attempt reports `cancelled`.
   */
  unreported?: (reason: unknown) => boolean;
  /** Where failures that do not fail the attempt go (a scratch directory that would not go away). */
  logger?: Logger;
}

/** What became of one attempt. */
export interface AttemptOutcome {
  /** The result as reported: secrets masked (the failure without the host suffix). */
  result: AgentResult;
  /** Settles once the result is stored; absent when the attempt was not reported at all. */
  reported?: Promise<void>;
}

/** A log line is cut to this many characters, after masking (so no secret is cut in two). */
export const MAX_LOG_LINE = 4096;
/** A failure message is cut to this many characters, after masking. */
export const MAX_ERROR = 8192;
const DONE = Promise.resolve();
const NEVER = new AbortController().signal;

/** One attempt in flight, as the shared timer and the log sink see it. */
interface InFlight {
  readonly subject: string;
  readonly base: { runId: string; task: string; attempt: number };
  readonly startedAt: number;
  lastBeat: number;
  startSent: boolean;
  mask: SecretMask;
  kept: number;
  bytes: number;
  dropped: number;
}

/**
 * Runs attempts with the agent registry and reports them as the agent: `task.started`,
 * heartbeats, log lines and the result, every piece of text masked for the secrets the
 * attempt can see. The one attempt runner, for the local executor and for `caravan agent`
 * in a Nomad allocation or a pool. One timer serves every attempt in flight: a timer or two
 * per attempt cost a pool of short tasks more than the tasks.
 */
export class AttemptRunner {
  private readonly flights = new Set<InFlight>();
  private timer: TimerHandle | undefined;
  private readonly tickMs: number;
  private readonly heartbeatMs: number;
  private readonly maxLines: number;
  private readonly maxBytes: number;
  /** The secrets of this process's environment, masked in every attempt. */
  private readonly envMask: SecretMask;
  private rootReady: Promise<unknown> | undefined;

  constructor(private readonly options: AttemptRunnerOptions) {
    this.heartbeatMs = options.heartbeatMs ?? 5000;
    // A deferred start is checked twice per delay: it goes out at most half a delay late.
    this.tickMs = options.startReportDelayMs !== undefined ? Math.min(options.startReportDelayMs / 2, this.heartbeatMs) : this.heartbeatMs;
    this.maxLines = options.maxLogLines ?? 1000;
    this.maxBytes = options.maxLogBytes ?? 1024 * 1024;
    this.envMask = SecretMask.none.with((options.maskEnv ?? []).map((k) => process.env[k]).filter((v): v is string => v !== undefined));
  }

  /** Runs one attempt to its end and reports it; never rejects (a thrown error is a failure). */
  async run(a: Attempt, signal: AbortSignal = NEVER): Promise<AttemptOutcome> {
    const now = this.options.clock.now();
    const f: InFlight = { subject: eventSubject(a.workflow, a.runId, a.instance), base: { runId: a.runId, task: a.instance, attempt: a.attempt }, startedAt: now, lastBeat: now, startSent: false, mask: this.envMask, kept: 0, bytes: 0, dropped: 0 };
    if (this.options.startReportDelayMs === undefined) this.sendStarted(f);
    this.flights.add(f);
    this.timer ??= this.arm();
    let result: AgentResult;
    try {
      result = await (a.perform !== undefined ? a.perform() : this.perform(a, f, signal));
    } catch (e) {
      result = { ok: false, error: e instanceof Error ? e.message : String(e), retryable: false };
    }
    this.flights.delete(f);
    result = masked(result, f.mask);
    if (f.dropped > 0) {
      const limit = f.kept >= this.maxLines ? `${this.maxLines}` : `${this.maxBytes} bytes`;
      this.send(f, { ...f.base, type: 'task.log', at: this.options.clock.now() + (f.kept + 1) / 1000, stream: 'stderr', line: `[caravan] ${f.dropped} more log lines were not kept (limit ${limit} per attempt)` });
    }
    if (signal.aborted && this.options.unreported?.(signal.reason) === true) return { result };
    const at = this.options.clock.now();
    const start = f.startSent ? {} : { startedAt: f.startedAt };
    const exit = result.exitCode !== undefined ? { exitCode: result.exitCode } : {};
    const kind = !result.ok && result.failure !== undefined ? { failure: result.failure } : {};
    const stored = result.ok
      ? this.send(f, { ...f.base, type: 'task.succeeded', at, outputs: result.outputs, ...exit, ...start })
      : this.send(f, { ...f.base, type: 'task.failed', at, error: this.options.host !== undefined ? `${result.error} (on ${this.options.host})` : result.error, retryable: result.retryable, ...(result.code !== undefined ? { code: result.code } : {}), ...exit, ...kind, ...start });
    return { result, reported: stored instanceof Promise ? stored : DONE };
  }

  /** Stops the shared timer; attempts still running report no more heartbeats. */
  close(): void {
    if (this.timer !== undefined) this.options.clock.clearTimer(this.timer);
    this.timer = undefined;
  }

  private async perform(a: Attempt, f: InFlight, signal: AbortSignal): Promise<AgentResult> {
    const prepared = prepareAction(a.task, a.kind, a.context, { env: a.defaultsEnv, timeoutMs: a.timeoutMs }, this.options.secrets);
    f.mask = f.mask.with(a.context.secrets !== undefined ? [...prepared.secrets, ...a.context.secrets] : prepared.secrets);
    const agent = this.options.registry.get(prepared.action.agent);
    if (agent === undefined) return { ok: false, error: `unknown agent type '${prepared.action.agent}' (known: ${this.options.registry.names().join(', ')})`, retryable: false };
    // Only the shell agent writes files (its outputs file), and with workers it writes them
    // in the worker's directory: a run of other agents pays for no directory per attempt.
    const scratch = agent.name === 'shell' && this.options.workers === undefined && a.adopt === undefined ? await this.scratchDir() : undefined;
    const io: AgentIo = { log: (stream, line) => this.log(f, stream, line), signal, scratchDir: scratch ?? this.options.scratchRoot, baseDir: this.options.baseDir, label: attemptKey(a.runId, a.instance, a.attempt) };
    if (this.options.workers !== undefined) io.workers = this.options.workers;
    if (a.adopt !== undefined) return a.adopt(prepared.action, io);
    try {
      return await agent.run(prepared.action, io);
    } finally {
      if (scratch !== undefined) await rm(scratch, { recursive: true, force: true }).catch((err: unknown) => (this.options.logger ?? noopLogger).warn('could not remove an attempt\'s scratch directory', { workflow: a.workflow, run: a.runId, task: a.instance, attempt: a.attempt, path: scratch, err }));
    }
  }

  private async scratchDir(): Promise<string> {
    this.rootReady ??= mkdir(this.options.scratchRoot, { recursive: true, mode: 0o700 });
    await this.rootReady;
    return mkdtemp(join(this.options.scratchRoot, 'attempt-'));
  }

  /**
   * Keeps lines while both limits allow, then counts the rest: what is kept is the beginning
   * of the output, with no gaps, and the count of what is not is exact.
   */
  private log(f: InFlight, stream: 'stdout' | 'stderr', line: string): void {
    if (!f.startSent) this.sendStarted(f);
    let text: string | undefined;
    if (f.dropped === 0 && f.kept < this.maxLines) {
      text = cut(f.mask.apply(line), MAX_LOG_LINE);
      const size = Buffer.byteLength(text);
      if (f.bytes + size <= this.maxBytes) {
        f.kept++;
        f.bytes += size;
        // Lines logged within one millisecond keep their order (and distinct ids).
        this.send(f, { ...f.base, type: 'task.log', at: this.options.clock.now() + f.kept / 1000, stream, line: text });
      } else f.dropped++;
    } else f.dropped++;
    this.options.echo?.(stream, text ?? cut(f.mask.apply(line), MAX_LOG_LINE));
  }

  private sendStarted(f: InFlight): void {
    f.startSent = true;
    void this.send(f, { ...f.base, type: 'task.started', at: f.startedAt });
  }

  private arm(): TimerHandle {
    return this.options.clock.setTimer(() => {
      this.timer = undefined;
      this.tick();
      // With nothing in flight the timer lapses: an idle runner holds no timer.
      if (this.flights.size > 0) this.timer = this.arm();
    }, this.tickMs);
  }

  /**
   * A heartbeat goes out at the first tick after which the next would be late: with ticks a
   * heartbeat apart (no deferred start) that is every attempt at every tick.
   */
  private tick(): void {
    const now = this.options.clock.now();
    const delay = this.options.startReportDelayMs ?? 0;
    for (const f of this.flights) {
      if (!f.startSent && now - f.startedAt >= delay) this.sendStarted(f);
      if (now - f.lastBeat + this.tickMs >= this.heartbeatMs) {
        f.lastBeat = now;
        void this.send(f, { ...f.base, type: 'task.heartbeat', at: now });
      }
    }
  }

  private send(f: InFlight, e: RunEvent): void | Promise<void> {
    return this.options.events.publish(f.subject, e, { msgId: eventId(e), origin: 'agent' });
  }
}

function cut(text: string, max: number): string {
  return text.length > max ? text.slice(0, max) : text;
}

/** The result with every secret masked: outputs (a downstream task reads them), and the failure. */
function masked(r: AgentResult, mask: SecretMask): AgentResult {
  if (r.ok) {
    if (mask.empty) return r;
    const outputs: Record<string, string> = {};
    for (const [k, v] of Object.entries(r.outputs)) outputs[k] = mask.apply(v);
    return { ...r, outputs };
  }
  return { ...r, error: cut(mask.message(r.error), MAX_ERROR) };
}
