import { join } from 'node:path';
import { CompileError } from '../compile/CompileError.js';
import { CaravanError } from '../errors/CaravanError.js';
import { formatPlan, type PlanFormat } from '../compile/formatPlan.js';
import { planChanges } from '../compile/planChanges.js';
import { EXIT, type ExitCode } from './exitCodes.js';
import { findRepoRoot, readTreeAtCommit, resolveRevision } from '../gitops/readTreeAtRef.js';
import { textLine } from '../spec/formatDiagnostics.js';
import { validateSources, validateWorkflows, type ValidationReport } from '../spec/validateWorkflows.js';
import type { Io } from './Io.js';

export interface PlanOptions {
  base: string;
  format: PlanFormat;
  workflows: string;
}

/**
 * `caravan plan [--base <ref>]`: the Nomad jobs that change between a commit and the work
 * tree. The base is read from Git's object store, so nothing is checked out or touched.
 */
export async function planCommand(options: PlanOptions, io: Io): Promise<ExitCode> {
  const root = await findRepoRoot(io.cwd);
  const commit = await resolveRevision(root, options.base);
  const dir = options.workflows.replace(/^\.\/+|\/+$/g, '');
  const baseFiles = await readTreeAtCommit(root, commit, dir, (p) => /\.ya?ml$/i.test(p));
  const base = validateSources(baseFiles.map((f) => ({ file: f.path, bytes: f.bytes })));
  const head = await validateWorkflows([join(root, dir)], root).catch((e: unknown) => {
    if (e instanceof CaravanError && e.code === 'PATH_NOT_FOUND') return undefined;
    throw e;
  });
  const headReport: ValidationReport = head ?? { files: [], diagnostics: [], errorCount: 0, warningCount: 0 };
  if (base.errorCount > 0 || headReport.errorCount > 0) {
    for (const d of base.diagnostics.filter((x) => x.severity === 'error')) io.stdout(`${options.base}:${textLine(d)}`);
    for (const d of headReport.diagnostics.filter((x) => x.severity === 'error')) io.stdout(textLine(d));
    const sides = [base.errorCount > 0 ? `${options.base} (${base.errorCount} errors)` : '', headReport.errorCount > 0 ? `the working tree (${headReport.errorCount} errors)` : ''].filter((s) => s !== '');
    io.stderr(`caravan: cannot plan: workflows are invalid in ${sides.join(' and ')}\n`);
    return EXIT.INVALID;
  }
  try {
    const plan = planChanges(base.files, headReport.files, { base: options.base, head: 'working tree' });
    io.stdout(formatPlan(plan, options.format));
    return EXIT.OK;
  } catch (e) {
    if (!(e instanceof CompileError)) throw e;
    io.stderr(`caravan: cannot plan: ${e.message}\n`);
    return EXIT.INVALID;
  }
}
