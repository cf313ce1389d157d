import type { Diagnostic } from './Diagnostic.js';
import type { ValidationReport } from './validateWorkflows.js';
import { formatGithubAnnotations, summaryLine } from './formatGithubAnnotations.js';

export type DiagnosticFormat = 'text' | 'json' | 'github';
export const DIAGNOSTIC_FORMATS: readonly DiagnosticFormat[] = ['text', 'json', 'github'];

/**
 * Renders a validation report for a terminal, a machine, or a GitHub Actions log (at most
 * `maxAnnotations` annotations there; see formatGithubAnnotations).
 */
export function formatReport(report: ValidationReport, format: DiagnosticFormat, maxAnnotations?: number): string {
  switch (format) {
    case 'json':
      return JSON.stringify({
        files: report.files.length,
        errors: report.diagnostics.filter((d) => d.severity === 'error').map(jsonDiagnostic),
        warnings: report.diagnostics.filter((d) => d.severity === 'warning').map(jsonDiagnostic),
      }) + '\n';
    case 'github':
      return formatGithubAnnotations(report, maxAnnotations).commands;
    case 'text':
      return report.diagnostics.map(textLine).join('') + summaryLine(report) + '\n';
  }
}

function jsonDiagnostic(d: Diagnostic): Record<string, unknown> {
  return { file: d.file, line: d.line, col: d.col, code: d.code, message: d.message, path: d.path };
}

export function textLine(d: Diagnostic): string {
  return `${d.file}:${d.line}:${d.col}: ${d.severity} ${d.code}: ${d.message}\n`;
}
