import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { formatDuration } from '../audit/RunRecorder.js';
import { CaravanApp, type CaravanAppOptions, type StartedRun } from '../app/CaravanApp.js';
import type { ControlAction } from '../app/LiveRuns.js';
import type { LogLine, RunSummary } from '../app/RunQueries.js';
import type { RunStatus } from '../run/RunEvent.js';
import { CaravanError } from '../errors/CaravanError.js';
import { findRepoRoot } from '../gitops/readTreeAtRef.js';
import { EXIT, type ExitCode } from './exitCodes.js';
import { cliLogger } from './cliLogger.js';
import { stdoutFor } from './forTerminal.js';
import type { Io } from './Io.js';
import { RunProgress, type ProgressMode } from './RunProgress.js';
import { logLineText, printStatus, runsTable } from './runViews.js';

export interface RunOptions {
  param: string[];
  json: boolean;
  parallelism?: number;
  /** Overrides terminal detection (false: plain lines). */
  tty?: boolean;
  bus?: 'memory' | 'nats';
  backend?: 'local' | 'nomad';
  agentCommand?: string;
  registry?: 'none' | 'consul';
  leader?: boolean;
}

/**
 * The backend options `run` and `recover` share, as the application layer takes them. Tasks
 * on Nomad report over NATS, so `--backend nomad` implies `--bus nats`; only an explicit
 * `--bus memory` beside it is refused.
 */
function backendOptions(o: Omit<RunOptions, 'param' | 'json' | 'tty'> & { param?: string[] }): Partial<CaravanAppOptions> {
  if (o.leader === true && o.registry !== 'consul') throw new CaravanError('USAGE', '--leader needs --registry consul: the leader lock lives in Consul');
  if (o.backend === 'nomad' && o.bus === 'memory') throw new CaravanError('USAGE', '--backend nomad cannot use --bus memory: tasks on Nomad report over NATS (leave --bus out, or give --bus nats)');
  const bus = o.bus ?? (o.backend === 'nomad' ? 'nats' : undefined);
  return {
    ...(o.registry === 'consul' ? { registry: 'consul' as const } : {}),
    ...(o.leader === true ? { leader: {} } : {}),
    ...(o.parallelism !== undefined ? { parallelism: o.parallelism } : {}),
    ...(bus !== undefined ? { bus } : {}),
    ...(o.backend !== undefined ? { backend: o.backend } : {}),
    ...(o.agentCommand !== undefined ? { agentCommand: o.agentCommand.split(/\s+/).filter((a) => a !== '') } : {}),
  };
}

/** The application layer for the repository around the working directory. */
async function openApp(io: Io, extra: Partial<CaravanAppOptions> = {}): Promise<CaravanApp> {
  const root = await findRepoRoot(io.cwd).catch((e: unknown) => {
    throw new CaravanError('NOT_A_REPOSITORY', `${io.cwd} is not inside a Git repository; Caravan records runs in Git (run \`git init\` first)`, { cause: e, data: { dir: io.cwd } });
  });
  return new CaravanApp({ repoDir: root, logger: cliLogger(io.stderr), ...extra });
}

export function parseParamFlags(flags: readonly string[]): Record<string, string> {
  const pairs: Array<[string, string]> = [];
  for (const f of flags) {
    const eq = f.indexOf('=');
    if (eq <= 0) throw new CaravanError('USAGE', `--param expects name=value, got '${f}'`, { data: { param: f } });
    pairs.push([f.slice(0, eq), f.slice(eq + 1)]);
  }
  // fromEntries makes own properties even of `__proto__`, which then fails as an unknown
  // param instead of silently replacing the object's prototype.
  return Object.fromEntries(pairs);
}

/**
 * Ctrl-C (SIGINT) and SIGTERM (what Nomad sends a stopping allocation) stop this process,
 * not the run: the engine lets go of it, its journal and a checkpoint are written, and
 * `caravan recover` continues it (attempts still running are stopped with this process and
 * run again then). Cancelling a run is `caravan cancel`. Further signals while it stops only
 * say so: an exit half-way through writing the record is what would leave a run in limbo.
 * Listening starts before the run does, so a signal that comes early is not lost.
 */
