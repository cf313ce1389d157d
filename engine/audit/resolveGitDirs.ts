import { readFileSync, statSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { CaravanError } from '../errors/CaravanError.js';

/** Where Git keeps a checkout's data, as `git rev-parse --git-dir --git-common-dir` reports it. */
export interface GitDirs {
  /**
   * This checkout's own Git directory: `<root>/.git` in a plain repository, and
   * `<main>/.git/worktrees/<name>` in a linked worktree. HEAD and the index live here.
   */
  gitdir: string;
  /**
   * The directory shared by every worktree of the repository: objects, `refs/heads/*`,
   * `refs/remotes/*`, `refs/notes/*` and `packed-refs` live here. Equal to `gitdir` outside
   * a linked worktree.
   */
  commonDir: string;
}

/**
 * Resolves the Git directories of the checkout rooted at `root` the way git does, without
 * running git: `.git` is either the directory itself or, in a linked worktree (and a
 * submodule), a file `gitdir: <path>`; a `commondir` file in that directory names the shared
 * one. Synchronous because the application resolves it once, in a constructor.
 */
export function resolveGitDirs(root: string): GitDirs {
  const dotgit = join(root, '.git');
  let gitdir: string;
  try {
    if (statSync(dotgit).isDirectory()) {
      gitdir = dotgit;
    } else {
      const text = readFileSync(dotgit, 'utf8');
      const m = /^gitdir:\s*(.+?)\s*$/m.exec(text);
      if (m === null) throw new Error(`${dotgit} is a file without a 'gitdir:' line`);
      // Worktrees write an absolute path, submodules one relative to the checkout.
      gitdir = isAbsolute(m[1]!) ? m[1]! : resolve(root, m[1]!);
    }
  } catch (e) {
    throw new CaravanError('NOT_A_REPOSITORY', `${root} is not the root of a Git repository; Caravan records runs in Git (run \`git init\` first)`, { cause: e, data: { dir: root } });
  }
  let commonDir = gitdir;
  try {
    const common = readFileSync(join(gitdir, 'commondir'), 'utf8').trim();
    if (common !== '') commonDir = isAbsolute(common) ? common : resolve(gitdir, common);
  } catch (e) {
    // No commondir file: a plain repository or a submodule, whose gitdir is also the common one.
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  return { gitdir, commonDir };
}

/**
 * The commit HEAD points at, or undefined before the first commit. HEAD is per worktree (in
 * `gitdir`), the branch it names is shared (in `commonDir`): isomorphic-git knows only one
 * directory, so HEAD is read here and the branch resolved in the common one.
 */
export function readHeadTarget(dirs: GitDirs): { oid: string } | { ref: string } {
  const head = readFileSync(join(dirs.gitdir, 'HEAD'), 'utf8').trim();
  const m = /^ref:\s*(\S+)$/.exec(head);
  return m !== null ? { ref: m[1]! } : { oid: head };
}
