import nodeFs from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import * as git from 'isomorphic-git';
import { CaravanError } from '../errors/CaravanError.js';
import type { RunEvent } from '../run/RunEvent.js';
import type { RunSnapshot } from '../run/RunSnapshot.js';
import { atomicWrites } from './atomicWrites.js';
import type { WorkflowDirty } from './workflowDirty.js';
import { resolveGitDirs } from './resolveGitDirs.js';
import { checkRunId, RefConflictError, readRefValue, updateRef } from './updateRef.js';

export const RUNS_REF = 'refs/heads/caravan/runs';
export const NOTES_REF = 'refs/notes/caravan';
/** The audit branch as fetched from origin: a fresh clone continues it instead of starting a new one. */
export const REMOTE_RUNS_REF = 'refs/remotes/origin/caravan/runs';
const AUTHOR = { name: 'Caravan', email: 'caravan@localhost' };

type Fs = Parameters<typeof git.readTree>[0]['fs'];
type TreeEntry = { mode: string; path: string; oid: string; type: 'blob' | 'tree' | 'commit' };

export interface RunRecord {
  workflow: string;
  runId: string;
  /** run.json: the run's state as of this record. */
  run: RunSnapshot;
  /** Every event of the run so far, in order. */
  events: readonly RunEvent[];
  /** The workflow source the run executes (kept so a resume runs the same definition). */
  workflowSource?: string;
  workflowCommit?: string;
  /** The workflow as run is not the one at workflowCommit (it had uncommitted changes): trailer `Workflow-Dirty: true`. */
  workflowDirty?: boolean;
  status: string;
  /** First line of the commit message. */
  summary: string;
}

export interface StoredRun {
  workflow: string;
  runId: string;
  run: RunSnapshot;
  events: RunEvent[];
  workflowSource: string | undefined;
  /** Set when the run's workflow was not as committed (run.json's workflowDirty and workflowSha256). */
  workflowDirty?: WorkflowDirty;
  commit: string;
}

/**
 * The audit trail: each run lives on the orphan branch `caravan/runs` as
 * `runs/<workflow>/<run-id>/{run.json,events.ndjson,workflow.yaml}`. Commits are written
 * with Git's object API (blobs, trees, commits) and the ref is moved with a lock-and-check,
 * like git itself, so the user's branch, index and working tree are never touched and
 * concurrent writers never lose a commit.
 *
 * In a linked worktree (`git worktree add`) objects and branches are shared by every
 * checkout, so the branch is written in the repository's common directory and all worktrees
 * see one audit trail; `gitdir` (this checkout's own Git directory) is where its live runs
 * and journals go. Objects are written atomically (see atomicWrites).
 */
export class GitAuditStore {
  /** This checkout's own Git directory (a worktree's is not `<dir>/.git`). */
  readonly gitdir: string;
  /** The repository's common directory: objects and refs. */
  readonly commonDir: string;
  private readonly fs: Fs;
  private readonly repo: { fs: Fs; gitdir: string };

  constructor(readonly dir: string, fs: typeof nodeFs = nodeFs) {
    const dirs = resolveGitDirs(dir);
    this.gitdir = dirs.gitdir;
    this.commonDir = dirs.commonDir;
    this.fs = atomicWrites(fs);
    this.repo = { fs: this.fs, gitdir: this.commonDir };
  }

  /** Writes a checkpoint of one run; returns the new commit. */
  async writeRun(r: RunRecord): Promise<string> {
    const files: Array<[string, string]> = [
      ['run.json', JSON.stringify(r.run, null, 2) + '\n'],
      ['events.ndjson', r.events.map((e) => JSON.stringify(e)).join('\n') + (r.events.length > 0 ? '\n' : '')],
    ];
    if (r.workflowSource !== undefined) files.push(['workflow.yaml', r.workflowSource]);
    const entries: TreeEntry[] = [];
    for (const [path, text] of files) {
      const oid = await git.writeBlob({ ...this.repo, blob: new TextEncoder().encode(text) });
      entries.push({ mode: '100644', path, oid, type: 'blob' });
    }
    const runTree = await git.writeTree({ ...this.repo, tree: entries });
    const trailers = [`Workflow: ${r.workflow}`, ...(r.workflowCommit !== undefined ? [`Workflow-Commit: ${r.workflowCommit}`] : []), ...(r.workflowDirty === true ? ['Workflow-Dirty: true'] : []), `Run: ${r.runId}`, ...(r.run.retryOf !== undefined ? [`Retry-Of: ${r.run.retryOf}`] : []), `Status: ${r.status}`];
    const message = `${r.summary}\n\n${trailers.join('\n')}\n`;
    return this.commitOnto(['runs', r.workflow, r.runId], runTree, message);
  }

