import { setLongTimeout } from '../engine/run/longTimeout.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, fstatSync, mkdirSync, openSync, readdirSync, readSync, rmSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { StringDecoder } from 'node:string_decoder';

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
  /**
   * Names the job for a later process (the attempt's key): if this process dies while the
   * job runs, the job goes on, and findOrphanJob finds it by this label.
   */
  label?: string;
}

/** How a job ended, and where it left its outputs file and its whole stdout (read before the worker's next job). */
export type WorkerResult = { kind: 'exit'; status: number; outputsFile: string; stdoutFile: string } | { kind: 'timeout' | 'cancelled' | 'lost'; outputsFile: string; stdoutFile: string };

interface Worker {
  child: ChildProcess;
  dir: string;
  /** Kept open for the worker's life: rewriting and reading them costs no open() per job. */
  fds: { run: number; out: number; err: number } | undefined;
  busy: boolean;
  pending?: (status: number) => void;
  dead: boolean;
  /** Jobs given to this worker; the job's number ties its status file to its script. */
  seq: number;
}

// A job is a fresh `/bin/sh run.sh`, exactly like `sh -c` (its own $$, exports and cd). A
// plain command with no shell syntax (mode f) skips that shell, as make does: a subshell of
// the worker (a fork) sources the script, so a builtin such as `true` costs no exec at all.
// The exit status goes to the `status` file (with the job's number) before the pipe: if
// Node was killed meanwhile, the job still ends, and the file tells the next process how.
// The file is opened once ($1 is the worker's directory) and appended to: a redirection per
// job (open, truncate, close) cost a third of a millisecond, about 20% of a run of `true`s.
const LOOP = 'exec 3>>"$1/status"; while IFS=" " read -r m j n; do if [ "$m" = f ]; then ( exec 3>&-; . "$j/run.sh" ); else /bin/sh "$j/run.sh" 3>&-; fi </dev/null >"$j/out" 2>"$j/err"; s=$?; echo "$n $s" >&3; echo "$s"; done';
/** The first line of every job's script: `# caravan-job <number> <label as JSON>`. */
const JOB_LINE = /^# caravan-job (\d+) ("(?:[^"\\]|\\.)*")$/;
export const KILL_GRACE_MS = 5_000;
/**
 * The longest line handed on, in characters; the rest of a longer line is dropped. The runner
 * masks secrets and then cuts lines much shorter, so a secret cut in two here is cut off there
 * too. It bounds memory: a task writing gigabytes without a newline costs this much.
 */
