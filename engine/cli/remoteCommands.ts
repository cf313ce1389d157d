import { randomUUID } from 'node:crypto';
import { open } from 'node:fs/promises';
import { formatDuration } from '../audit/RunRecorder.js';
import type { LogLine, RunSummary } from '../app/RunQueries.js';
import { CaravanError } from '../errors/CaravanError.js';
import type { RunStatus } from '../run/RunEvent.js';
import { apiClient, parseControllerUrl, type ApiClient, type RemoteAction } from './ApiClient.js';
import { EXIT, type ExitCode } from './exitCodes.js';
import { followRun, isOver } from './followRun.js';
import { forTerminal, stdoutFor } from './forTerminal.js';
import type { Io } from './Io.js';
import { logLineText, printStatus, runsTable } from './runViews.js';
import { SnapshotProgress } from './SnapshotProgress.js';

/** Where the commands send their requests instead of working in-process. */
export const CONTROLLER_ENV = 'CARAVAN_CONTROLLER';
export const TOKEN_ENV = 'CARAVAN_TOKEN';
const MAX_TOKEN_FILE_BYTES = 64 * 1024;

export interface RemoteFlags {
  controller?: string;
  tokenFile?: string;
}

/**
 * The client for `--controller` (else $CARAVAN_CONTROLLER), or undefined to work in-process.
 * The token comes from the file named by --token-file, else $CARAVAN_TOKEN: never from a
 * flag's value, which every user of the machine sees in `ps`.
 */
export async function remoteClient(flags: RemoteFlags, env: Readonly<Record<string, string | undefined>> = process.env): Promise<ApiClient | undefined> {
  const url = flags.controller ?? (env[CONTROLLER_ENV] !== '' ? env[CONTROLLER_ENV] : undefined);
  if (url === undefined) {
    if (flags.tokenFile !== undefined) throw new CaravanError('USAGE', `--token-file is for a controller: give --controller <url> or set ${CONTROLLER_ENV}`);
    return undefined;
  }
  const base = parseControllerUrl(url);
  const token = flags.tokenFile !== undefined ? await readToken(flags.tokenFile) : env[TOKEN_ENV] !== '' ? env[TOKEN_ENV] : undefined;
  return apiClient(base, token !== undefined ? { token } : {});
}