  /**
   * Records the controller's sync of a workflow commit as `syncs/<commit>/report.json` on the
   * audit branch (a later sync of the same commit replaces it); returns the new audit commit.
   */
  async writeSync(commit: string, report: unknown, summary: string, trailers: readonly string[]): Promise<string> {
    if (!/^[0-9a-f]{40}$/.test(commit)) throw new CaravanError('USAGE', `not a commit id: '${commit}'`, { data: { commit } });
    const oid = await git.writeBlob({ ...this.repo, blob: new TextEncoder().encode(JSON.stringify(report, null, 2) + '\n') });
    const tree = await git.writeTree({ ...this.repo, tree: [{ mode: '100644', path: 'report.json', oid, type: 'blob' }] });
    return this.commitOnto(['syncs', commit], tree, `${summary}\n\n${[`Sync-Commit: ${commit}`, ...trailers].join('\n')}\n`);
  }

  /** The sync report of a workflow commit, if the controller recorded one. */
  async readSync(commit: string): Promise<unknown> {
    const { tip } = await this.runsTip();
    if (tip === undefined || !/^[0-9a-f]{40}$/.test(commit)) return undefined;
    const { commit: c } = await git.readCommit({ ...this.repo, oid: tip });
    const dir = await this.subtree(c.tree, ['syncs', commit]);
    if (dir === undefined) return undefined;
    const entry = (await git.readTree({ ...this.repo, oid: dir })).tree.find((e) => e.path === 'report.json');
    if (entry === undefined) return undefined;
    return JSON.parse(new TextDecoder().decode((await git.readBlob({ ...this.repo, oid: entry.oid })).blob)) as unknown;
  }

  /** Commits the controller recorded a sync report for (`syncs/<commit>/`), in tree order. */
  async listSyncs(): Promise<string[]> {
    const { tip } = await this.runsTip();
    if (tip === undefined) return [];
    const { commit } = await git.readCommit({ ...this.repo, oid: tip });
    const dir = await this.subtree(commit.tree, ['syncs']);
    if (dir === undefined) return [];
    return (await git.readTree({ ...this.repo, oid: dir })).tree.filter((e) => e.type === 'tree').map((e) => e.path);
  }

