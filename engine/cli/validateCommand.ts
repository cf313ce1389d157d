import { EXIT, type ExitCode } from './exitCodes.js';
import { formatReport, type DiagnosticFormat } from '../spec/formatDiagnostics.js';
import { validateWorkflows } from '../spec/validateWorkflows.js';
import { stdoutFor } from './forTerminal.js';
import type { Io } from './Io.js';

export interface ValidateOptions {
  format: DiagnosticFormat;
}

/** `caravan validate [paths...]`: 0 when every file is valid, 2 when any is not, 74 on I/O errors. */
export async function validateCommand(paths: string[], options: ValidateOptions, io: Io): Promise<ExitCode> {
  const report = await validateWorkflows(paths.length > 0 ? paths : ['workflows'], io.cwd);
  // Diagnostics quote the files' content, which may hold terminal escape sequences.
  stdoutFor(io)(formatReport(report, options.format));
  if (report.diagnostics.some((d) => d.code === 'FILE_READ')) return EXIT.IO;
  return report.errorCount > 0 ? EXIT.INVALID : EXIT.OK;
}
