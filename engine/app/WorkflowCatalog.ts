import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import { CaravanError } from '../errors/CaravanError.js';
import { textLine } from '../spec/formatDiagnostics.js';
import { validateWorkflows, type FileResult } from '../spec/validateWorkflows.js';
import type { Workflow } from '../spec/Workflow.js';

/** A valid workflow ready to run, with the exact text it was read from. */
export interface LoadedWorkflow {
  workflow: Workflow;
  source: string;
  /** Path relative to the repository root. */
  file: string;
}

/**
 * The workflows of one repository's working tree (the embedded default; the controller will
 * read them at a commit). Every lookup validates, so a run never starts from an invalid file.
 */
export class WorkflowCatalog {
  constructor(readonly repoDir: string, readonly workflowsDir = 'workflows') {}

  /** Every workflow file with its diagnostics (valid or not). */
  async list(): Promise<FileResult[]> {
    const report = await validateWorkflows([join(this.repoDir, this.workflowsDir)], this.repoDir).catch((e: unknown) => {
      if (e instanceof CaravanError && e.code === 'PATH_NOT_FOUND') return undefined;
      throw e;
    });
    return report?.files ?? [];
  }

  /**
   * Finds a workflow by metadata.name, or by file path: absolute, or relative to the
   * repository. A file outside the repository is refused: a run is recorded with the
   * repository's commit, which would say nothing about it.
   */
  async load(nameOrPath: string): Promise<LoadedWorkflow> {
    const dir = join(this.repoDir, this.workflowsDir);
    const asPath = resolve(this.repoDir, nameOrPath);
    const byPath = /\.ya?ml$/.test(nameOrPath) && existsSync(asPath);
    const inside = relative(this.repoDir, asPath);
    if (byPath && (inside.startsWith(`..${sep}`) || isAbsolute(inside))) {
      throw new CaravanError('USAGE', `${nameOrPath} is outside the repository ${this.repoDir}; Caravan runs the workflows of the repository it records runs in`, { data: { workflow: nameOrPath, repoDir: this.repoDir } });
    }
    const report = await validateWorkflows([byPath ? asPath : dir], this.repoDir).catch((e: unknown) => {
      if (e instanceof CaravanError && e.code === 'PATH_NOT_FOUND') return undefined;
      throw e;
    });
    const files = report?.files ?? [];
    const match = files.find((f) => f.name === nameOrPath || f.file === nameOrPath || resolve(this.repoDir, f.file) === asPath);
    if (match === undefined) {
      const names = files.map((f) => f.name).filter((n) => n !== undefined);
      throw new CaravanError('WORKFLOW_NOT_FOUND', `unknown workflow '${nameOrPath}'${names.length > 0 ? `; workflows here: ${names.join(', ')}` : ` (no workflows in ${relative(this.repoDir, dir) || '.'}/)`}`, { data: { workflow: nameOrPath } });
    }
    const errors = match.diagnostics.filter((d) => d.severity === 'error');
    if (match.workflow === undefined || errors.length > 0) {
      throw new CaravanError('WORKFLOW_INVALID', `workflow '${nameOrPath}' is invalid:\n${errors.map((d) => textLine(d).trimEnd()).join('\n')}`, { data: { diagnostics: errors } });
    }
    return { workflow: match.workflow, source: await readFile(join(this.repoDir, match.file), 'utf8'), file: match.file };
  }
}
