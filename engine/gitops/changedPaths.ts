import fs from 'node:fs';
import * as git from 'isomorphic-git';
import { resolveGitDirs } from '../audit/resolveGitDirs.js';

/**
 * Paths of files that differ between two commits (added, removed or changed), '/'-separated
 * from the repository root, sorted. Subtrees with the same object id are not entered, so the
 * cost follows the size of the change, not of the repository.
 */
export async function changedPaths(dir: string, from: string, to: string): Promise<string[]> {
  const gitdir = resolveGitDirs(dir).commonDir;
  const out: string[] = [];
  await git.walk({
    fs,
    gitdir,
    trees: [git.TREE({ ref: from }), git.TREE({ ref: to })],
    map: async (path, [a, b]) => {
      if (path === '.') return true;
      const [oidA, oidB] = await Promise.all([a?.oid(), b?.oid()]);
      if (oidA === oidB) return null;
      const [typeA, typeB] = await Promise.all([a?.type(), b?.type()]);
      if (typeA === 'blob' || typeB === 'blob') out.push(path);
      // A tree on either side is walked into; a null return above skipped identical ones.
      return true;
    },
  });
  return out.sort();
}
