import nodeFs from 'node:fs';
import { join } from 'node:path';
import * as git from 'isomorphic-git';
import { CaravanError } from '../errors/CaravanError.js';
import type { RunEvent } from '../run/RunEvent.js';
import type { RunSnapshot } from '../run/RunSnapshot.js';
import { RefConflictError, readRefValue, updateRef } from './updateRef.js';

export const RUNS_REF = 'refs/heads/caravan/runs';
export const NOTES_REF = 'refs/notes/caravan';
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
  commit: string;
}

/**
 * The audit trail: each run lives on the orphan branch `caravan/runs` as
 * `runs/<workflow>/<run-id>/{run.json,events.ndjson,workflow.yaml}`. Commits are written
 * with Git's object API (blobs, trees, commits) and the ref is moved with a lock-and-check,
 * like git itself, so the user's branch, index and working tree are never touched and
 * concurrent writers never lose a commit.
 */
export class GitAuditStore {
  readonly gitdir: string;

  constructor(readonly dir: string, private readonly fs: Fs = nodeFs) {
    this.gitdir = join(dir, '.git');
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
      const oid = await git.writeBlob({ fs: this.fs, dir: this.dir, blob: new TextEncoder().encode(text) });
      entries.push({ mode: '100644', path, oid, type: 'blob' });
    }
    const runTree = await git.writeTree({ fs: this.fs, dir: this.dir, tree: entries });
    const trailers = [`Workflow: ${r.workflow}`, ...(r.workflowCommit !== undefined ? [`Workflow-Commit: ${r.workflowCommit}`] : []), `Run: ${r.runId}`, `Status: ${r.status}`];
    const message = `${r.summary}\n\n${trailers.join('\n')}\n`;
    return this.commitOnto(RUNS_REF, ['runs', r.workflow, r.runId], runTree, message);
  }

  /** Adds a line to the note on `commit` under refs/notes/caravan (one line per run). */
  async appendNote(commit: string, line: string): Promise<void> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const parent = await readRefValue(this.gitdir, NOTES_REF);
      const rootTree = parent !== undefined ? (await git.readCommit({ fs: this.fs, dir: this.dir, oid: parent })).commit.tree : undefined;
      const root = rootTree !== undefined ? (await git.readTree({ fs: this.fs, dir: this.dir, oid: rootTree })).tree : [];
      const fanout = root.find((e) => e.type === 'tree' && e.path === commit.slice(0, 2));
      let existing = '';
      const inFanout = fanout !== undefined ? (await git.readTree({ fs: this.fs, dir: this.dir, oid: fanout.oid })).tree.find((e) => e.path === commit.slice(2)) : undefined;
      const flat = root.find((e) => e.path === commit);
      const current = inFanout ?? flat;
      if (current !== undefined) existing = new TextDecoder().decode((await git.readBlob({ fs: this.fs, dir: this.dir, oid: current.oid })).blob);
      const text = existing === '' ? `${line}\n` : `${existing.replace(/\n*$/, '\n')}${line}\n`;
      const blob = await git.writeBlob({ fs: this.fs, dir: this.dir, blob: new TextEncoder().encode(text) });
      let newRoot: string;
      if (fanout !== undefined) {
        const sub = (await git.readTree({ fs: this.fs, dir: this.dir, oid: fanout.oid })).tree.filter((e) => e.path !== commit.slice(2));
        const subOid = await git.writeTree({ fs: this.fs, dir: this.dir, tree: [...sub, { mode: '100644', path: commit.slice(2), oid: blob, type: 'blob' }] });
        newRoot = await git.writeTree({ fs: this.fs, dir: this.dir, tree: [...root.filter((e) => e.path !== fanout.path), { mode: '040000', path: fanout.path, oid: subOid, type: 'tree' }] });
      } else {
        newRoot = await git.writeTree({ fs: this.fs, dir: this.dir, tree: [...root.filter((e) => e.path !== commit), { mode: '100644', path: commit, oid: blob, type: 'blob' }] });
      }
      const oid = await this.writeCommit(newRoot, parent, `Notes added by 'caravan' for ${commit.slice(0, 12)}\n`);
      try {
        await updateRef(this.gitdir, NOTES_REF, parent, oid);
        return;
      } catch (e) {
        if (!(e instanceof RefConflictError)) throw e;
      }
    }
    throw new CaravanError('AUDIT_WRITE_FAILED', `${NOTES_REF} kept moving; note for ${commit} not written`);
  }

  async readNote(commit: string): Promise<string | undefined> {
    const parent = await readRefValue(this.gitdir, NOTES_REF);
    if (parent === undefined) return undefined;
    const { commit: c } = await git.readCommit({ fs: this.fs, dir: this.dir, oid: parent });
    const root = (await git.readTree({ fs: this.fs, dir: this.dir, oid: c.tree })).tree;
    let entry = root.find((e) => e.path === commit);
    const fanout = root.find((e) => e.type === 'tree' && e.path === commit.slice(0, 2));
    if (entry === undefined && fanout !== undefined) entry = (await git.readTree({ fs: this.fs, dir: this.dir, oid: fanout.oid })).tree.find((e) => e.path === commit.slice(2));
    if (entry === undefined) return undefined;
    return new TextDecoder().decode((await git.readBlob({ fs: this.fs, dir: this.dir, oid: entry.oid })).blob);
  }

  /** Runs on the audit branch: [workflow, runId] pairs, newest first within a workflow. */
  async listRuns(workflow?: string): Promise<Array<{ workflow: string; runId: string }>> {
    const tip = await readRefValue(this.gitdir, RUNS_REF);
    if (tip === undefined) return [];
    const { commit } = await git.readCommit({ fs: this.fs, dir: this.dir, oid: tip });
    const out: Array<{ workflow: string; runId: string }> = [];
    const runs = await this.subtree(commit.tree, ['runs']);
    if (runs === undefined) return [];
    for (const wf of (await git.readTree({ fs: this.fs, dir: this.dir, oid: runs })).tree) {
      if (wf.type !== 'tree' || (workflow !== undefined && wf.path !== workflow)) continue;
      const ids = (await git.readTree({ fs: this.fs, dir: this.dir, oid: wf.oid })).tree.filter((e) => e.type === 'tree').map((e) => e.path);
      for (const id of ids.sort().reverse()) out.push({ workflow: wf.path, runId: id });
    }
    return out;
  }

  /** One run as last recorded; finds the workflow when only the run id is known. */
  async readRun(runId: string, workflow?: string): Promise<StoredRun | undefined> {
    const tip = await readRefValue(this.gitdir, RUNS_REF);
    if (tip === undefined) return undefined;
    const wf = workflow ?? (await this.listRuns()).find((r) => r.runId === runId)?.workflow;
    if (wf === undefined) return undefined;
    const { commit } = await git.readCommit({ fs: this.fs, dir: this.dir, oid: tip });
    const dirOid = await this.subtree(commit.tree, ['runs', wf, runId]);
    if (dirOid === undefined) return undefined;
    const files = new Map<string, string>();
    for (const e of (await git.readTree({ fs: this.fs, dir: this.dir, oid: dirOid })).tree) {
      if (e.type === 'blob') files.set(e.path, new TextDecoder().decode((await git.readBlob({ fs: this.fs, dir: this.dir, oid: e.oid })).blob));
    }
    const events = (files.get('events.ndjson') ?? '').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as RunEvent);
    return { workflow: wf, runId, run: JSON.parse(files.get('run.json') ?? '{}') as RunSnapshot, events, workflowSource: files.get('workflow.yaml'), commit: tip };
  }

  private async subtree(tree: string, path: string[]): Promise<string | undefined> {
    let oid = tree;
    for (const seg of path) {
      const next = (await git.readTree({ fs: this.fs, dir: this.dir, oid })).tree.find((e) => e.path === seg && e.type === 'tree');
      if (next === undefined) return undefined;
      oid = next.oid;
    }
    return oid;
  }

  /** Replaces the tree at `path` under the ref's current tip, retrying if the ref moves meanwhile. */
  private async commitOnto(ref: string, path: string[], leaf: string, message: string): Promise<string> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const parent = await readRefValue(this.gitdir, ref);
      const base = parent !== undefined ? (await git.readCommit({ fs: this.fs, dir: this.dir, oid: parent })).commit.tree : undefined;
      const tree = await this.replaceAt(base, path, leaf);
      const oid = await this.writeCommit(tree, parent, message);
      try {
        await updateRef(this.gitdir, ref, parent, oid);
        return oid;
      } catch (e) {
        if (!(e instanceof RefConflictError)) throw e;
      }
    }
    throw new CaravanError('AUDIT_WRITE_FAILED', `${ref} kept moving; checkpoint not written`);
  }

  private async replaceAt(tree: string | undefined, path: string[], leaf: string): Promise<string> {
    const [head, ...rest] = path;
    if (head === undefined) return leaf;
    const entries: TreeEntry[] = tree !== undefined ? (await git.readTree({ fs: this.fs, dir: this.dir, oid: tree })).tree : [];
    const child = entries.find((e) => e.path === head && e.type === 'tree');
    const newChild = await this.replaceAt(child?.oid, rest, leaf);
    return git.writeTree({ fs: this.fs, dir: this.dir, tree: [...entries.filter((e) => e.path !== head), { mode: '040000', path: head, oid: newChild, type: 'tree' }] });
  }

  private async writeCommit(tree: string, parent: string | undefined, message: string): Promise<string> {
    const when = { ...AUTHOR, timestamp: Math.floor(Date.now() / 1000), timezoneOffset: 0 };
    return git.writeCommit({ fs: this.fs, dir: this.dir, commit: { tree, parent: parent !== undefined ? [parent] : [], author: when, committer: when, message } });
  }
}
