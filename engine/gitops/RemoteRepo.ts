import { createHash, randomBytes } from 'node:crypto';
import nodeFs from 'node:fs';
import { mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import * as git from 'isomorphic-git';
import http from 'isomorphic-git/http/node';
import { atomicWrites } from '../audit/atomicWrites.js';
import { RUNS_REF } from '../audit/GitAuditStore.js';
import { resolveGitDirs } from '../audit/resolveGitDirs.js';
import { RefConflictError, readRefValue, updateRef } from '../audit/updateRef.js';
import { CaravanError } from '../errors/CaravanError.js';
import type { Logger } from '../run/Logger.js';

export interface RemoteRepoOptions {
  /** An http:// or https:// URL; credentials in it (`https://user:token@host/repo.git`) are used and never stored or logged. */
  url: string;
  /** The branch the controller watches. */
  branch: string;
  /** The local mirror: a non-bare clone Caravan owns, e.g. RemoteRepo.mirrorDir(<state dir>, url). */
  dir: string;
  auth?: { username: string; password: string };
  logger: Logger;
  /** Where CARAVAN_GIT_* are read; process.env by default. */
  env?: NodeJS.ProcessEnv;
}

/** The remote's name in the mirror: GitAuditStore continues `refs/remotes/origin/caravan/runs`. */
const REMOTE = 'origin';
const AUDIT_BRANCH = RUNS_REF.slice('refs/heads/'.length);
/** Pushes tried before giving up on a remote audit branch that keeps moving. */
const PUSH_ATTEMPTS = 5;
const REF_ATTEMPTS = 10;

type Fs = typeof nodeFs;
type TreeEntry = { mode: string; path: string; oid: string; type: 'blob' | 'tree' | 'commit' };
type Credentials = { username: string; password: string; source: string };

/**
 * A remote repository watched over Git's smart HTTP protocol, through a local mirror that
 * Caravan owns: the controller reads workflows from the mirror's commits and GitAuditStore
 * writes the audit branch `caravan/runs` into it, which pushAudit then pushes back. Pushes
 * are never forced: when another controller pushed first, the local audit commits are
 * rebuilt on the remote's tip and pushed again.
 *
 * Credentials (see `credentials`) are read afresh for every operation, so a rotated token
 * file is picked up, and are handed to isomorphic-git only through onAuth: the URL Caravan
 * stores, logs and puts in errors has no userinfo.
 */
export class RemoteRepo {
  /** The URL without userinfo: what is stored in the mirror's config, logged and shown. */
  readonly url: string;
  private readonly urlAuth: { username: string; password: string } | undefined;
  private readonly fs: Fs = atomicWrites(nodeFs);
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: RemoteRepoOptions) {
    const parsed = parseRemoteUrl(options.url);
    this.url = parsed.url;
    this.urlAuth = parsed.auth;
  }

  /**
   * The mirror directory for `url` under a state directory: `<stateDir>/remote/<hash>`, the
   * hash of the URL without its credentials, so that changing a token keeps the mirror.
   */
  static mirrorDir(stateDir: string, url: string): string {
    return join(stateDir, 'remote', createHash('sha256').update(parseRemoteUrl(url).url).digest('hex').slice(0, 16));
  }

  /**
   * Clones on first use (the watched branch only, with its audit branch if the remote has
   * one; no checkout: workflows are read from commits, not the working tree), then fetches
   * the branch and moves the mirror's local branch to it; returns the branch's head commit.
   */
  sync(): Promise<string> {
    return this.exclusive(async () => {
      const creds = await this.credentials();
      const log = this.logFor(creds);
      if (!(await this.isMirror())) return this.clone(creds, log);
      const head = await this.fetchBranch(this.options.branch, creds, 'fetch');
      const before = await readRefValue(this.gitdir, `refs/heads/${this.options.branch}`);
      await this.setRef(`refs/heads/${this.options.branch}`, head);
      if (before !== head) log.info('remote branch moved', { branch: this.options.branch, from: before, commit: head });
      else log.debug('remote branch unchanged', { branch: this.options.branch, commit: head });
      return head;
    });
  }

  /**
   * Pushes `caravan/runs` to the remote, never forced. On a non-fast-forward (another
   * controller pushed meanwhile) the remote's audit branch is fetched and the local commits
   * it lacks are rebuilt on its tip (see rebuildOnto), then the push is tried again, up to
   * PUSH_ATTEMPTS times. `pushed` is false when the remote already had the local tip (or
   * there is no local audit branch); `rebuilt` counts the local commits rebuilt for the push
   * that went through.
   */
  pushAudit(): Promise<{ pushed: boolean; rebuilt: number }> {
    return this.exclusive(async () => {
      if (!(await this.isMirror())) return { pushed: false, rebuilt: 0 };
      const creds = await this.credentials();
      const log = this.logFor(creds);
      let rebuilt = 0;
      for (let attempt = 0; attempt < PUSH_ATTEMPTS; attempt++) {
        const local = await readRefValue(this.gitdir, RUNS_REF);
        if (local === undefined) return { pushed: false, rebuilt };
        let refused: string | undefined;
        try {
          const r = await this.pushOnce(creds);
          if ('pushed' in r) {
            if (r.pushed) log.info('audit branch pushed', { commit: local, rebuilt });
            return { pushed: r.pushed, rebuilt };
          }
          // The server refused the update: the branch moved after it was advertised (a race
          // with another controller), or a hook or a protection said no. Fetching tells which.
          refused = r.refused;
        } catch (e) {
          if (!(e instanceof git.Errors.PushRejectedError && e.data.reason === 'not-fast-forward')) throw this.remoteError(e, 'push to', creds);
        }
        const remoteTip = await this.fetchAudit(creds);
        if (refused !== undefined && (remoteTip === undefined || remoteTip === local || (await this.isAncestor(remoteTip, local)))) {
          throw new CaravanError('AUDIT_WRITE_FAILED', `${this.url} refused the push of ${AUDIT_BRANCH}: ${refused}`, { data: { url: this.url, ref: RUNS_REF, commit: local, reason: refused } });
        }
        try {
          rebuilt = await this.rebuildOnto(local, remoteTip, log);
        } catch (e) {
          // A run wrote a checkpoint while the commits were rebuilt: build them again.
          if (!(e instanceof RefConflictError)) throw e;
        }
      }
      throw new CaravanError('AUDIT_REF_CONFLICT', `${AUDIT_BRANCH} was not pushed to ${this.url}: the remote branch kept moving (${PUSH_ATTEMPTS} attempts); the next push tries again`, { data: { url: this.url, ref: RUNS_REF } });
    });
  }

  private get gitdir(): string {
    return resolveGitDirs(this.options.dir).commonDir;
  }

  /** One operation at a time per mirror: a sync's fetch and a push's rebuild share refs and objects. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private logFor(creds: Credentials | undefined): Logger {
    const log = this.options.logger.child({ url: this.url });
    if (creds === undefined) return log;
    // Nothing logs them; masking is the second line of defence. A user name alone in the URL
    // is masked too: `https://<token>@host/...` is a common way to give a token.
    const secrets = [creds.password, ...(creds.source === 'the URL' && creds.password === '' ? [creds.username] : [])];
    return log.withSecrets(secrets.filter((s) => s !== ''));
  }

  /**
   * Credentials: the options' auth, else the URL's userinfo, else CARAVAN_GIT_USERNAME with
   * CARAVAN_GIT_PASSWORD (or CARAVAN_GIT_TOKEN as the password, with CARAVAN_GIT_USERNAME or
   * `x-access-token` as the user name, as GitHub takes tokens), else the file named by
   * CARAVAN_GIT_CREDENTIALS_FILE holding `username:password` on its first line, else none
   * (a public repository). Never logged.
   */
  private async credentials(): Promise<Credentials | undefined> {
    if (this.options.auth !== undefined) return { ...this.options.auth, source: 'the configured credentials' };
    if (this.urlAuth !== undefined) return { ...this.urlAuth, source: 'the URL' };
    const env = this.options.env ?? process.env;
    const value = (name: string): string | undefined => (env[name] !== undefined && env[name] !== '' ? env[name] : undefined);
    const username = value('CARAVAN_GIT_USERNAME');
    const password = value('CARAVAN_GIT_PASSWORD');
    const token = value('CARAVAN_GIT_TOKEN');
    if (password !== undefined) {
      if (username === undefined) throw new CaravanError('USAGE', 'CARAVAN_GIT_PASSWORD is set without CARAVAN_GIT_USERNAME', { data: { url: this.url } });
      return { username, password, source: 'CARAVAN_GIT_USERNAME and CARAVAN_GIT_PASSWORD' };
    }
    if (token !== undefined) return { username: username ?? 'x-access-token', password: token, source: 'CARAVAN_GIT_TOKEN' };
    if (username !== undefined) throw new CaravanError('USAGE', 'CARAVAN_GIT_USERNAME is set without CARAVAN_GIT_PASSWORD or CARAVAN_GIT_TOKEN', { data: { url: this.url } });
    const file = value('CARAVAN_GIT_CREDENTIALS_FILE');
    if (file === undefined) return undefined;
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      throw new CaravanError('IO', `cannot read the Git credentials file ${file} (CARAVAN_GIT_CREDENTIALS_FILE): ${(e as NodeJS.ErrnoException).code ?? 'error'}`, { cause: e, data: { file } });
    }
    const line = text.split(/\r?\n/)[0] ?? '';
    const colon = line.indexOf(':');
    // The message must not quote the line: it is the secret.
    if (colon <= 0 || colon === line.length - 1) throw new CaravanError('USAGE', `the Git credentials file ${file} (CARAVAN_GIT_CREDENTIALS_FILE) must hold username:password on its first line`, { data: { file } });
    return { username: line.slice(0, colon), password: line.slice(colon + 1), source: `the credentials file ${file}` };
  }

  /** isomorphic-git's auth callbacks: asked only when the server answers 401. */
  private auth(creds: Credentials | undefined): Pick<Parameters<typeof git.fetch>[0], 'onAuth'> {
    return { onAuth: () => (creds !== undefined ? { username: creds.username, password: creds.password } : undefined) };
  }

  private async isMirror(): Promise<boolean> {
    const dotgit = await stat(join(this.options.dir, '.git')).catch(() => undefined);
    if (dotgit === undefined) return false;
    const configured = await git.getConfig({ fs: this.fs, gitdir: this.gitdir, path: `remote.${REMOTE}.url` }) as unknown;
    if (configured !== this.url) {
      throw new CaravanError('USAGE', `${this.options.dir} is not Caravan's mirror of ${this.url} (its origin is ${typeof configured === 'string' ? parseRemoteUrl(configured).url : 'not set'}); remove it or use another directory`, { data: { dir: this.options.dir, url: this.url } });
    }
    return true;
  }

  /**
   * Clones into a directory next to the mirror and renames it into place, so that a clone
   * cut short never passes for a mirror.
   */
  private async clone(creds: Credentials | undefined, log: Logger): Promise<string> {
    const { dir, branch } = this.options;
    await mkdir(dirname(dir), { recursive: true });
    const tmp = join(dirname(dir), `.${basename(dir)}.clone-${randomBytes(4).toString('hex')}`);
    try {
      try {
        await git.clone({ fs: this.fs, http, dir: tmp, url: this.url, remote: REMOTE, ref: branch, singleBranch: true, noCheckout: true, noTags: true, ...this.auth(creds) });
      } catch (e) {
        throw this.remoteError(e, 'clone', creds, branch);
      }
      const gitdir = join(tmp, '.git');
      // The audit branch too: the mirror's first record continues it instead of starting a second history.
      try {
        await git.fetch({ fs: this.fs, http, gitdir, url: this.url, remote: REMOTE, ref: AUDIT_BRANCH, singleBranch: true, tags: false, ...this.auth(creds) });
      } catch (e) {
        if (!(e instanceof git.Errors.NotFoundError)) throw this.remoteError(e, 'fetch', creds, AUDIT_BRANCH);
      }
      const head = await readRefValue(gitdir, `refs/heads/${branch}`);
      if (head === undefined) throw new CaravanError('GIT_REF_NOT_FOUND', `branch ${branch} not found at ${this.url}`, { data: { url: this.url, branch } });
      try {
        await rename(tmp, dir);
      } catch (e) {
        throw new CaravanError('USAGE', `cannot create the mirror of ${this.url} in ${dir}: the directory exists and is not empty (${(e as NodeJS.ErrnoException).code ?? 'error'}); remove it or use another directory`, { cause: e, data: { dir, url: this.url } });
      }
      log.info('remote repository cloned', { branch, dir, commit: head });
      return head;
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }

  /** Fetches one branch of the remote into refs/remotes/origin/<branch>; returns its head. */
  private async fetchBranch(branch: string, creds: Credentials | undefined, action: string): Promise<string> {
    try {
      const r = await git.fetch({ fs: this.fs, http, gitdir: this.gitdir, url: this.url, remote: REMOTE, ref: branch, singleBranch: true, tags: false, ...this.auth(creds) });
      if (r.fetchHead === null) throw new git.Errors.NotFoundError(branch);
      return r.fetchHead;
    } catch (e) {
      throw this.remoteError(e, action, creds, branch);
    }
  }

  /** The remote's audit branch, fetched; undefined when the remote has none. */
  private async fetchAudit(creds: Credentials | undefined): Promise<string | undefined> {
    try {
      return await this.fetchBranch(AUDIT_BRANCH, creds, 'fetch');
    } catch (e) {
      if (e instanceof CaravanError && e.code === 'GIT_REF_NOT_FOUND') return undefined;
      throw e;
    }
  }

  /**
   * One push without force: pushed, up to date (the remote already has the local tip), or
   * refused by the server (the ref's error and what the server said on the way, such as a
   * hook's output). A non-fast-forward seen before sending anything is thrown as
   * isomorphic-git's PushRejectedError.
   */
  private async pushOnce(creds: Credentials | undefined): Promise<{ pushed: boolean } | { refused: string }> {
    let upToDate = false;
    const said: string[] = [];
    try {
      await git.push({
        fs: this.fs, http, gitdir: this.gitdir, url: this.url, remote: REMOTE, ref: RUNS_REF, remoteRef: RUNS_REF, force: false, ...this.auth(creds),
        onPrePush: ({ localRef, remoteRef }) => {
          upToDate = localRef.oid === remoteRef.oid;
          return !upToDate;
        },
        onMessage: (line) => {
          if (line.trim() !== '') said.push(line.trim());
        },
      });
      return { pushed: true };
    } catch (e) {
      if (upToDate && e instanceof git.Errors.UserCanceledError) return { pushed: false };
      if (!(e instanceof git.Errors.GitPushError)) throw e;
      // isomorphic-git hands the server's messages over without awaiting them: let them in.
      await new Promise((resolve) => setImmediate(resolve));
      const refs = Object.entries(e.data.result.refs).filter(([, v]) => !v.ok).map(([ref, v]) => `${ref}: ${v.error}`);
      return { refused: [...refs, ...said.map((l) => `remote: ${l}`)].join('; ') };
    }
  }

  /** Moves a ref of the mirror to `next` through updateRef's lock-and-check. */
  private async setRef(ref: string, next: string): Promise<void> {
    for (let attempt = 0; attempt < REF_ATTEMPTS; attempt++) {
      const current = await readRefValue(this.gitdir, ref);
      if (current === next) return;
      try {
        await updateRef(this.gitdir, ref, current, next);
        return;
      } catch (e) {
        if (!(e instanceof RefConflictError)) throw e;
      }
    }
    throw new CaravanError('IO', `${ref} in ${this.options.dir} kept moving; not updated`, { data: { ref, dir: this.options.dir } });
  }

  private async isAncestor(ancestor: string, oid: string): Promise<boolean> {
    return git.isDescendent({ fs: this.fs, gitdir: this.gitdir, oid, ancestor, depth: -1 });
  }

  /**
   * Rebuilds the local audit commits the remote lacks on top of the remote's tip, and moves
   * the local branch there (from `local`, checked: a RefConflictError if a run wrote
   * meanwhile). Each rebuilt commit keeps its author and message (and its committer's name,
   * with the time of the rebuild, as `git rebase` does). Its tree is the remote tip's, with
   * the records the local side changed since the merge base put in, as that commit has them.
   * A record is a whole directory, `runs/<workflow>/<run-id>/` or `syncs/<commit>/` (files
   * elsewhere count one by one): controllers write disjoint ones, since run ids are unique,
   * and a record both sides changed is taken from the local side. Returns how many commits
   * were rebuilt: 0 when the local branch only lacked the remote's commits and was
   * fast-forwarded to them.
   */
  private async rebuildOnto(local: string, remoteTip: string | undefined, log: Logger): Promise<number> {
    if (remoteTip === undefined || remoteTip === local) return 0;
    const cache = {};
    const repo = { fs: this.fs, gitdir: this.gitdir, cache };
    const treeOf = async (oid: string): Promise<string> => (await git.readCommit({ ...repo, oid })).commit.tree;
    const bases: string[] = await git.findMergeBase({ ...repo, oids: [local, remoteTip] }) as string[];
    // The remote is behind the local branch: nothing to rebuild, the next push fast-forwards.
    if (bases.includes(remoteTip)) return 0;
    if (bases.includes(local)) {
      await updateRef(this.gitdir, RUNS_REF, local, remoteTip);
      return 0;
    }
    const baseTrees = bases.length > 0 ? await Promise.all(bases.map(treeOf)) : [undefined];
    const remoteTree = await treeOf(remoteTip);
    const same = (x: TreeEntry | undefined, y: TreeEntry | undefined): boolean => x?.oid === y?.oid && x?.mode === y?.mode;
    const { chain, below } = await this.localOnly(local, remoteTip, bases, cache);
    let tree = remoteTree;
    // Walking the line commit by commit, only the records a commit changed can change side.
    let previous = below !== undefined ? await treeOf(below) : undefined;
    let parent = remoteTip;
    const now = Math.floor(Date.now() / 1000);
    for (const oid of chain) {
      const { commit } = await git.readCommit({ ...repo, oid });
      for (const path of await this.changedRecords(previous, commit.tree, [], cache)) {
        const mine = await this.entryAt(commit.tree, path, cache);
        // Equal to a merge base's: the local side did not write it (a merge brought it in).
        let changedHere = true;
        for (const t of baseTrees) if (same(mine, t !== undefined ? await this.entryAt(t, path, cache) : undefined)) changedHere = false;
        const entry = changedHere ? mine : await this.entryAt(remoteTree, path, cache);
        tree = await this.putAt(tree, path, entry, cache) ?? (await git.writeTree({ ...repo, tree: [] }));
      }
      parent = await git.writeCommit({ ...repo, commit: { tree, parent: [parent], author: commit.author, committer: { ...commit.committer, timestamp: now, timezoneOffset: 0 }, message: commit.message } });
      previous = commit.tree;
    }
    await updateRef(this.gitdir, RUNS_REF, local, parent);
    log.info('audit commits rebuilt on the remote tip', { remoteTip, commits: chain.length, commit: parent });
    return chain.length;
  }

  /**
   * The local commits the remote lacks, oldest first, along the first-parent line from
   * `local`, and the commit the line continues from (undefined when it reaches a root
   * first). The line normally meets a merge base; if it misses them all (the user merged
   * the two histories by hand), the remote's history is walked to find where it joins.
   */
  private async localOnly(local: string, remoteTip: string, bases: readonly string[], cache: object): Promise<{ chain: string[]; below: string | undefined }> {
    const repo = { fs: this.fs, gitdir: this.gitdir, cache };
    const walk = async (stop: (oid: string) => boolean): Promise<{ chain: string[]; below: string | undefined }> => {
      const chain: string[] = [];
      let oid: string | undefined = local;
      while (oid !== undefined && !stop(oid)) {
        chain.push(oid);
        oid = (await git.readCommit({ ...repo, oid })).commit.parent[0];
      }
      return { chain: chain.reverse(), below: oid };
    };
    const first = await walk((oid) => bases.includes(oid));
    if (first.below !== undefined || bases.length === 0) return first;
    const remote = new Set<string>();
    const stack = [remoteTip];
    while (stack.length > 0) {
      const oid = stack.pop()!;
      if (remote.has(oid)) continue;
      remote.add(oid);
      stack.push(...(await git.readCommit({ ...repo, oid })).commit.parent);
    }
    return walk((oid) => remote.has(oid));
  }

  /** Paths (as segments) of the records, or files outside records, that differ between two trees. */
  private async changedRecords(a: string | undefined, b: string | undefined, prefix: string[], cache: object): Promise<string[][]> {
    const ea = await this.entries(a, cache);
    const eb = await this.entries(b, cache);
    const out: string[][] = [];
    for (const name of new Set([...ea.keys(), ...eb.keys()])) {
      const x = ea.get(name);
      const y = eb.get(name);
      if (x?.oid === y?.oid && x?.mode === y?.mode) continue;
      const path = [...prefix, name];
      const treeOrNone = (e: TreeEntry | undefined): boolean => e === undefined || e.type === 'tree';
      // Above a record, a directory holds other records: descend, so that only this one is taken.
      if (!isRecord(path) && treeOrNone(x) && treeOrNone(y)) out.push(...(await this.changedRecords(x?.oid, y?.oid, path, cache)));
      else out.push(path);
    }
    return out;
  }

  private async entries(tree: string | undefined, cache: object): Promise<Map<string, TreeEntry>> {
    if (tree === undefined) return new Map();
    return new Map((await git.readTree({ fs: this.fs, gitdir: this.gitdir, cache, oid: tree })).tree.map((e) => [e.path, e]));
  }

  private async entryAt(tree: string, path: readonly string[], cache: object): Promise<TreeEntry | undefined> {
    let entry: TreeEntry | undefined = { mode: '040000', path: '', oid: tree, type: 'tree' };
    for (const seg of path) {
      if (entry?.type !== 'tree') return undefined;
      entry = (await this.entries(entry.oid, cache)).get(seg);
    }
    return entry;
  }

  /** `tree` with the entry at `path` replaced (or removed, dropping directories left empty); undefined if nothing is left. */
  private async putAt(tree: string | undefined, path: readonly string[], entry: TreeEntry | undefined, cache: object): Promise<string | undefined> {
    const [head, ...rest] = path;
    if (head === undefined) return entry?.oid;
    const entries = await this.entries(tree, cache);
    const child = entries.get(head);
    let next: TreeEntry | undefined;
    if (rest.length === 0) {
      next = entry !== undefined ? { ...entry, path: head } : undefined;
    } else {
      const sub = await this.putAt(child?.type === 'tree' ? child.oid : undefined, rest, entry, cache);
      next = sub !== undefined ? { mode: '040000', path: head, oid: sub, type: 'tree' } : undefined;
    }
    entries.delete(head);
    if (next !== undefined) entries.set(head, next);
    if (entries.size === 0) return undefined;
    return git.writeTree({ fs: this.fs, gitdir: this.gitdir, tree: [...entries.values()] });
  }

  /** A CaravanError for a failed remote operation: it names the URL, never the credentials. */
  private remoteError(e: unknown, action: string, creds: Credentials | undefined, branch?: string): CaravanError {
    if (e instanceof CaravanError) return e;
    const data = { url: this.url, action, ...(branch !== undefined ? { branch } : {}) };
    if (e instanceof git.Errors.HttpError) {
      const status = e.data.statusCode;
      const withStatus = { ...data, status };
      if (status === 401 || status === 203) {
        const message = creds !== undefined
          ? `${this.url} refused the credentials from ${creds.source} (HTTP ${status}) on ${action}`
          : `${this.url} requires credentials (HTTP ${status}) on ${action}: set CARAVAN_GIT_USERNAME and CARAVAN_GIT_PASSWORD, CARAVAN_GIT_TOKEN, or CARAVAN_GIT_CREDENTIALS_FILE`;
        return new CaravanError('IO', message, { cause: e, data: withStatus });
      }
      if (status === 403) return new CaravanError('IO', `${this.url} denied ${action} to the credentials from ${creds?.source ?? 'nobody (none given)'} (HTTP 403)`, { cause: e, data: withStatus });
      if (status === 404) return new CaravanError('IO', `no Git repository at ${this.url} (HTTP 404 on ${action})`, { cause: e, data: withStatus });
      return new CaravanError('IO', `${this.url} answered HTTP ${status} ${e.data.statusMessage} on ${action}`, { cause: e, data: withStatus });
    }
    if (e instanceof git.Errors.NotFoundError) return new CaravanError('GIT_REF_NOT_FOUND', `branch ${branch ?? '?'} not found at ${this.url}`, { cause: e, data });
    if (e instanceof git.Errors.SmartHttpError) return new CaravanError('IO', `${this.url} is not a Git server (no smart HTTP answer on ${action})`, { cause: e, data });
    const code = (e as NodeJS.ErrnoException).code;
    return new CaravanError('IO', `cannot ${action} ${this.url}: ${typeof code === 'string' ? code : (e as Error).message}`, { cause: e, data });
  }
}