class SignalStop {
  signal: NodeJS.Signals | undefined;
  private run: StartedRun | undefined;
  private readonly onSigint = (): void => this.received('SIGINT');
  private readonly onSigterm = (): void => this.received('SIGTERM');

  constructor(private readonly io: Io) {
    process.on('SIGINT', this.onSigint);
    process.on('SIGTERM', this.onSigterm);
  }

  /** The run to let go of: at once if a signal came while it was starting. */
  follow(run: StartedRun): void {
    this.run = run;
    if (this.signal !== undefined) this.stop(run, this.signal);
  }

  close(): void {
    process.off('SIGINT', this.onSigint);
    process.off('SIGTERM', this.onSigterm);
  }

  private received(signal: NodeJS.Signals): void {
    if (this.signal !== undefined) {
      this.io.stderr(`caravan: still stopping (writing the run's record)${this.run !== undefined ? `; run ${this.run.runId} stays recoverable` : ''}\n`);
      return;
    }
    this.signal = signal;
    if (this.run !== undefined) this.stop(this.run, signal);
    else this.io.stderr(`\ncaravan: stopping (${signal}) as soon as the run has started\n`);
  }

  private stop(run: StartedRun, signal: NodeJS.Signals): void {
    this.io.stderr(`\ncaravan: stopping (${signal}); run ${run.runId} is left as it is: \`caravan recover ${run.runId}\` continues it, \`caravan cancel ${run.runId}\` after that cancels it\n`);
    run.engine.relinquish(new CaravanError('INTERRUPTED', `interrupted by ${signal}; recover the run with caravan recover ${run.runId}`, { data: { runId: run.runId, signal } }));
  }
}

/** Follows a run to its end: progress, the summary and the exit code (see SignalStop). */
async function follow(started: StartedRun, signals: SignalStop, progress: RunProgress, io: Io, json: boolean): Promise<ExitCode> {
  signals.follow(started);
  let outcome;
  try {
    outcome = await started.done;
  } catch (e) {
    if (!(e instanceof CaravanError && e.code === 'INTERRUPTED')) throw e;
    io.stderr(`caravan: stopped; run ${started.runId} is recorded up to now and can be recovered: caravan recover ${started.runId}\n`);
    return signals.signal === 'SIGTERM' ? EXIT.TERMINATED : EXIT.INTERRUPTED;
  }
  const { state, auditCommit } = outcome;
  progress.finish(state);
  const took = state.finishedAt !== undefined ? ` in ${formatDuration(state.finishedAt - state.startedAt)}` : '';
  const summary = `run ${state.runId} of ${state.workflow} ${state.status}${took}${state.failureReason !== undefined && state.status === 'failed' ? `: ${state.failureReason}` : ''}\nrecorded on caravan/runs at ${auditCommit.slice(0, 12)}: git log caravan/runs; caravan status ${state.runId}\n`;
  (json ? io.stderr : io.stdout)(summary);
  return state.status === 'succeeded' ? EXIT.OK : EXIT.FAILED;
}

function progressFor(io: Io, json: boolean, tty: boolean | undefined): RunProgress {
  const mode: ProgressMode = json ? 'json' : (tty ?? io.isTTY === true) ? 'tty' : 'plain';
  return new RunProgress(mode, io.stdout);
}

/**
 * A workflow named by its file is found where the shell would find it: relative to the
 * working directory (or absolute), so `caravan run ../workflows/x.yaml` works from any
 * directory of the repository. Else the name is left as given: a workflow's name, or a path
 * relative to the repository root.
 */
function workflowArgument(workflow: string, io: Io): string {
  if (!/\.ya?ml$/i.test(workflow)) return workflow;
  const here = resolve(io.cwd, workflow);
  return existsSync(here) ? here : workflow;
}

export async function runCommand(workflow: string, options: RunOptions, io: Io): Promise<ExitCode> {
  return startAndFollow(options, io, async (app) => {
    const started = await app.start(workflowArgument(workflow, io), parseParamFlags(options.param));
    // The record names HEAD's commit, which does not hold this definition: the person running it hears so at once.
    if (started.workflowDirty !== undefined) io.stderr(`caravan: warning: workflow ${started.workflow} has changes that are not committed; run ${started.runId} keeps the file as run (sha256 ${started.workflowDirty.sha256.slice(0, 12)}) and its record is marked Workflow-Dirty: true\n`);
    return started;
  });
}