  /** Adds a line to the note on `commit` under refs/notes/caravan (one line per run). */
  async appendNote(commit: string, line: string): Promise<void> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const parent = await readRefValue(this.commonDir, NOTES_REF);
      const rootTree = parent !== undefined ? (await git.readCommit({ ...this.repo, oid: parent })).commit.tree : undefined;
      const root = rootTree !== undefined ? (await git.readTree({ ...this.repo, oid: rootTree })).tree : [];
      const fanout = root.find((e) => e.type === 'tree' && e.path === commit.slice(0, 2));
      let existing = '';
      const inFanout = fanout !== undefined ? (await git.readTree({ ...this.repo, oid: fanout.oid })).tree.find((e) => e.path === commit.slice(2)) : undefined;
      const flat = root.find((e) => e.path === commit);
      const current = inFanout ?? flat;
      if (current !== undefined) existing = new TextDecoder().decode((await git.readBlob({ ...this.repo, oid: current.oid })).blob);
      const text = existing === '' ? `${line}\n` : `${existing.replace(/\n*$/, '\n')}${line}\n`;
      const blob = await git.writeBlob({ ...this.repo, blob: new TextEncoder().encode(text) });
      let newRoot: string;
      if (fanout !== undefined) {
        const sub = (await git.readTree({ ...this.repo, oid: fanout.oid })).tree.filter((e) => e.path !== commit.slice(2));
        const subOid = await git.writeTree({ ...this.repo, tree: [...sub, { mode: '100644', path: commit.slice(2), oid: blob, type: 'blob' }] });
        newRoot = await git.writeTree({ ...this.repo, tree: [...root.filter((e) => e.path !== fanout.path), { mode: '040000', path: fanout.path, oid: subOid, type: 'tree' }] });
      } else {
        newRoot = await git.writeTree({ ...this.repo, tree: [...root.filter((e) => e.path !== commit), { mode: '100644', path: commit, oid: blob, type: 'blob' }] });
      }
      const oid = await this.writeCommit(newRoot, parent, `Notes added by 'caravan' for ${commit.slice(0, 12)}\n`);
      try {
        await updateRef(this.commonDir, NOTES_REF, parent, oid);
        return;
      } catch (e) {
        if (!(e instanceof RefConflictError)) throw e;
      }
    }
    throw new CaravanError('AUDIT_WRITE_FAILED', `${NOTES_REF} kept moving; note for ${commit} not written`);
  }

  async readNote(commit: string): Promise<string | undefined> {
    const parent = await readRefValue(this.commonDir, NOTES_REF);
    if (parent === undefined) return undefined;
    const { commit: c } = await git.readCommit({ ...this.repo, oid: parent });
    const root = (await git.readTree({ ...this.repo, oid: c.tree })).tree;
    let entry = root.find((e) => e.path === commit);
    const fanout = root.find((e) => e.type === 'tree' && e.path === commit.slice(0, 2));
    if (entry === undefined && fanout !== undefined) entry = (await git.readTree({ ...this.repo, oid: fanout.oid })).tree.find((e) => e.path === commit.slice(2));
    if (entry === undefined) return undefined;
    return new TextDecoder().decode((await git.readBlob({ ...this.repo, oid: entry.oid })).blob);
  }

  /** Runs on the audit branch: [workflow, runId] pairs, newest first within a workflow. */
  async listRuns(workflow?: string): Promise<Array<{ workflow: string; runId: string }>> {
    const { tip } = await this.runsTip();
    if (tip === undefined) return [];
    const { commit } = await git.readCommit({ ...this.repo, oid: tip });
    const out: Array<{ workflow: string; runId: string }> = [];
    const runs = await this.subtree(commit.tree, ['runs']);
    if (runs === undefined) return [];
    for (const wf of (await git.readTree({ ...this.repo, oid: runs })).tree) {
      if (wf.type !== 'tree' || (workflow !== undefined && wf.path !== workflow)) continue;
      const ids = (await git.readTree({ ...this.repo, oid: wf.oid })).tree.filter((e) => e.type === 'tree').map((e) => e.path);
      for (const id of ids.sort().reverse()) out.push({ workflow: wf.path, runId: id });
    }
    return out;
  }

  /** One run as last recorded; finds the workflow when only the run id is known. */
  async readRun(runId: string, workflow?: string): Promise<StoredRun | undefined> {
    checkRunId(runId);
    const { tip } = await this.runsTip();
    if (tip === undefined) return undefined;
    const wf = workflow ?? (await this.listRuns()).find((r) => r.runId === runId)?.workflow;
    if (wf === undefined) return undefined;
    const { commit } = await git.readCommit({ ...this.repo, oid: tip });
    const dirOid = await this.subtree(commit.tree, ['runs', wf, runId]);
    if (dirOid === undefined) return undefined;
    const files = new Map<string, string>();
    for (const e of (await git.readTree({ ...this.repo, oid: dirOid })).tree) {
      if (e.type === 'blob') files.set(e.path, new TextDecoder().decode((await git.readBlob({ ...this.repo, oid: e.oid })).blob));
    }
    const events = (files.get('events.ndjson') ?? '').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as RunEvent);
    const run = JSON.parse(files.get('run.json') ?? '{}') as RunSnapshot & { workflowDirty?: boolean; workflowSha256?: string };
    const workflowDirty = run.workflowDirty === true && typeof run.workflowSha256 === 'string' ? { sha256: run.workflowSha256 } : undefined;
    return { workflow: wf, runId, run, events, workflowSource: files.get('workflow.yaml'), ...(workflowDirty !== undefined ? { workflowDirty } : {}), commit: tip };
  }

  /** A file's content at a commit of the repository; undefined if the commit does not hold it. */
  async readFileAt(commit: string, path: string): Promise<Uint8Array | undefined> {
    try {
      return (await git.readBlob({ ...this.repo, oid: commit, filepath: path })).blob;
    } catch (e) {
      // Not in that commit's tree (a file not committed yet): an answer, not a failure.
      if (e instanceof git.Errors.NotFoundError) return undefined;
      throw e;
    }
  }

  private async subtree(tree: string, path: string[]): Promise<string | undefined> {
    let oid = tree;
    for (const seg of path) {
      const next = (await git.readTree({ ...this.repo, oid })).tree.find((e) => e.path === seg && e.type === 'tree');
      if (next === undefined) return undefined;
      oid = next.oid;
    }
    return oid;
  }

  /** Replaces the tree at `path` under the audit branch's tip, retrying if the branch moves meanwhile. */
  private async commitOnto(path: string[], leaf: string, message: string): Promise<string> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const { local, tip } = await this.runsTip();
      if (local === undefined) await this.assertNotBlocked();
      const base = tip !== undefined ? await this.caravanCommit(tip, local === undefined) : undefined;
      const tree = await this.replaceAt(base?.tree, path, leaf);
      const oid = await this.writeCommit(tree, tip, message);
      try {
        // Without a local branch the parent is origin's tip: the local branch starts on it.
        await updateRef(this.commonDir, RUNS_REF, local, oid);
        return oid;
      } catch (e) {
        if (!(e instanceof RefConflictError)) throw e;
      }
    }
    throw new CaravanError('AUDIT_WRITE_FAILED', `${RUNS_REF} kept moving; checkpoint not written`);
  }

  /**
   * Checks, before a run starts, that its record can go to the audit branch: no branch
   * named `caravan` in the way, and a `caravan/runs` that Caravan wrote (see caravanCommit).
   */
  async assertWritable(): Promise<void> {
    const { local, tip } = await this.runsTip();
    if (local === undefined) await this.assertNotBlocked();
    if (tip !== undefined) await this.caravanCommit(tip, local === undefined);
  }

  /**
   * The local audit branch, and the tip to read and build on: the local branch, else
   * origin's (a fresh clone sees the runs recorded elsewhere, and its first write continues
   * that history so that pushing it is a fast-forward).
   */
  private async runsTip(): Promise<{ local: string | undefined; tip: string | undefined }> {
    let local: string | undefined;
    try {
      local = await readRefValue(this.commonDir, RUNS_REF);
    } catch (e) {
      // refs/heads/caravan is a file: a branch named `caravan` exists.
      if ((e as NodeJS.ErrnoException).code === 'ENOTDIR') throw this.blocked();
      throw e;
    }
    return { local, tip: local ?? (await readRefValue(this.commonDir, REMOTE_RUNS_REF)) };
  }

  /**
   * Git cannot have both `caravan` and `caravan/runs` as branches; writing the loose ref
   * anyway would turn a packed `caravan` branch into a broken repository.
   */
  private async assertNotBlocked(): Promise<void> {
    // No such file: no loose ref in the way (packed refs are checked below).
    const loose = await stat(join(this.commonDir, 'refs', 'heads', 'caravan')).catch(() => undefined);
    if (loose?.isFile() === true) throw this.blocked();
    const packed = await readFile(join(this.commonDir, 'packed-refs'), 'utf8').catch(() => '');
    if (packed.split('\n').some((l) => l.endsWith(' refs/heads/caravan'))) throw this.blocked();
  }

  private blocked(): CaravanError {
    return new CaravanError('AUDIT_BRANCH_BLOCKED', `a branch named 'caravan' exists, so Git cannot create the audit branch caravan/runs; rename it (git branch -m caravan <new-name>) and run again`, { data: { ref: RUNS_REF, blocking: 'refs/heads/caravan' } });
  }

  /**
   * The tip of the audit branch, refused unless Caravan wrote it: each of Caravan's commits
   * carries the `Workflow:` and `Run:` trailers, or Caravan's author. A branch of the same
   * name holding the user's own files is theirs; adopting it replaced their tree.
   */
  private async caravanCommit(oid: string, remote: boolean): Promise<{ tree: string }> {
    const { commit } = await git.readCommit({ ...this.repo, oid });
    const trailers = /^Workflow: /m.test(commit.message) && /^Run: /m.test(commit.message);
    // A merge the user made to join two audit histories (a clone that ran before it fetched) is accepted.
    const merged = async (): Promise<boolean> => {
      for (const p of commit.parent.length > 1 ? commit.parent : []) {
        const { commit: c } = await git.readCommit({ ...this.repo, oid: p });
        if (/^Run: /m.test(c.message) || c.author.email === AUTHOR.email) return true;
      }
      return false;
    };
    if (!trailers && commit.author.email !== AUTHOR.email && !(await merged())) {
      const name = remote ? 'origin/caravan/runs' : 'caravan/runs';
      throw new CaravanError('AUDIT_BRANCH_FOREIGN', `the branch ${name} was not created by Caravan (its tip ${oid.slice(0, 12)} has no Workflow:/Run: trailers), so runs are not recorded on it; rename it (git branch -m caravan/runs <new-name>) and run again`, { data: { ref: remote ? REMOTE_RUNS_REF : RUNS_REF, commit: oid } });
    }
    return commit;
  }

  private async replaceAt(tree: string | undefined, path: string[], leaf: string): Promise<string> {
    const [head, ...rest] = path;
    if (head === undefined) return leaf;
    const entries: TreeEntry[] = tree !== undefined ? (await git.readTree({ ...this.repo, oid: tree })).tree : [];
    const child = entries.find((e) => e.path === head && e.type === 'tree');
    const newChild = await this.replaceAt(child?.oid, rest, leaf);
    return git.writeTree({ ...this.repo, tree: [...entries.filter((e) => e.path !== head), { mode: '040000', path: head, oid: newChild, type: 'tree' }] });
  }

  private async writeCommit(tree: string, parent: string | undefined, message: string): Promise<string> {
    const when = { ...AUTHOR, timestamp: Math.floor(Date.now() / 1000), timezoneOffset: 0 };
    return git.writeCommit({ ...this.repo, commit: { tree, parent: parent !== undefined ? [parent] : [], author: when, committer: when, message } });
  }
}
