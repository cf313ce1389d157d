import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { CaravanError } from '../engine/errors/CaravanError.js';

/** What a shell attempt is asked to keep of its standard output (a `{name, from: stdout}` output). */
export interface StdoutCaptureSpec {
  /** The task, for the error past the cap. */
  task: string;
  /** The output the text becomes. */
  output: string;
  maxBytes: number;
}

/**
 * A task's stdout was longer than its output may hold. The attempt fails with this rather
 * than keep a cut value: a downstream task would read half a JSON document as if it were whole.
 */
export class StdoutTooLargeError extends CaravanError {
  constructor(spec: StdoutCaptureSpec) {
    super('OUTPUT_TOO_LARGE', `task '${spec.task}' wrote more than ${spec.maxBytes} bytes to stdout, the cap of its output '${spec.output}' (from: stdout); nothing was kept: raise maxBytes (at most 1048576) or write less`, { data: { task: spec.task, output: spec.output, maxBytes: spec.maxBytes } });
    this.name = 'StdoutTooLargeError';
  }
}

/**
 * The captured text as the output's value: trailing newlines go, as in the shell's `$(...)`
 * and Argo's `outputs.result`, so `echo 42` gives `42`.
 */
export function stdoutValue(text: string): string {
  return text.replace(/(\r?\n)+$/, '');
}

/**
 * Collects the stdout of a process as it arrives, keeping at most `maxBytes` bytes: past the
 * cap it only notes that there was more, so memory stays bounded whatever the task writes.
 */
export class StdoutCollector {
  private readonly chunks: Buffer[] = [];
  private bytes = 0;
  private over = false;

  constructor(private readonly spec: StdoutCaptureSpec) {}

  push(chunk: Buffer): void {
    if (this.over) return;
    if (this.bytes + chunk.length > this.spec.maxBytes) {
      this.over = true;
      this.chunks.length = 0;
      return;
    }
    this.bytes += chunk.length;
    this.chunks.push(chunk);
  }

  /** The output's value, or the error when stdout passed the cap. */
  result(): { ok: true; value: string } | { ok: false; error: StdoutTooLargeError } {
    if (this.over) return { ok: false, error: new StdoutTooLargeError(this.spec) };
    return { ok: true, value: stdoutValue(Buffer.concat(this.chunks).toString('utf8')) };
  }
}

/**
 * Reads a finished job's stdout from the file a shell worker wrote it to, refusing it unread
 * past the cap (the worker's file holds all of it, however large).
 */
export function readStdoutFile(path: string, spec: StdoutCaptureSpec): { ok: true; value: string } | { ok: false; error: StdoutTooLargeError } {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    // The worker creates the file as the job starts; none means the job wrote nothing.
    return { ok: true, value: '' };
  }
  try {
    const size = fstatSync(fd).size;
    if (size > spec.maxBytes) return { ok: false, error: new StdoutTooLargeError(spec) };
    const buf = Buffer.alloc(size);
    let n = 0;
    while (n < size) {
      const got = readSync(fd, buf, n, size - n, n);
      if (got === 0) break;
      n += got;
    }
    return { ok: true, value: stdoutValue(buf.subarray(0, n).toString('utf8')) };
  } finally {
    closeSync(fd);
  }
}
