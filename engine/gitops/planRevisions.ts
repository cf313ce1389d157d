import { join } from 'node:path';
import { CompileError } from '../compile/CompileError.js';
import { planChanges, type Plan } from '../compile/planChanges.js';
import { CaravanError } from '../errors/CaravanError.js';
import { textLine } from '../spec/formatDiagnostics.js';
import { validateSources, validateWorkflows, type ValidationReport } from '../spec/validateWorkflows.js';
import { findRepoRoot, readTreeAtCommit, resolveRevision } from './readTreeAtRef.js';

export interface PlanRevisionsOptions {
  /** Any directory inside the repository. */
  cwd: string;
  /** The revision to compare with (a branch, tag, commit, HEAD~1, ...). */
  base: string;
  /** A revision to plan instead of the working tree (the PR's head commit, say). */
  head?: string;
  /** The workflow directory, relative to the repository root. */
  workflows: string;
}

export type PlanOutcome =
  | { ok: true; plan: Plan }
  /** `lines` are the diagnostics (prefixed by the revision they are in), `message` says which side failed. */
  | { ok: false; lines: string[]; message: string };

const EMPTY: ValidationReport = { files: [], diagnostics: [], errorCount: 0, warningCount: 0 };

/**
 * The plan between two versions of a repository's workflows: a base commit and the working
 * tree, or a second commit. Commits are read from Git's object store, so nothing is checked
 * out or touched. Both sides must be valid; otherwise the outcome names their errors.
 */
export async function planRevisions(options: PlanRevisionsOptions): Promise<PlanOutcome> {
  const root = await findRepoRoot(options.cwd);
  const dir = options.workflows.replace(/^\.\/+|\/+$/g, '');
  const readCommit = async (rev: string): Promise<ValidationReport> => {
    const files = await readTreeAtCommit(root, await resolveRevision(root, rev), dir, (p) => /\.ya?ml$/i.test(p));
    return validateSources(files.map((f) => ({ file: f.path, bytes: f.bytes })));
  };
  const base = await readCommit(options.base);
  const head = options.head !== undefined
    ? await readCommit(options.head)
    : (await validateWorkflows([join(root, dir)], root).catch((e: unknown) => {
        if (e instanceof CaravanError && e.code === 'PATH_NOT_FOUND') return undefined;
        throw e;
      })) ?? EMPTY;
  const headLabel = options.head ?? 'working tree';
  if (base.errorCount > 0 || head.errorCount > 0) {
    const lines = [
      ...base.diagnostics.filter((x) => x.severity === 'error').map((d) => `${options.base}:${textLine(d)}`),
      ...head.diagnostics.filter((x) => x.severity === 'error').map((d) => (options.head !== undefined ? `${options.head}:${textLine(d)}` : textLine(d))),
    ];
    const sides = [
      base.errorCount > 0 ? `${options.base} (${base.errorCount} errors)` : '',
      head.errorCount > 0 ? `${options.head ?? 'the working tree'} (${head.errorCount} errors)` : '',
    ].filter((s) => s !== '');
    return { ok: false, lines, message: `workflows are invalid in ${sides.join(' and ')}` };
  }
  try {
    return { ok: true, plan: planChanges(base.files, head.files, { base: options.base, head: headLabel }) };
  } catch (e) {
    if (!(e instanceof CompileError)) throw e;
    return { ok: false, lines: [], message: e.message };
  }
}
