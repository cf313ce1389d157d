import { existsSync } from 'node:fs';
import { appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EXIT, type ExitCode } from './exitCodes.js';
import { formatReport, type DiagnosticFormat } from '../spec/formatDiagnostics.js';
import { formatGithubAnnotations } from '../spec/formatGithubAnnotations.js';
import { validateWorkflows } from '../spec/validateWorkflows.js';
import { stdoutFor } from './forTerminal.js';
import type { Io } from './Io.js';

export interface ValidateOptions {
  format: DiagnosticFormat;
  /** With --format github: annotations before the one that names the rest (default 10). */
  maxAnnotations?: number;
  /** With --format github: a file the full list is appended to as Markdown ($GITHUB_STEP_SUMMARY). */
  stepSummary?: string;
}

/** `caravan validate [paths...]`: 0 when every file is valid, 2 when any is not, 74 on I/O errors. */
export async function validateCommand(paths: string[], options: ValidateOptions, io: Io): Promise<ExitCode> {
  const report = paths.length > 0 ? await validateWorkflows(paths, io.cwd) : await validateWorkflows(['workflows'], await defaultBase(io.cwd));
  // Diagnostics quote the files' content, which may hold terminal escape sequences.
  if (options.format === 'github') {
    const out = formatGithubAnnotations(report, options.maxAnnotations);
    stdoutFor(io)(out.commands);
    // Appended, as GitHub expects: other steps of the job write to the same summary.
    if (options.stepSummary !== undefined && options.stepSummary !== '' && out.summary !== '') await appendFile(options.stepSummary, out.summary + '\n');
  } else {
    stdoutFor(io)(formatReport(report, options.format));
  }
  if (report.diagnostics.some((d) => d.code === 'FILE_READ')) return EXIT.IO;
  return report.errorCount > 0 ? EXIT.INVALID : EXIT.OK;
}

/**
 * Where the default `workflows/` is: here, else in the root of the Git repository around
 * (from a subdirectory, as git finds its root). Paths are then shown relative to that root,
 * the names the files have in the repository and in CI annotations.
 */
async function defaultBase(cwd: string): Promise<string> {
  if (existsSync(join(cwd, 'workflows'))) return cwd;
  // Loaded only here: validating the usual way pays nothing for Git.
  const { findRepoRoot } = await import('../gitops/readTreeAtRef.js');
  const root = await findRepoRoot(cwd).catch(() => undefined);
  return root !== undefined && existsSync(join(root, 'workflows')) ? root : cwd;
}
