import { constants } from 'node:fs';
import { lstat, open, realpath } from 'node:fs/promises';
import { isAbsolute, relative } from 'node:path';

/** Why a file was not read: it is not something Caravan reads, or it is too large. */
export type Refusal =
  | { kind: 'not-regular'; message: string }
  | { kind: 'outside'; message: string }
  | { kind: 'too-large'; size: number; message: string };

export type BoundedRead = { ok: true; bytes: Buffer } | { ok: false; refusal: Refusal };

/**
 * Reads a file that a user (or a pushed commit) put in front of Caravan, without trusting it:
 * only a regular file (a FIFO would hang the read, /dev/zero would grow without end, a
 * directory is no file), at most `limit` bytes (reading stops at limit + 1: a size from stat
 * means nothing for a device), and, when `root` is given, a symbolic link only if it resolves
 * inside `root` (a link to /etc/passwd must not be read and quoted in a diagnostic).
 * Errors of the file system itself (permissions, I/O) are thrown as they are.
 */
export async function readBoundedFile(path: string, limit: number, root?: string): Promise<BoundedRead> {
  if (root !== undefined && (await lstat(path)).isSymbolicLink()) {
    const target = await realpath(path);
    const rel = relative(await realpath(root), target);
    if (rel.startsWith('..') || isAbsolute(rel)) return { ok: false, refusal: { kind: 'outside', message: `it is a symbolic link to ${target}, outside the repository; not read` } };
  }
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
  const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const info = await handle.stat();
    if (!info.isFile()) {
      const what = info.isDirectory() ? 'a directory' : info.isFIFO() ? 'a FIFO' : info.isCharacterDevice() || info.isBlockDevice() ? 'a device' : info.isSocket() ? 'a socket' : 'not a regular file';
      return { ok: false, refusal: { kind: 'not-regular', message: `it is ${what}, not a regular file; not read` } };
    }
    if (info.size > limit) return { ok: false, refusal: { kind: 'too-large', size: info.size, message: `it is ${info.size} bytes, over the limit of ${limit}; not read` } };
    const buf = Buffer.alloc(limit + 1);
    let got = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buf, got, buf.length - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
      // A file that grew past the limit while it was read (stat said it was smaller).
      if (got > limit) return { ok: false, refusal: { kind: 'too-large', size: got, message: `it is over the limit of ${limit} bytes; not read` } };
    }
    return { ok: true, bytes: buf.subarray(0, got) };
  } finally {
    await handle.close();
  }
}
