/** Where the CLI writes; tests pass buffers, the bin passes the process streams. */
export interface Io {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  cwd: string;
  /** Whether stdout is a terminal (live progress is redrawn there). */
  isTTY?: boolean;
}

/**
 * The process's streams. A reader that goes away (`caravan logs <run> | head -1`) closes the
 * pipe: the next write fails with EPIPE, which Node raises as an 'error' event that would
 * crash the process with a stack trace. Instead, output to that stream stops quietly and the
 * command carries on to its end (a run still finishes and is recorded), as `git log | head`.
 * A terminal that was closed (SIGHUP) answers writes with EIO: the same, so that `caravan dev`
 * still stops its servers after its window went away.
 */
export function processIo(): Io {
  return {
    stdout: quietOnClose(process.stdout),
    stderr: quietOnClose(process.stderr),
    cwd: process.cwd(),
    isTTY: process.stdout.isTTY === true,
  };
}

function quietOnClose(stream: NodeJS.WriteStream): (text: string) => void {
  let closed = false;
  stream.on('error', (e: NodeJS.ErrnoException) => {
    // Only a reader that left is expected; anything else is a real failure to report.
    if (e.code !== 'EPIPE' && e.code !== 'EIO') throw e;
    closed = true;
  });
  return (text) => {
    if (!closed) stream.write(text);
  };
}
