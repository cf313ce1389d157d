import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { CaravanError } from '../errors/CaravanError.js';

export interface RefUpdateOptions {
  /** Attempts while another writer holds the ref's lock file. */
  lockRetries?: number;
  lockRetryMs?: number;
  /**
   * A lock file older than this is left by a writer that died (a ref update takes
   * milliseconds) and is taken over; a killed `caravan run` must not block its own resume.
   */
  staleLockMs?: number;
}

/** The ref's current value: its loose file, else packed-refs, else undefined. */
export async function readRefValue(gitdir: string, ref: string): Promise<string | undefined> {
  try {
    return (await readFile(join(gitdir, ref), 'utf8')).trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  try {
    const packed = await readFile(join(gitdir, 'packed-refs'), 'utf8');
    for (const line of packed.split('\n')) {
      const [oid, name] = line.split(' ');
      if (name === ref && oid !== undefined && /^[0-9a-f]{40}$/.test(oid)) return oid;
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  return undefined;
}

/** The ref moved between reading it and taking its lock: the writer builds its commit again. */
export class RefConflictError extends CaravanError {
  constructor(readonly ref: string) {
    super('AUDIT_REF_CONFLICT', `${ref} moved while it was being updated`, { data: { ref } });
    this.name = 'RefConflictError';
  }
}

/**
 * Moves `ref` from `expected` to `next` the way git does: take `<ref>.lock` exclusively,
 * check the old value, write, rename. A concurrent `git` or Caravan process therefore never
 * loses an update; a ref locked for longer than the retries is a clear error.
 */
export async function updateRef(gitdir: string, ref: string, expected: string | undefined, next: string, options: RefUpdateOptions = {}): Promise<void> {
  const path = join(gitdir, ref);
  const lock = `${path}.lock`;
  await mkdir(dirname(path), { recursive: true });
  const retries = options.lockRetries ?? 20;
  for (let attempt = 0; ; attempt++) {
    let handle;
    try {
      handle = await open(lock, 'wx');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const age = await stat(lock).then((st) => Date.now() - st.mtimeMs, () => 0);
      if (age > (options.staleLockMs ?? 5_000)) {
        await rm(lock, { force: true });
        continue;
      }
      if (attempt >= retries) {
        throw new CaravanError('AUDIT_REF_LOCKED', `${ref} is locked by another process (${lock} exists); if no git or caravan process is running, remove the lock file`, { data: { ref, lock }, cause: e });
      }
      await new Promise((r) => setTimeout(r, (options.lockRetryMs ?? 25) * (attempt + 1)));
      continue;
    }
    try {
      const current = await readRefValue(gitdir, ref);
      if (current !== expected) throw new RefConflictError(ref);
      await handle.writeFile(`${next}\n`);
      await handle.sync();
      await handle.close();
      handle = undefined;
      await rename(lock, path);
      return;
    } finally {
      if (handle !== undefined) {
        await handle.close();
        await rm(lock, { force: true });
      }
    }
  }
}

/** A unique-enough run id: sortable by start time, safe in paths, Nomad IDs and NATS subjects. */
/**
 * Run ids come from outside (the CLI's arguments, next the HTTP API) and become file names
 * (the journal, control and live files under .git/caravan) and Git paths: anything but the
 * characters Caravan's own ids use is refused before it reaches a path, so `../x` cannot
 * read or remove a file elsewhere.
 */
export function checkRunId(runId: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/.test(runId)) {
    throw new CaravanError('RUN_ID_INVALID', `'${runId.slice(0, 64).replace(/[^\x20-\x7e]/g, '?')}' is not a run id: run ids are letters, digits, '-' and '_', such as 20261201-184145-3fa9c1`, { data: { runId: runId.slice(0, 256) } });
  }
  return runId;
}

export function newRunId(now: Date): string {
  const p = (n: number, w = 2): string => String(n).padStart(w, '0');
  const stamp = `${now.getUTCFullYear()}${p(now.getUTCMonth() + 1)}${p(now.getUTCDate())}-${p(now.getUTCHours())}${p(now.getUTCMinutes())}${p(now.getUTCSeconds())}`;
  return `${stamp}-${randomBytes(3).toString('hex')}`;
}