/**
 * Opens the app with a progress display, starts a run with `start`, follows it (and the
 * children it started without waiting) to its end, and closes the app: `caravan run` and
 * `caravan retry` alike.
 */
async function startAndFollow(options: Omit<RunOptions, 'parallelism'> & { parallelism?: number }, io: Io, start: (app: CaravanApp) => Promise<StartedRun>): Promise<ExitCode> {
  const progress = progressFor(io, options.json, options.tty);
  const app = await openApp(io, { onEvent: (e, s) => progress.onEvent(e, s), ...backendOptions(options) });
  const signals = new SignalStop(io);
  try {
    const started = await start(app);
    const code = await follow(started, signals, progress, io, options.json);
    await followDetached(app, io);
    return code;
  } finally {
    signals.close();
    await app.close();
  }
}

/**
 * Child runs started with `workflow: {wait: false}` run in this process: it waits for them
 * before it exits (closing would stop them; they could then only be recovered).
 */
async function followDetached(app: CaravanApp, io: Io): Promise<void> {
  for (let runs = app.detachedRuns(); runs.length > 0; runs = app.detachedRuns()) {
    io.stderr(`caravan: waiting for ${runs.length} child run${runs.length === 1 ? '' : 's'} started without waiting (${runs.map((r) => `${r.workflow} ${r.runId}`).join(', ')})\n`);
    await Promise.allSettled(runs.map((r) => r.done));
  }
}

export async function recoverCommand(runId: string, options: Omit<RunOptions, 'parallelism'>, io: Io): Promise<ExitCode> {
  const progress = progressFor(io, options.json, options.tty);
  const app = await openApp(io, { onEvent: (e, s) => progress.onEvent(e, s), ...backendOptions(options) });
  const signals = new SignalStop(io);
  try {
    const started = await app.recover(runId, parseParamFlags(options.param));
    if ('recorded' in started) {
      const { state, auditCommit } = started.recorded;
      io.stdout(`run ${runId} of ${started.workflow} was already over (${state.status}); its journal is now recorded on caravan/runs at ${auditCommit.slice(0, 12)}: caravan status ${runId}\n`);
      return state.status === 'succeeded' ? EXIT.OK : EXIT.FAILED;
    }
    io.stderr(`caravan: recovering run ${runId} of ${started.workflow}\n`);
    return await follow(started, signals, progress, io, options.json);
  } finally {
    signals.close();
    await app.close();
  }
}

export interface RetryOptions extends Omit<RunOptions, 'parallelism'> {
  /** Rerun this task and everything downstream of it, even if they succeeded. */
  from?: string;
}

/**
 * `caravan retry <run-id>`: a new run of the same definition and params that reuses what
 * succeeded. Says what it reuses and what runs again, then follows the run as `caravan run`.
 */
export async function retryCommand(runId: string, options: RetryOptions, io: Io): Promise<ExitCode> {
  return startAndFollow(options, io, async (app) => {
    const started = await app.retry(runId, { ...(options.from !== undefined ? { from: options.from } : {}), secretParams: parseParamFlags(options.param) });
    const { selection } = started;
    const reused = Object.keys(selection.reuse);
    const again = selection.rerun.map((r) => `${r.task} (${r.why === 'downstream' ? `after ${r.of}` : r.why === 'skipped' ? `skipped: ${r.reason}` : r.why === 'from' ? '--from' : r.why})`);
    io.stderr(`caravan: run ${started.runId} retries run ${runId} of ${started.workflow}; reusing ${reused.length === 0 ? 'nothing' : reused.join(', ')}; running again ${again.length === 0 ? 'nothing but the finally and onFailure tasks' : again.join(', ')}\n`);
    if (started.workflowDirty !== undefined) io.stderr(`caravan: warning: run ${runId} ran workflow ${started.workflow} with uncommitted changes; the retry runs that same definition (sha256 ${started.workflowDirty.sha256.slice(0, 12)}) and its record is marked Workflow-Dirty: true\n`);
    return started;
  });
}