async function readToken(file: string): Promise<string> {
  let text: string;
  try {
    const handle = await open(file, 'r');
    try {
      const buf = Buffer.alloc(MAX_TOKEN_FILE_BYTES + 1);
      const { bytesRead } = await handle.read(buf, 0, buf.length, 0);
      if (bytesRead > MAX_TOKEN_FILE_BYTES) throw new CaravanError('USAGE', `the token file ${file} is larger than ${MAX_TOKEN_FILE_BYTES} bytes: it should hold one token`, { data: { file } });
      text = buf.subarray(0, bytesRead).toString('utf8');
    } finally {
      await handle.close();
    }
  } catch (e) {
    if (e instanceof CaravanError) throw e;
    throw new CaravanError('PATH_NOT_FOUND', `cannot read the token file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e, data: { file } });
  }
  const token = text.replace(/\r?\n$/, '');
  // The server takes printable ASCII; anything else would only be refused there, less clearly.
  if (!/^[\x21-\x7e]{1,4096}$/.test(token)) throw new CaravanError('USAGE', `the token file ${file} must hold one token: printable characters without spaces, on one line`, { data: { file } });
  return token;
}

export interface RemoteRunOptions {
  param: string[];
  json: boolean;
}

/**
 * `caravan run --controller`: the controller starts the run (with an idempotency key made
 * here, so a request repeated after a lost answer does not start a second one), and this
 * follows it to its end. Ctrl-C (or SIGTERM) detaches: the run goes on in the controller.
 */
export async function remoteRunCommand(client: ApiClient, workflow: string, options: RemoteRunOptions, io: Io): Promise<ExitCode> {
  if (/\.ya?ml$/i.test(workflow) || workflow.includes('/')) {
    throw new CaravanError('USAGE', `with --controller, name the workflow (metadata.name), not a file: the controller runs the version at the commit it has synced`, { data: { workflow } });
  }
  const { parseParamFlags } = await import('./runCommands.js');
  const params = parseParamFlags(options.param);
  return followToEnd(client, async () => {
    const started = await client.startRun(workflow, params, `cli-${randomUUID()}`);
    if (!started.created) io.stderr(`caravan: the controller had started run ${started.runId} for this request already\n`);
    return started.runId;
  }, options.json, io);
}

export interface RemoteRetryOptions {
  from?: string;
  param: string[];
  json: boolean;
}

/**
 * `caravan retry --controller`: the controller starts the retry (POST /runs/{id}/retry; the
 * run lives there, recorded with the caller's token name) and this follows it to its end.
 */
export async function remoteRetryCommand(client: ApiClient, runId: string, options: RemoteRetryOptions, io: Io): Promise<ExitCode> {
  const { parseParamFlags } = await import('./runCommands.js');
  const params = parseParamFlags(options.param);
  return followToEnd(client, async () => {
    const r = await client.retryRun(runId, { ...(options.from !== undefined ? { from: options.from } : {}), ...(Object.keys(params).length > 0 ? { params } : {}) });
    io.stderr(`caravan: run ${r.runId} retries run ${r.retryOf}: reusing ${r.reused.length > 0 ? r.reused.join(', ') : 'nothing'}; running again ${r.rerun.map((t) => `${t.task} (${t.why})`).join(', ')}\n`);
    return r.runId;
  }, options.json, io);
}

/**
 * Starts a run through `start` and follows it to its end, printing progress as in-process.
 * Ctrl-C (or SIGTERM) detaches: the run goes on in the controller, and how to find it is printed.
 */
async function followToEnd(client: ApiClient, start: () => Promise<string>, json: boolean, io: Io): Promise<ExitCode> {
  const stop = new AbortController();
  let signal: NodeJS.Signals | undefined;
  const onSignal = (s: NodeJS.Signals): void => {
    signal ??= s;
    stop.abort();
  };
  const onInt = (): void => onSignal('SIGINT');
  const onTerm = (): void => onSignal('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  try {
    // Not stopped by a signal: the run may be started by now, and its id is what Ctrl-C prints.
    const runId = await start();
    const progress = new SnapshotProgress(json ? 'json' : 'plain', stdoutFor(io));
    let last;
    for await (const detail of followRun(client, runId, { signal: stop.signal })) {
      progress.onSnapshot(detail.run);
      last = detail;
    }
    if (last === undefined || !isOver(last)) {
      const again = `caravan status ${runId} --controller ${client.where}`;
      io.stderr(`\ncaravan: detached (${signal ?? 'stopped'}); run ${runId} goes on in the controller: ${again} shows it, caravan logs ${runId} <task> --follow --controller ${client.where} follows a task, caravan cancel ${runId} --controller ${client.where} cancels it\n`);
      return signal === 'SIGTERM' ? EXIT.TERMINATED : EXIT.INTERRUPTED;
    }
    const r = last.run;
    const summary = `run ${r.runId} of ${r.workflow} ${r.status}${r.durationMs !== undefined ? ` in ${formatDuration(r.durationMs)}` : ''}${r.failureReason !== undefined && r.status === 'failed' ? `: ${r.failureReason}` : ''}\nrecorded by the controller at ${client.where}: caravan status ${r.runId} --controller ${client.where}\n`;
    (json ? io.stderr : stdoutFor(io))(summary);
    return r.status === 'succeeded' ? EXIT.OK : EXIT.FAILED;
  } finally {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
  }
}

export interface RemoteRunsOptions {
  workflow?: string;
  status?: RunStatus;
  limit?: number;
}

/** `caravan runs --controller`: the controller's runs, newest first, a page at a time. */
export async function remoteRunsCommand(client: ApiClient, options: RemoteRunsOptions, io: Io): Promise<ExitCode> {
  const { workflow, status, limit } = options;
  const runs: RunSummary[] = [];
  let cursor: string | undefined;
  do {
    const page = await client.listRuns({ ...(workflow !== undefined ? { workflow } : {}), ...(status !== undefined ? { status } : {}), limit: Math.min(500, (limit ?? Infinity) - runs.length), ...(cursor !== undefined ? { cursor } : {}) });
    runs.push(...page.runs);
    cursor = page.nextCursor;
  } while (cursor !== undefined && runs.length < (limit ?? Infinity));
  if (runs.length === 0) {
    io.stdout(`no ${status !== undefined ? `${status} ` : ''}runs${workflow !== undefined ? ` of ${workflow}` : ''} in the controller at ${client.where}\n`);
    return EXIT.OK;
  }
  stdoutFor(io)(runsTable(runs, 'live in the controller'));
  if (cursor !== undefined) io.stderr(`caravan: the ${runs.length} newest shown; there are more (raise --limit)\n`);
  return EXIT.OK;
}

/** `caravan status --controller`. */
export async function remoteStatusCommand(client: ApiClient, runId: string, io: Io, json: boolean): Promise<ExitCode> {
  const detail = await client.getRun(runId);
  if (json) {
    io.stdout(JSON.stringify({ ...detail.run, live: detail.live }) + '\n');
    return EXIT.OK;
  }
  const out = stdoutFor(io);
  printStatus(detail.run, detail.live ? ` (live in the controller at ${client.where})` : '', { stdout: out }, out);
  return EXIT.OK;
}

export interface RemoteLogsOptions {
  timestamps?: boolean;
  follow?: boolean;
}

/**
 * `caravan logs --controller`: one task's lines (the API serves a task at a time), or every
 * task's, merged by time. --follow streams one task's lines until the run ends.
 */
export async function remoteLogsCommand(client: ApiClient, runId: string, task: string | undefined, options: RemoteLogsOptions, io: Io): Promise<ExitCode> {
  const out = stdoutFor(io);
  const timestamps = options.timestamps === true;
  let count = 0;
  if (options.follow === true) {
    if (task === undefined) throw new CaravanError('USAGE', 'logs --follow with --controller follows one task: name it (caravan logs <run-id> <task> --follow)');
    for await (const line of client.followLogs(runId, task)) {
      out(logLineText(line, timestamps));
      count++;
    }
  } else {
    const tasks = task !== undefined ? [task] : Object.keys((await client.getRun(runId)).run.tasks);
    const lines: LogLine[] = [];
    for (const t of tasks) lines.push(...(await client.logs(runId, t)));
    // Each task's lines are in order; a stable sort by time interleaves them as they were written.
    if (tasks.length > 1) lines.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
    for (const l of lines) out(logLineText(l, timestamps));
    count = lines.length;
  }
  if (count === 0) io.stderr(`caravan: no log lines${task !== undefined ? ` for ${task}` : ''} in run ${runId}\n`);
  return EXIT.OK;
}

/** approve, reject, cancel, pause, unpause through the controller, recorded with the token's name. */
export async function remoteControlCommand(client: ApiClient, action: RemoteAction, runId: string, task: string | undefined, reason: string | undefined, io: Io): Promise<ExitCode> {
  const done = await client.act(runId, action, { ...(task !== undefined ? { task } : {}), ...(reason !== undefined ? { comment: reason } : {}) });
  io.stdout(`sent ${action}${task !== undefined ? ` ${task}` : ''} to run ${runId} (as ${forTerminal(done.by)}, through the controller at ${client.where})\n`);
  return EXIT.OK;
}