/** A record directory: a run (`runs/<workflow>/<run-id>`) or a sync report (`syncs/<commit>`). */
function isRecord(path: readonly string[]): boolean {
  return (path[0] === 'runs' && path.length === 3) || (path[0] === 'syncs' && path.length === 2);
}

/**
 * The URL without userinfo, and the userinfo as credentials. Smart HTTP only: ssh and
 * git:// URLs are refused here rather than by isomorphic-git deep in a clone.
 */
function parseRemoteUrl(raw: string): { url: string; auth: { username: string; password: string } | undefined } {
  let u: URL;
  try {
    u = new URL(raw);
  } catch (e) {
    // The text may hold credentials: not quoted.
    throw new CaravanError('USAGE', 'the remote repository URL is not a URL; use https://host/path (or http://)', { cause: e });
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') {
    throw new CaravanError('USAGE', `the remote repository URL must be http:// or https:// (Git's smart HTTP protocol), not ${u.protocol}//`, { data: { protocol: u.protocol } });
  }
  const auth = u.username !== '' || u.password !== '' ? { username: decodeURIComponent(u.username), password: decodeURIComponent(u.password) } : undefined;
  // Cut out rather than re-serialised: URL's toString would add a slash to a bare host.
  const url = raw.replace(/^(https?:\/\/)[^/?#]*@/i, '$1');
  return { url, auth };
}