export interface RunsOptions {
  workflow?: string;
  status?: RunStatus;
  /** The newest this many (default: all). */
  limit?: number;
}

export async function runsCommand(options: RunsOptions, io: Io): Promise<ExitCode> {
  const app = await openApp(io);
  const { workflow, status, limit } = options;
  const runs: RunSummary[] = [];
  let cursor: string | undefined;
  // RunQueries hands out pages of at most 500: read on until the limit or the last page.
  do {
    const page = await app.queries.list({ ...(workflow !== undefined ? { workflow } : {}), ...(status !== undefined ? { status } : {}), limit: Math.min(500, (limit ?? Infinity) - runs.length), ...(cursor !== undefined ? { cursor } : {}) });
    runs.push(...page.runs);
    cursor = page.nextCursor;
  } while (cursor !== undefined && runs.length < (limit ?? Infinity));
  if (runs.length === 0) {
    io.stdout(`no ${status !== undefined ? `${status} ` : ''}runs${workflow !== undefined ? ` of ${workflow}` : ''} recorded on caravan/runs\n`);
    return EXIT.OK;
  }
  io.stdout(runsTable(runs, 'live'));
  // On standard error, so that the table piped elsewhere stays a table.
  if (cursor !== undefined) io.stderr(`caravan: the ${runs.length} newest shown; there are more (raise --limit)\n`);
  return EXIT.OK;
}

export async function statusCommand(runId: string, io: Io, json: boolean): Promise<ExitCode> {
  const app = await openApp(io);
  const { snapshot: r, live, from } = await app.queries.get(runId);
  // Errors and reasons quote task output.
  const out = stdoutFor(io);
  if (json) {
    io.stdout(JSON.stringify({ ...r, live: live !== undefined }) + '\n');
    return EXIT.OK;
  }
  const where = live !== undefined ? ` (live in process ${live.pid}${from === 'audit' ? '; last checkpoint shown' : ''})` : from === 'journal' ? ' (in the local journal only, not on caravan/runs: caravan recover writes it there)' : '';
  printStatus(r, where, io, out);
  return EXIT.OK;
}

export interface LogsOptions {
  /** Prefix each line with its event's time (ISO 8601, UTC). */
  timestamps?: boolean;
  /** While the run is live, print new lines as they are recorded, until it ends. */
  follow?: boolean;
  /** How often a live run is read again with `follow` (default 250 ms). */
  pollMs?: number;
}

export async function logsCommand(runId: string, task: string | undefined, options: LogsOptions, io: Io): Promise<ExitCode> {
  const app = await openApp(io);
  // Task output is anyone's bytes: on a terminal its escape sequences are shown, not obeyed.
  const out = stdoutFor(io);
  const print = (lines: readonly LogLine[]): void => {
    for (const l of lines) out(logLineText(l, options.timestamps === true));
  };
  let count = 0;
  if (options.follow === true) {
    for await (const lines of app.queries.follow(runId, task, options.pollMs !== undefined ? { pollMs: options.pollMs } : {})) {
      print(lines);
      count += lines.length;
    }
    // Not live any more: over, or its process died and it waits to be recovered.
    const { snapshot } = await app.queries.get(runId);
    if (snapshot.status === 'running' || snapshot.status === 'paused') io.stderr(`caravan: run ${runId} stopped being live before it ended (its process is gone): caravan recover ${runId} continues it\n`);
  } else {
    const lines = await app.queries.logs(runId, task);
    print(lines);
    count = lines.length;
  }
  if (count === 0) io.stderr(`caravan: no log lines${task !== undefined ? ` for ${task}` : ''} in run ${runId}\n`);
  return EXIT.OK;
}

export async function controlCommand(action: ControlAction, runId: string, task: string | undefined, reason: string | undefined, io: Io): Promise<ExitCode> {
  const app = await openApp(io);
  const by = process.env['USER'] ?? 'cli';
  await app.control.send(runId, { action, by, ...(task !== undefined ? { task } : {}), ...(reason !== undefined ? { reason } : {}) });
  io.stdout(`sent ${action}${task !== undefined ? ` ${task}` : ''} to run ${runId}\n`);
  return EXIT.OK;
}
