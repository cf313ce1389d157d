import { formatDuration } from '../audit/RunRecorder.js';
import { CaravanError, EXIT, type ExitCode } from '../errors/CaravanError.js';
import { findRepoRoot } from '../gitops/readTreeAtRef.js';
import { RunService, type StartedRun } from '../local/RunService.js';
import type { ControlAction } from '../local/LiveRuns.js';
import type { RunEvent } from '../run/RunEvent.js';
import type { Io } from './Io.js';
import { RunProgress, type ProgressMode } from './RunProgress.js';

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

/** The registry and leader options of `run` and `resume`. */
function registryOptions(o: { registry?: 'none' | 'consul'; leader?: boolean }): Partial<ConstructorParameters<typeof RunService>[0]> {
  if (o.leader === true && o.registry !== 'consul') throw new CaravanError('USAGE', '--leader needs --registry consul: the leader lock lives in Consul');
  return { ...(o.registry === 'consul' ? { registry: 'consul' as const } : {}), ...(o.leader === true ? { leader: {} } : {}) };
}

async function service(io: Io, extra: Partial<ConstructorParameters<typeof RunService>[0]> = {}): Promise<RunService> {
  const root = await findRepoRoot(io.cwd).catch(() => {
    throw new CaravanError('NOT_A_REPOSITORY', `${io.cwd} is not inside a Git repository; Caravan records runs in Git (run \`git init\` first)`);
  });
  return new RunService({ repoDir: root, onWarning: (m) => io.stderr(`caravan: warning: ${m}\n`), ...extra });
}

export function parseParamFlags(flags: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of flags) {
    const eq = f.indexOf('=');
    if (eq <= 0) throw new CaravanError('USAGE', `--param expects name=value, got '${f}'`);
    out[f.slice(0, eq)] = f.slice(eq + 1);
  }
  return out;
}

