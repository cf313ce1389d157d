import { setLongTimeout } from '../engine/run/longTimeout.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { join, resolve } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import type { AgentAction, AgentIo, AgentResult, AgentType } from './AgentType.js';
import { readStdoutFile, StdoutCollector, type StdoutTooLargeError } from './captureStdout.js';
import { readOutputs } from './readOutputs.js';
import { adoptOrphanJob, LineSplitter, shQuote, type OrphanJob, type ShellWorkerPool, type WorkerResult } from './ShellWorkerPool.js';

/** How long a process group gets between SIGTERM and SIGKILL. */
export const KILL_GRACE_MS = 5_000;

/** Words the shell must interpret itself; a command using them always goes through /bin/sh. */
const SHELL_ONLY = new Set(['cd', 'exit', 'export', 'set', 'unset', 'ulimit', 'umask', 'exec', '.', 'source', 'eval', 'read', 'wait', 'alias', 'shift', 'trap', 'return', 'break', 'continue', 'times', 'type', 'hash', 'command', 'builtin', 'readonly', 'local', 'getopts', 'jobs', 'fg', 'bg']);
const SIMPLE = /^[A-Za-z0-9_/.,:+@%-]+( +[A-Za-z0-9_/.,:=+@%-]+)*$/;

/** A `run` with no shell syntax at all, whose first word is not a shell builtin. */
function isPlainCommand(run: string): boolean {
  const trimmed = run.trim();
  return SIMPLE.test(trimmed) && !SHELL_ONLY.has(trimmed.split(/ +/)[0]!);
}

/**
 * `run` goes through `/bin/sh -c`; `args` runs without a shell. As GNU make does, a `run`
 * that is a plain command with no shell syntax at all is executed directly: same behaviour,
 * one process fewer. Each attempt gets its own process group, so a timeout or cancel kills
 * everything the command started.
 */
export const shellAgent: AgentType = {
  name: 'shell',
  async run(action: AgentAction, io: AgentIo): Promise<AgentResult> {
    let argv: string[];
    if (action.args !== undefined) argv = action.args;
    else if (action.run !== undefined) {
      argv = isPlainCommand(action.run) ? action.run.trim().split(/ +/) : ['/bin/sh', '-c', action.run];
    } else return { ok: false, error: 'the shell agent needs run or args', retryable: false };
    const cwd = action.workingDir !== undefined ? resolve(io.baseDir, action.workingDir) : io.baseDir;
    if (io.workers !== undefined) return runInWorker(io.workers, action, cwd, io);
    const outputsFile = join(io.scratchDir, 'outputs');
    return runProcess(argv, { ...process.env, ...action.env, CARAVAN_OUTPUTS: outputsFile }, cwd, action, io, outputsFile);
  },
};

