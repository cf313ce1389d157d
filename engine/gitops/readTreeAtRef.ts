import fs from 'node:fs';
import * as git from 'isomorphic-git';
import { readHeadTarget, resolveGitDirs } from '../audit/resolveGitDirs.js';
import { CaravanError } from '../errors/CaravanError.js';

export interface TreeFile {
  /** Path relative to the repository root, '/'-separated. */
  path: string;
  bytes: Uint8Array;
  /** The blob's object id: the same id is the same content (what callers may cache by). */
  oid: string;
}

/**
 * The repository root containing `dir`: the top of the working tree, also in a linked
 * worktree, whose `.git` is a file.
 */
export async function findRepoRoot(dir: string): Promise<string> {
  try {
    return await git.findRoot({ fs, filepath: dir });
  } catch (e) {
    throw new CaravanError('GIT_REF_NOT_FOUND', `not inside a Git repository: ${dir}`, { cause: e });
  }
}

/**
 * Refuses a branch the repository does not have, naming those it has: a controller told to
 * watch `main` of a repository whose branch is `master` would otherwise wait for ever.
 */
export async function requireBranch(dir: string, branch: string): Promise<void> {
  const gitdir = resolveGitDirs(dir).commonDir;
  const branches = await git.listBranches({ fs, gitdir });
  if (branches.includes(branch)) return;
  throw new CaravanError('GIT_REF_NOT_FOUND', `branch ${branch} not found in ${dir} (${branches.length > 0 ? `its branches: ${branches.slice(0, 10).join(', ')}` : 'it has no branch yet: make a first commit'}); give the branch to watch with --branch`, { data: { branch, branches: branches.slice(0, 50) } });
}

/**
 * Resolves a revision as git does for the common forms: a branch, tag, HEAD, a full or
 * abbreviated commit, each optionally followed by `~N`, `^` or `^N` (isomorphic-git itself
 * only resolves names, not revision suffixes).
 */
export async function resolveRevision(dir: string, revision: string): Promise<string> {
  const m = /^(.+?)((?:[~^]\d*)*)$/.exec(revision);
  if (m === null) throw refError(revision);
  let oid = await resolveName(dir, m[1]!, revision);
  for (const step of m[2]!.match(/[~^]\d*/g) ?? []) {
    const n = step.length > 1 ? Number(step.slice(1)) : 1;
    if (step[0] === '~') {
      for (let i = 0; i < n; i++) oid = await parent(dir, oid, 0, revision);
    } else if (n > 0) {
      oid = await parent(dir, oid, n - 1, revision);
    }
  }
  return oid;
}

/**
 * isomorphic-git knows one Git directory: objects and refs are read from the common one, and
 * HEAD, which a linked worktree keeps in its own, is read here first.
 */
function repo(dir: string): { fs: typeof fs; gitdir: string } {
  return { fs, gitdir: resolveGitDirs(dir).commonDir };
}

async function resolveName(dir: string, name: string, revision: string): Promise<string> {
  let oid: string | undefined;
  try {
    if (name === 'HEAD' || name === '@') {
      const head = readHeadTarget(resolveGitDirs(dir));
      oid = 'oid' in head ? head.oid : await git.resolveRef({ ...repo(dir), ref: head.ref });
    } else {
      oid = await git.resolveRef({ ...repo(dir), ref: name });
    }
  } catch {
    // Not a ref: it may still be an abbreviated commit; anything else is refError below.
    if (/^[0-9a-f]{4,40}$/i.test(name)) {
      try {
        oid = await git.expandOid({ ...repo(dir), oid: name.toLowerCase() });
      } catch {
        // No such object, or an ambiguous prefix: both are an unknown revision to the user.
        oid = undefined;
      }
    }
  }
  if (oid === undefined) throw refError(revision);
  return peelToCommit(dir, oid, revision);
}

async function peelToCommit(dir: string, oid: string, revision: string): Promise<string> {
  for (let i = 0; i < 10; i++) {
    const obj = await git.readObject({ ...repo(dir), oid, format: 'parsed' });
    if (obj.type === 'commit') return oid;
    if (obj.type !== 'tag') break;
    oid = (obj.object as { object: string }).object;
  }
  throw new CaravanError('GIT_REF_NOT_FOUND', `'${revision}' does not name a commit`, { data: { revision } });
}

async function parent(dir: string, oid: string, index: number, revision: string): Promise<string> {
  const { commit } = await git.readCommit({ ...repo(dir), oid });
  const p = commit.parent[index];
  if (p === undefined) throw new CaravanError('GIT_REF_NOT_FOUND', `'${revision}' goes past the first commit`, { data: { revision } });
  return p;
}

function refError(revision: string): CaravanError {
  return new CaravanError('GIT_REF_NOT_FOUND', `unknown revision '${revision}'`, { data: { revision } });
}

/**
 * Every file under `subdir` in the commit, read from Git's object store: no checkout, and the
 * work tree and index are never touched. A missing subdir is an empty list. Files `known`
 * says the caller has come with empty bytes (their id says which content they are).
 */
export async function readTreeAtCommit(dir: string, commit: string, subdir: string, accept: (path: string) => boolean, known?: (path: string, oid: string) => boolean): Promise<TreeFile[]> {
  const out: TreeFile[] = [];
  const clean = subdir.replace(/^\.?\/+|\/+$/g, '');
  const r = repo(dir);
  let root;
  try {
    root = await git.readTree({ ...r, oid: commit, ...(clean !== '' ? { filepath: clean } : {}) });
  } catch (e) {
    if (e instanceof git.Errors.NotFoundError) return [];
    throw e;
  }
  const stack: Array<{ prefix: string; entries: typeof root.tree }> = [{ prefix: clean, entries: root.tree }];
  while (stack.length > 0) {
    const { prefix, entries } = stack.pop()!;
    for (const e of entries) {
      const path = prefix === '' ? e.path : `${prefix}/${e.path}`;
      if (e.type === 'tree') {
        if (e.path.startsWith('.') || e.path === 'node_modules') continue;
        stack.push({ prefix: path, entries: (await git.readTree({ ...r, oid: e.oid })).tree });
      } else if (e.type === 'blob' && e.mode !== '120000' && accept(path)) {
        // A blob the caller already has (by path and id) is listed without being read again.
        out.push({ path, bytes: known?.(path, e.oid) === true ? new Uint8Array(0) : (await git.readBlob({ ...r, oid: e.oid })).blob, oid: e.oid });
      }
    }
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