/** Follows a run to its end: progress, Ctrl-C to cancel, the summary and the exit code. */
async function follow(started: StartedRun, progress: RunProgress, io: Io, json: boolean): Promise<ExitCode> {
  let interrupted = 0;
  const onSigint = (): void => {
    interrupted++;
    if (interrupted === 1) {
      io.stderr('\ncaravan: cancelling the run (Ctrl-C again to leave it; `caravan resume` continues it later)\n');
      started.engine.cancel('user', 'interrupted (Ctrl-C)');
    } else {
      process.exit(130);
    }
  };
  process.on('SIGINT', onSigint);
  try {
    const { state, auditCommit } = await started.done;
    progress.finish(state);
    const took = state.finishedAt !== undefined ? ` in ${formatDuration(state.finishedAt - state.startedAt)}` : '';
    const summary = `run ${state.runId} of ${state.workflow} ${state.status}${took}${state.failureReason !== undefined && state.status === 'failed' ? `: ${state.failureReason}` : ''}\nrecorded on caravan/runs at ${auditCommit.slice(0, 12)}: git log caravan/runs; caravan status ${state.runId}\n`;
    (json ? io.stderr : io.stdout)(summary);
    return state.status === 'succeeded' ? EXIT.OK : EXIT.FAILED;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

function progressFor(io: Io, json: boolean, tty: boolean | undefined): RunProgress {
  const mode: ProgressMode = json ? 'json' : (tty ?? io.isTTY === true) ? 'tty' : 'plain';
  return new RunProgress(mode, io.stdout);
}

export async function runCommand(workflow: string, options: RunOptions, io: Io): Promise<ExitCode> {
  const progress = progressFor(io, options.json, options.tty);
  const svc = await service(io, { onEvent: (e: RunEvent, s) => progress.onEvent(e, s), ...(options.parallelism !== undefined ? { parallelism: options.parallelism } : {}), ...(options.bus !== undefined ? { bus: options.bus } : {}), ...(options.backend !== undefined ? { backend: options.backend } : {}), ...(options.agentCommand !== undefined ? { agentCommand: options.agentCommand.split(/\s+/).filter((a) => a !== '') } : {}), ...registryOptions(options) });
  const started = await svc.start(workflow, parseParamFlags(options.param));
  return follow(started, progress, io, options.json);
}

export async function resumeCommand(runId: string, options: { json: boolean; tty?: boolean; bus?: 'memory' | 'nats'; backend?: 'local' | 'nomad'; agentCommand?: string; registry?: 'none' | 'consul'; leader?: boolean }, io: Io): Promise<ExitCode> {
  const progress = progressFor(io, options.json, options.tty);
  const svc = await service(io, {
    ...registryOptions(options),
    onEvent: (e, s) => progress.onEvent(e, s),
    ...(options.bus !== undefined ? { bus: options.bus } : {}),
    ...(options.backend !== undefined ? { backend: options.backend } : {}),
    ...(options.agentCommand !== undefined ? { agentCommand: options.agentCommand.split(/\s+/).filter((a) => a !== '') } : {}),
  });
  const started = await svc.resume(runId);
  io.stderr(`caravan: resuming run ${runId} of ${started.workflow}\n`);
  return follow(started, progress, io, options.json);
}

export async function runsCommand(workflow: string | undefined, io: Io): Promise<ExitCode> {
  const svc = await service(io);
  const live = new Map((await svc.live.list()).map((r) => [r.runId, r]));
  const runs = await svc.audit.listRuns(workflow);
  if (runs.length === 0) {
    io.stdout(`no runs${workflow !== undefined ? ` of ${workflow}` : ''} recorded on caravan/runs\n`);
    return EXIT.OK;
  }
  const rows = [['RUN', 'WORKFLOW', 'STATUS', 'STARTED', 'DURATION']];
  for (const r of runs) {
    const stored = await svc.audit.readRun(r.runId, r.workflow);
    const run = stored?.run ?? {};
    const status = live.has(r.runId) ? `${String(run['status'])} (live)` : String(run['status']);
    rows.push([r.runId, r.workflow, status, String(run['startedAt'] ?? ''), run['durationMs'] !== undefined ? formatDuration(Number(run['durationMs'])) : '']);
  }
  io.stdout(table(rows));
  return EXIT.OK;
}

export async function statusCommand(runId: string, io: Io, json: boolean): Promise<ExitCode> {
  const svc = await service(io);
  const live = await svc.live.get(runId);
  // A live run on this machine: its journal is ahead of the last checkpoint (and there may
  // be none yet).
  const fromJournal = live !== undefined ? await svc.journalSnapshot(runId) : undefined;
  const current = fromJournal ?? (await svc.audit.readRun(runId))?.run;
  if (current === undefined) throw new CaravanError('RUN_NOT_FOUND', `no run ${runId} on caravan/runs`);
  if (json) {
    io.stdout(JSON.stringify({ ...current, live: live !== undefined }) + '\n');
    return EXIT.OK;
  }
  const r = current as { status: string; workflow: string; startedAt: string; durationMs?: number; failureReason?: string; tasks: Record<string, { status: string; attempts?: number; error?: string; reason?: string; pendingReason?: string; durationMs?: number; instances?: unknown[] }> };
  io.stdout(`run ${runId} of ${r.workflow}: ${r.status}${live !== undefined ? ` (live in process ${live.pid}${fromJournal === undefined ? '; last checkpoint shown' : ''})` : ''}\n`);
  io.stdout(`started ${r.startedAt}${r.durationMs !== undefined ? `, took ${formatDuration(r.durationMs)}` : ''}\n`);
  if (r.failureReason !== undefined) io.stdout(`failure: ${r.failureReason}\n`);
  const rows = [['TASK', 'STATUS', 'ATTEMPTS', 'DURATION', 'NOTE']];
  for (const [name, t] of Object.entries(r.tasks)) {
    rows.push([name, t.status, t.instances !== undefined ? `${t.instances.length} items` : String(t.attempts ?? ''), t.durationMs !== undefined ? formatDuration(t.durationMs) : '', (t.error ?? t.reason ?? t.pendingReason ?? '').slice(0, 80)]);
  }
  io.stdout(table(rows));
  return EXIT.OK;
}

export async function logsCommand(runId: string, task: string | undefined, io: Io): Promise<ExitCode> {
  const svc = await service(io);
  const stored = await svc.audit.readRun(runId);
  if (stored === undefined) throw new CaravanError('RUN_NOT_FOUND', `no run ${runId} on caravan/runs`);
  let n = 0;
  for (const e of stored.events) {
    if (e.type !== 'task.log') continue;
    if (task !== undefined && e.task !== task && !e.task.startsWith(`${task}[`)) continue;
    io.stdout(`${e.task}#${e.attempt} ${e.stream === 'stderr' ? '! ' : ''}${e.line}\n`);
    n++;
  }
  if (n === 0) io.stderr(`caravan: no log lines${task !== undefined ? ` for ${task}` : ''} in run ${runId}\n`);
  return EXIT.OK;
}

export async function controlCommand(action: ControlAction, runId: string, task: string | undefined, reason: string | undefined, io: Io): Promise<ExitCode> {
  const svc = await service(io);
  const by = process.env['USER'] ?? 'cli';
  await svc.control(runId, { action, by, ...(task !== undefined ? { task } : {}), ...(reason !== undefined ? { reason } : {}) });
  io.stdout(`sent ${action}${task !== undefined ? ` ${task}` : ''} to run ${runId}\n`);
  return EXIT.OK;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n') + '\n';
}