export const MAX_SPLIT_LINE = 64 * 1024;
/** Read in pieces of this size; reads are synchronous, so one buffer serves every worker. */
const CHUNK = Buffer.allocUnsafe(64 * 1024);
/** What one poll reads at most, so a job writing fast cannot hold the event loop. */
const POLL_BYTES = 8 * 1024 * 1024;

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

  /**
   * `root` holds one directory per worker. `onWorker` is told each new worker's directory and
   * process (the executor notes who it is, for the process that finds its jobs orphaned).
   */
  constructor(private readonly size: number, private readonly root: string, private readonly onWorker?: (dir: string, pid: number) => void) {}

  private create(): Worker {
    const dir = join(this.root, `w${this.seq++}`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const child = spawn('/bin/sh', ['-c', LOOP, 'caravan-worker', dir], { detached: true, stdio: ['pipe', 'pipe', 'ignore'] });
    const fds = { run: openSync(join(dir, 'run.sh'), 'w+', 0o600), out: openSync(join(dir, 'out'), 'a+'), err: openSync(join(dir, 'err'), 'a+') };
    const w: Worker = { child, dir, fds, busy: false, dead: false, seq: 0 };
    if (child.pid !== undefined) this.onWorker?.(dir, child.pid);
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
    // EPIPE from a worker that died: its 'exit' handler above fails the job it was running.
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

  /**
   * Runs a job on a free worker (waiting for one). `finish` reads what the job left in the
   * worker's directory (its outputs file) before the worker is handed to the next job, which
   * removes that file first: released any earlier, a waiting job would delete the outputs of
   * the one that just ended.
   */
  async run<T>(job: WorkerJob, finish: (r: WorkerResult) => Promise<T>): Promise<T> {
    const w = await this.acquire();
    w.busy = true;
    const outputsFile = job.outputsFile(w.dir);
    rmSync(outputsFile, { force: true });
    const fds = w.fds!;
    // No truncate (slow on some file systems): the script ends in `exit`, so whatever a longer
    // earlier script left after it is never read.
    const seq = ++w.seq;
    const script = Buffer.from(`# caravan-job ${seq} ${JSON.stringify(job.label ?? '')}\n${job.script(outputsFile)}\nexit\n`);
    writeSync(fds.run, script, 0, script.length, 0);
    // The worker truncates out and err (same files) as each job starts.
    const tails = { stdout: new Tail(fds.out, (l) => job.onLine('stdout', l)), stderr: new Tail(fds.err, (l) => job.onLine('stderr', l)) };
    let reason: 'timeout' | 'cancelled' | undefined;
    const kill = (why: 'timeout' | 'cancelled'): void => {
      if (reason !== undefined) return;
      reason = why;
      signalGroup(w, 'SIGTERM');
      setTimeout(() => signalGroup(w, 'SIGKILL'), KILL_GRACE_MS).unref();
    };
    const onAbort = (): void => kill('cancelled');
    job.signal.addEventListener('abort', onAbort);
    const timer = job.timeoutMs !== undefined ? setLongTimeout(() => kill('timeout'), job.timeoutMs) : undefined;
    // Long jobs stream their lines; short ones are read once at the end.
    const poll = setInterval(() => {
      tails.stdout.read(false);
      tails.stderr.read(false);
    }, 250);
    const status = await new Promise<number>((resolve) => {
      w.pending = resolve;
      if (job.signal.aborted) kill('cancelled');
      w.child.stdin!.write(`${job.direct === true ? 'f' : 's'} ${w.dir} ${seq}\n`);
    });
    clearInterval(poll);
    timer?.clear();
    job.signal.removeEventListener('abort', onAbort);
    tails.stdout.read(true);
    tails.stderr.read(true);
    if (reason !== undefined) signalGroup(w, 'SIGKILL');
    if (w.dead) closeFds(w);
    const stdoutFile = join(w.dir, 'out');
    const result: WorkerResult = reason !== undefined ? { kind: reason, outputsFile, stdoutFile } : status < 0 ? { kind: 'lost', outputsFile, stdoutFile } : { kind: 'exit', status, outputsFile, stdoutFile };
    try {
      return await finish(result);
    } finally {
      this.release(w);
    }
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

/** A job that a dead process gave to a worker: it may still run, or have ended unseen. */
export interface OrphanJob {
  /** The worker's directory (script, output, status, outputs file). */
  dir: string;
  seq: number;
  /** When its script was written (the job started then or just after), in ms since the epoch. */
  writtenAt: number;
}

/**
 * Reads at most `bytes` bytes of a file, from its start (a script's first line) or its end
 * (the last status line), or undefined when there is no such file: a worker that never ran a
 * job, or whose job has not ended.
 */
function readPart(path: string, from: 'start' | 'end', bytes: number): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    // No such file: nothing to read, which the caller takes as "no job" or "not ended".
    return undefined;
  }
  try {
    const size = from === 'end' ? fstatSync(fd).size : bytes;
    const buf = Buffer.alloc(Math.min(bytes, size));
    const n = readSync(fd, buf, 0, buf.length, from === 'end' ? size - buf.length : 0);
    return buf.subarray(0, n).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** The job labelled `label` among the worker directories under `root` (a dead pool's root). */
export function findOrphanJob(root: string, label: string): OrphanJob | undefined {
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    // The pool never started a worker.
    return undefined;
  }
  for (const name of names) {
    const dir = join(root, name);
    const job = lastJob(dir);
    if (job?.label === label) return { dir, seq: job.seq, writtenAt: statSync(join(dir, 'run.sh')).mtimeMs };
  }
  return undefined;
}

/** The last job given to the worker whose directory this is: its number and label. */
function lastJob(dir: string): { seq: number; label: string } | undefined {
  const head = readPart(join(dir, 'run.sh'), 'start', 1024);
  const nl = head?.indexOf('\n') ?? -1;
  const m = nl < 0 ? null : JOB_LINE.exec(head!.slice(0, nl));
  if (m === null) return undefined;
  try {
    const label: unknown = JSON.parse(m[2]!);
    return typeof label === 'string' ? { seq: Number(m[1]), label } : undefined;
  } catch {
    // Not a label this pool wrote (a damaged file): no job to find there.
    return undefined;
  }
}

/**
 * The last job of a worker directory (undefined for a worker that ran none): its label, and
 * whether it ended (its worker recorded its exit status).
 */
export function lastJobOf(dir: string): { label: string; ended: boolean } | undefined {
  const job = lastJob(dir);
  return job === undefined ? undefined : { label: job.label, ended: orphanJobStatus({ dir, seq: job.seq, writtenAt: 0 }) !== undefined };
}

/** The exit status of an orphaned job, once its worker recorded one for this job. */
export function orphanJobStatus(job: OrphanJob): number | undefined {
  // One line per job is appended: the last complete line is the last job's.
  const tail = readPart(join(job.dir, 'status'), 'end', 128);
  const lines = tail?.split('\n').filter((l) => l !== '');
  const line = tail?.endsWith('\n') === true ? lines?.at(-1)?.split(' ') : undefined;
  if (line === undefined || line.length !== 2 || Number(line[0]) !== job.seq) return undefined;
  return Number(line[1]);
}

export interface AdoptOptions {
  /** Whether the worker that runs the job is still alive (a dead one without a status lost it). */
  workerAlive: () => boolean;
  /** Signals the worker's process group (the job and everything it started). */
  signalWorker: (sig: NodeJS.Signals) => void;
  signal: AbortSignal;
  /** What is left of the attempt's timeout. */
  timeoutMs?: number;
  onLine: (stream: 'stdout' | 'stderr', line: string) => void;
  /** Lines of each stream already reported by the dead process: not handed on again. */
  skip?: { stdout: number; stderr: number };
  pollMs?: number;
}

/**
 * Follows an orphaned job to its end as if this process had started it: its output is read
 * from its files (after the lines already reported), a cancel or the rest of its timeout
 * kills its worker's group, and the result is the one run() would have given.
 */
export async function adoptOrphanJob(job: OrphanJob, options: AdoptOptions): Promise<WorkerResult> {
  const outputsFile = join(job.dir, 'outputs');
  const open = (name: string): number | undefined => {
    try {
      return openSync(join(job.dir, name), 'r');
    } catch {
      // The worker died before it created the file: nothing was written to it.
      return undefined;
    }
  };
  const fds = { out: open('out'), err: open('err') };
  const skipping = (stream: 'stdout' | 'stderr'): ((l: string) => void) => {
    let left = options.skip?.[stream] ?? 0;
    return (l) => {
      if (left > 0) left--;
      else options.onLine(stream, l);
    };
  };
  const tails = [fds.out !== undefined ? new Tail(fds.out, skipping('stdout')) : undefined, fds.err !== undefined ? new Tail(fds.err, skipping('stderr')) : undefined];
  let reason: 'timeout' | 'cancelled' | undefined;
  const kill = (why: 'timeout' | 'cancelled'): void => {
    if (reason !== undefined) return;
    reason = why;
    options.signalWorker('SIGTERM');
    setTimeout(() => options.signalWorker('SIGKILL'), KILL_GRACE_MS).unref();
  };
  const onAbort = (): void => kill('cancelled');
  options.signal.addEventListener('abort', onAbort);
  if (options.signal.aborted) kill('cancelled');
  const timer = options.timeoutMs !== undefined ? setLongTimeout(() => kill('timeout'), Math.max(0, options.timeoutMs)) : undefined;
  try {
    const status = await new Promise<number | undefined>((resolve) => {
      const look = (): void => {
        for (const t of tails) t?.read(false);
        const s = orphanJobStatus(job);
        // The status is written before the worker exits: read it again once it is gone.
        if (s !== undefined || !options.workerAlive()) resolve(s ?? orphanJobStatus(job));
        else setTimeout(look, options.pollMs ?? 100);
      };
      look();
    });
    for (const t of tails) t?.read(true);
    if (reason !== undefined) options.signalWorker('SIGKILL');
    const stdoutFile = join(job.dir, 'out');
    if (reason !== undefined) return { kind: reason, outputsFile, stdoutFile };
    return status === undefined ? { kind: 'lost', outputsFile, stdoutFile } : { kind: 'exit', status, outputsFile, stdoutFile };
  } finally {
    timer?.clear();
    options.signal.removeEventListener('abort', onAbort);
    if (fds.out !== undefined) closeSync(fds.out);
    if (fds.err !== undefined) closeSync(fds.err);
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

/**
 * Reads the lines of a growing file through a descriptor kept open, in fixed-size pieces:
 * memory stays one piece and one line however much a job writes, and the final read goes on
 * to the end of the file, so every line is counted.
 */
class Tail {
  private offset = 0;
  // Made on the first byte read: most jobs of a large run write nothing.
  private decoder: StringDecoder | undefined;
  private lines: LineSplitter | undefined;

  constructor(private readonly fd: number, private readonly onLine: (l: string) => void) {}

  read(final: boolean): void {
    for (let budget = final ? Infinity : POLL_BYTES; budget > 0; ) {
      const n = readSync(this.fd, CHUNK, 0, CHUNK.length, this.offset);
      if (n === 0) break;
      this.offset += n;
      budget -= n;
      this.decoder ??= new StringDecoder('utf8');
      this.lines ??= new LineSplitter(this.onLine);
      this.lines.push(this.decoder.write(CHUNK.subarray(0, n)));
    }
    if (final && this.lines !== undefined) {
      this.lines.push(this.decoder!.end());
      this.lines.end();
    }
  }
}

/**
 * Splits text arriving in pieces into lines, holding at most MAX_SPLIT_LINE characters: a
 * longer line is handed on cut at that length as soon as it reaches it, and the rest of it,
 * up to its newline, is dropped. Either way it is one line, so counts of lines stay exact.
 */
export class LineSplitter {
  private partial = '';
  /** Inside a line that was already handed on cut: drop everything up to its newline. */
  private cutting = false;

  constructor(private readonly onLine: (l: string) => void, private readonly maxLine = MAX_SPLIT_LINE) {}

  push(chunk: string): void {
    let start = 0;
    for (let nl = chunk.indexOf('\n'); nl !== -1; nl = chunk.indexOf('\n', start)) {
      if (this.cutting) this.cutting = false;
      else {
        const line = this.partial === '' ? chunk.slice(start, nl) : this.partial + chunk.slice(start, nl);
        this.partial = '';
        this.onLine(line.length > this.maxLine ? line.slice(0, this.maxLine) : line);
      }
      start = nl + 1;
    }
    if (start === chunk.length || this.cutting) return;
    // Never keep more than one character past the limit, however large the piece.
    this.partial += chunk.slice(start, start + this.maxLine + 1 - this.partial.length);
    if (this.partial.length > this.maxLine) {
      this.onLine(this.partial.slice(0, this.maxLine));
      this.partial = '';
      this.cutting = true;
    }
  }

  /** The text ended: a last line without a newline is a line too. */
  end(): void {
    if (!this.cutting && this.partial !== '') this.onLine(this.partial);
    this.partial = '';
    this.cutting = false;
  }
}

/** Single-quotes a string for POSIX sh. */
export function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
