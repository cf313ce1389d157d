import nodeFs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';

/** The promise API isomorphic-git calls on the `fs` it is given (a subset of node:fs/promises). */
type PromiseFs = typeof nodeFs.promises;

/**
 * A file system for isomorphic-git whose writeFile is atomic: the bytes go to a temporary
 * file in the same directory, which is then renamed into place, and removed if anything
 * fails. isomorphic-git writes a loose object only if its file does not exist yet, so an
 * object left half-written by a full disk was never written again: `git fsck` reported it and
 * `git gc` failed. Now a failed write leaves nothing, and the next checkpoint writes the
 * object whole. Same directory, so the rename never crosses a file system; one rename per
 * object is all it costs.
 */
export function atomicWrites(fs: typeof nodeFs): typeof nodeFs {
  const inner: PromiseFs = fs.promises;
  const rename = inner.rename ?? nodeFs.promises.rename;
  const unlink = inner.unlink ?? nodeFs.promises.unlink;
  const writeFile = async (...args: Parameters<PromiseFs['writeFile']>): Promise<void> => {
    const [path, data, options] = args;
    if (typeof path !== 'string') return inner.writeFile(path, data, options);
    // Git ignores files it does not know in objects/xx/, and `git gc` prunes old ones; the
    // name starts with `tmp_obj_` like git's own temporary objects.
    const tmp = join(dirname(path), `tmp_obj_${basename(path)}_${process.pid}_${randomBytes(4).toString('hex')}`);
    try {
      await inner.writeFile(tmp, data, options);
      await rename(tmp, path);
    } catch (e) {
      // The write failed and is thrown below; a temporary file that is not there is fine.
      await unlink(tmp).catch(() => undefined);
      throw e;
    }
  };
  // isomorphic-git takes `promises` when it is an enumerable property, as it is here.
  return { ...fs, promises: { ...inner, writeFile } } as typeof nodeFs;
}
