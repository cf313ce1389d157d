import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, fstatSync, mkdirSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export interface WorkerJob {
  /** A POSIX shell script (exports, cd, then the command), given the outputs file path. */
  script: (outputsFile: string) => string;
  timeoutMs?: number;
  signal: AbortSignal;
  onLine: (stream: 'stdout' | 'stderr', line: string) => void;
  /** Where the job writes its outputs; removed before the job starts. */
  outputsFile: (workerDir: string) => string;
  /** The command is plain (no $, quotes or shell syntax): it may run in a subshell of the worker. */
  direct?: boolean;
}

export type WorkerResult = { kind: 'exit'; status: number; outputsFile: string } | { kind: 'timeout' | 'cancelled' | 'lost'; outputsFile: string };

interface Worker {
  child: ChildProcess;
  dir: string;
  /** Kept open for the worker's life: rewriting and reading them costs no open() per job. */
  fds: { run: number; out: number; err: number } | undefined;
  busy: boolean;
  pending?: (status: number) => void;
  dead: boolean;
}

// A job is a fresh `/bin/sh run.sh`, exactly like `sh -c` (its own $$, exports and cd). A
// plain command with no shell syntax (mode f) skips that shell, as make does: a subshell of
// the worker (a fork) sources the script, so a builtin such as `true` costs no exec at all.
const LOOP = 'while IFS=" " read -r m j; do if [ "$m" = f ]; then ( . "$j/run.sh" ); else /bin/sh "$j/run.sh"; fi </dev/null >"$j/out" 2>"$j/err"; echo "$?"; done';
const MAX_LINE = 4096;
export const KILL_GRACE_MS = 5_000;

/**
 * Long-lived `/bin/sh` workers that run commands for the local executor. Starting a process
 * from Node costs about 2-4 ms (it forks the whole Node process); a small shell forks in a
 * fraction of that, and two workers fork on two cores at once. Each worker is its own
 * process group and runs one job at a time, so a timeout or cancel kills the worker's group
 * (the job and everything it started) and a fresh worker takes its place.
 */
export class ShellWorkerPool {
  private readonly idle: Worker[] = [];
  private readonly all = new Set<Worker>();
  private readonly waiting: Array<(w: Worker) => void> = [];
  private seq = 0;

  constructor(private readonly size: number, private readonly root: string) {}