function runProcess(argv: string[], env: NodeJS.ProcessEnv, cwd: string, action: AgentAction, io: AgentIo, outputsFile: string): Promise<AgentResult> {
  return new Promise((done) => {
    let child: ChildProcess;
    try {
      child = spawn(argv[0]!, argv.slice(1), { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      done({ ok: false, error: `cannot start '${argv[0]}': ${(e as Error).message}`, retryable: false });
      return;
    }
    let reason: 'timeout' | 'cancel' | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    const kill = (why: 'timeout' | 'cancel'): void => {
      if (reason !== undefined) return;
      reason = why;
      signalGroup(child, 'SIGTERM');
      killTimer = setTimeout(() => signalGroup(child, 'SIGKILL'), KILL_GRACE_MS);
    };
    const timer = action.timeoutMs !== undefined ? setLongTimeout(() => kill('timeout'), action.timeoutMs) : undefined;
    const onAbort = (): void => kill('cancel');
    io.signal.addEventListener('abort', onAbort);
    if (io.signal.aborted) kill('cancel');
    const collector = action.stdout !== undefined ? new StdoutCollector(action.stdout) : undefined;
    lines(child.stdout!, (l) => io.log('stdout', l), collector !== undefined ? (b) => collector.push(b) : undefined);
    let lastErr = '';
    lines(child.stderr!, (l) => {
      lastErr = l;
      io.log('stderr', l);
    });
    let spawnError: NodeJS.ErrnoException | undefined;
    child.on('error', (e: NodeJS.ErrnoException) => {
      spawnError = e;
    });
    child.on('close', (code, signal) => {
      timer?.clear();
      if (killTimer !== undefined) clearTimeout(killTimer);
      io.signal.removeEventListener('abort', onAbort);
      // The group may still hold children that ignored SIGTERM.
      if (reason !== undefined) signalGroup(child, 'SIGKILL');
      if (spawnError !== undefined) {
        const notFound = spawnError.code === 'ENOENT';
        done({ ok: false, error: notFound ? `command not found: ${argv[0]}` : `cannot start '${argv[0]}': ${spawnError.message}`, retryable: false, exitCode: notFound ? 127 : 126 });
        return;
      }
      if (reason === 'timeout') {
        done({ ok: false, error: `timed out after ${formatMs(action.timeoutMs ?? 0)}; the process group was killed`, retryable: true, failure: 'timeout' });
        return;
      }
      if (reason === 'cancel') {
        done({ ok: false, error: 'cancelled', retryable: false });
        return;
      }
      if (signal !== null) {
        done({ ok: false, error: `killed by ${signal}`, retryable: true, failure: 'infrastructure' });
        return;
      }
      if (code === 127) {
        done({ ok: false, error: `command not found (exit 127)${lastErr !== '' ? `: ${lastErr}` : ''}`, retryable: false, exitCode: 127 });
        return;
      }
      if (code !== 0) {
        done({ ok: false, error: `exited with code ${code}${lastErr !== '' ? `: ${lastErr}` : ''}`, retryable: true, exitCode: code ?? -1, failure: 'exit' });
        return;
      }
      void readOutputs(outputsFile, action.outputs).then((r) => {
        done(withStdout(r.ok ? { ok: true, outputs: r.outputs, exitCode: 0 } : { ok: false, error: r.error, retryable: false, exitCode: 0 }, action, () => collector!.result()));
      });
    });
  });
}

/**
 * A successful attempt's result with its captured stdout added as an output; past the cap,
 * the attempt fails (not retried: the same command would write as much again).
 */
function withStdout(r: AgentResult, action: AgentAction, captured: () => { ok: true; value: string } | { ok: false; error: StdoutTooLargeError }): AgentResult {
  if (!r.ok || action.stdout === undefined) return r;
  const c = captured();
  if (!c.ok) return { ok: false, error: c.error.message, code: c.error.code, retryable: false, exitCode: 0 };
  return { ...r, outputs: { ...r.outputs, [action.stdout.output]: c.value } };
}

const SIGNALS = new Map(Object.entries(osConstants.signals).map(([name, n]) => [n, name]));

async function runInWorker(pool: ShellWorkerPool, action: AgentAction, cwd: string, io: AgentIo): Promise<AgentResult> {
  const lines = Object.entries(action.env).map(([k, v]) => `export ${k}=${shQuote(v)}`);
  const plain = action.args === undefined && isPlainCommand(action.run!);
  const body = action.args !== undefined ? `exec ${action.args.map(shQuote).join(' ')}` : action.run!;
  let lastErr = '';
  return pool.run({
    script: (outputs: string) => `${lines.join('\n')}\nexport CARAVAN_OUTPUTS=${shQuote(outputs)}\ncd ${shQuote(cwd)} || exit 126\n${body}\n`,
    outputsFile: (dir) => join(dir, 'outputs'),
    ...(io.label !== undefined ? { label: io.label } : {}),
    direct: plain || action.args !== undefined,
    ...(action.timeoutMs !== undefined ? { timeoutMs: action.timeoutMs } : {}),
    signal: io.signal,
    onLine: (stream, l) => {
      if (stream === 'stderr') lastErr = l;
      io.log(stream, l);
    },
  }, (r) => workerOutcome(r, action, lastErr));
}

/** What a job in a worker came to, as the attempt's result (the same whoever watched it end). */
async function workerOutcome(r: WorkerResult, action: AgentAction, lastErr: string): Promise<AgentResult> {
  if (r.kind !== 'exit') {
    if (r.kind === 'timeout') return { ok: false, error: `timed out after ${formatMs(action.timeoutMs ?? 0)}; the process group was killed`, retryable: true, failure: 'timeout' };
    if (r.kind === 'cancelled') return { ok: false, error: 'cancelled', retryable: false };
    return { ok: false, error: 'the shell running the task died', retryable: true, failure: 'infrastructure' };
  }
  const code = r.status;
  if (code === 0) {
    const out = await readOutputs(r.outputsFile, action.outputs);
    return withStdout(out.ok ? { ok: true, outputs: out.outputs, exitCode: 0 } : { ok: false, error: out.error, retryable: false, exitCode: 0 }, action, () => readStdoutFile(r.stdoutFile, action.stdout!));
  }
  if (code === 127) return { ok: false, error: `command not found (exit 127)${lastErr !== '' ? `: ${lastErr}` : ''}`, retryable: false, exitCode: 127 };
  // The shell reports a death by signal N as 128+N.
  const sig = code > 128 ? SIGNALS.get(code - 128) : undefined;
  if (sig !== undefined) return { ok: false, error: `killed by ${sig}`, retryable: true, exitCode: code, failure: 'infrastructure' };
  return { ok: false, error: `exited with code ${code}${lastErr !== '' ? `: ${lastErr}` : ''}`, retryable: true, exitCode: code, failure: 'exit' };
}

/** The worker an orphaned job runs in, as the process that adopts it sees it. */
export interface OrphanWorker {
  alive(): boolean;
  signal(sig: NodeJS.Signals): void;
}

/**
 * Takes over a shell attempt that a dead process started in a worker: waits for it if it
 * still runs (killing it on cancel or when the rest of its timeout runs out), or reads how it
 * ended; its output after the lines already reported is reported now. The result is what the
 * dead process would have reported, so the attempt never runs twice.
 */
export function adoptShellJob(job: OrphanJob, worker: OrphanWorker, action: AgentAction, io: AgentIo, skip?: { stdout: number; stderr: number }): Promise<AgentResult> {
  let lastErr = '';
  return adoptOrphanJob(job, {
    workerAlive: () => worker.alive(),
    signalWorker: (sig) => worker.signal(sig),
    signal: io.signal,
    ...(action.timeoutMs !== undefined ? { timeoutMs: action.timeoutMs - (Date.now() - job.writtenAt) } : {}),
    ...(skip !== undefined ? { skip } : {}),
    onLine: (stream, l) => {
      if (stream === 'stderr') lastErr = l;
      io.log(stream, l);
    },
  }).then((r) => workerOutcome(r, action, lastErr));
}

function signalGroup(child: ChildProcess, sig: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, sig);
  } catch {
    // Already gone.
  }
}

/**
 * Hands on the stream's lines as they come, each bounded (see LineSplitter), and with
 * `onBytes` its raw bytes too (stdout capture counts bytes, not characters).
 */
function lines(stream: NodeJS.ReadableStream, onLine: (l: string) => void, onBytes?: (b: Buffer) => void): void {
  const split = new LineSplitter(onLine);
  const decoder = new StringDecoder('utf8');
  stream.on('data', (chunk: Buffer) => {
    onBytes?.(chunk);
    split.push(decoder.write(chunk));
  });
  stream.on('end', () => {
    split.push(decoder.end());
    split.end();
  });
}

export function formatMs(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  if (ms < 60_000) return `${+(ms / 1000).toFixed(1)}s`;
  if (ms < 3_600_000) return `${+(ms / 60_000).toFixed(1)}m`;
  return `${+(ms / 3_600_000).toFixed(1)}h`;
}