  private create(): Worker {
    const dir = join(this.root, `w${this.seq++}`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const child = spawn('/bin/sh', ['-c', LOOP], { detached: true, stdio: ['pipe', 'pipe', 'ignore'] });
    const fds = { run: openSync(join(dir, 'run.sh'), 'w+', 0o600), out: openSync(join(dir, 'out'), 'a+'), err: openSync(join(dir, 'err'), 'a+') };
    const w: Worker = { child, dir, fds, busy: false, dead: false };
    createInterface({ input: child.stdout! }).on('line', (l) => {
      const done = w.pending;
      w.pending = undefined;
      done?.(Number(l));
    });
    child.on('exit', () => {
      w.dead = true;
      // A killed job's last output is still read through these; run() closes them then.
      if (!w.busy) closeFds(w);
      this.all.delete(w);
      const i = this.idle.indexOf(w);
      if (i >= 0) this.idle.splice(i, 1);
      const done = w.pending;
      w.pending = undefined;
      done?.(-1);
    });
    child.stdin!.on('error', () => undefined);
    this.all.add(w);
    return w;
  }

  private acquire(): Promise<Worker> {
    const w = this.idle.pop();
    if (w !== undefined) return Promise.resolve(w);
    if (this.all.size < this.size) return Promise.resolve(this.create());
    return new Promise((r) => this.waiting.push(r));
  }

  private release(w: Worker): void {
    w.busy = false;
    if (w.dead) {
      const next = this.waiting.shift();
      if (next !== undefined) next(this.create());
      return;
    }
    const next = this.waiting.shift();
    if (next !== undefined) next(w);
    else this.idle.push(w);
  }

  async run(job: WorkerJob): Promise<WorkerResult> {
    const w = await this.acquire();
    w.busy = true;
    const outputsFile = job.outputsFile(w.dir);
    rmSync(outputsFile, { force: true });
    const fds = w.fds!;
    // No truncate (slow on some file systems): the script ends in `exit`, so whatever a longer
    // earlier script left after it is never read.
    const script = Buffer.from(`${job.script(outputsFile)}\nexit\n`);
    writeSync(fds.run, script, 0, script.length, 0);
    // The worker truncates out and err (same files) as each job starts.
    const tails = { stdout: new Tail(fds.out), stderr: new Tail(fds.err) };
    let reason: 'timeout' | 'cancelled' | undefined;
    const kill = (why: 'timeout' | 'cancelled'): void => {
      if (reason !== undefined) return;
      reason = why;
      signalGroup(w, 'SIGTERM');
      setTimeout(() => signalGroup(w, 'SIGKILL'), KILL_GRACE_MS).unref();
    };
    const onAbort = (): void => kill('cancelled');
    job.signal.addEventListener('abort', onAbort);
    const timer = job.timeoutMs !== undefined ? setTimeout(() => kill('timeout'), job.timeoutMs) : undefined;
    // Long jobs stream their lines; short ones are read once at the end.
    const poll = setInterval(() => {
      tails.stdout.read((l) => job.onLine('stdout', l), false);
      tails.stderr.read((l) => job.onLine('stderr', l), false);
    }, 250);
    const status = await new Promise<number>((resolve) => {
      w.pending = resolve;
      if (job.signal.aborted) kill('cancelled');
      w.child.stdin!.write(`${job.direct === true ? 'f' : 's'} ${w.dir}\n`);
    });
    clearInterval(poll);
    if (timer !== undefined) clearTimeout(timer);
    job.signal.removeEventListener('abort', onAbort);
    tails.stdout.read((l) => job.onLine('stdout', l), true);
    tails.stderr.read((l) => job.onLine('stderr', l), true);
    if (reason !== undefined) signalGroup(w, 'SIGKILL');
    if (w.dead) closeFds(w);
    this.release(w);
    if (reason !== undefined) return { kind: reason, outputsFile };
    if (status < 0) return { kind: 'lost', outputsFile };
    return { kind: 'exit', status, outputsFile };
  }

  close(): void {
    for (const w of this.all) {
      w.child.stdin!.end();
      signalGroup(w, 'SIGKILL');
      closeFds(w);
      w.dead = true;
    }
    this.all.clear();
    this.idle.length = 0;
  }
}

function closeFds(w: Worker): void {
  if (w.fds === undefined) return;
  for (const fd of Object.values(w.fds)) closeSync(fd);
  w.fds = undefined;
}

function signalGroup(w: Worker, sig: NodeJS.Signals): void {
  if (w.child.pid === undefined || w.dead) return;
  try {
    process.kill(-w.child.pid, sig);
  } catch {
    // Already gone.
  }
}

/** Reads new complete lines of a growing file, through a descriptor kept open. */
class Tail {
  private offset = 0;
  private partial = '';

  constructor(private readonly fd: number) {}

  read(onLine: (l: string) => void, final: boolean): void {
    const size = fstatSync(this.fd).size;
    if (size > this.offset) {
      const buf = Buffer.alloc(Math.min(size - this.offset, 8 * 1024 * 1024));
      const n = readSync(this.fd, buf, 0, buf.length, this.offset);
      this.offset += n;
      this.partial += buf.subarray(0, n).toString('utf8');
    }
    let i = this.partial.indexOf('\n');
    while (i !== -1) {
      onLine(this.partial.slice(0, Math.min(i, MAX_LINE)));
      this.partial = this.partial.slice(i + 1);
      i = this.partial.indexOf('\n');
    }
    if (final && this.partial !== '') {
      onLine(this.partial.slice(0, MAX_LINE));
      this.partial = '';
    }
  }
}

/** Single-quotes a string for POSIX sh. */
export function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
