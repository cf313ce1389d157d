import type { Diagnostic } from './Diagnostic.js';
import type { ValidationReport } from './validateWorkflows.js';

export type DiagnosticFormat = 'text' | 'json' | 'github';
export const DIAGNOSTIC_FORMATS: readonly DiagnosticFormat[] = ['text', 'json', 'github'];

/** Renders a validation report for a terminal, a machine, or a GitHub Actions log. */
export function formatReport(report: ValidationReport, format: DiagnosticFormat): string {
  switch (format) {
    case 'json':
      return JSON.stringify({
        files: report.files.length,
        errors: report.diagnostics.filter((d) => d.severity === 'error').map(jsonDiagnostic),
        warnings: report.diagnostics.filter((d) => d.severity === 'warning').map(jsonDiagnostic),
      }) + '\n';
    case 'github':
      return report.diagnostics.map(githubLine).join('');
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

/** Workflow-command escaping, as the Actions runner expects it. */
function escapeData(s: string): string {
  return s.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}

function escapeProperty(s: string): string {
  return escapeData(s).replace(/:/g, '%3A').replace(/,/g, '%2C');
}

function githubLine(d: Diagnostic): string {
  const kind = d.severity === 'error' ? 'error' : 'warning';
  return `::${kind} file=${escapeProperty(d.file)},line=${d.line},col=${d.col}::${escapeData(`${d.code} ${d.message}`)}\n`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function summaryLine(r: ValidationReport): string {
  const files = plural(r.files.length, 'file');
  if (r.errorCount === 0 && r.warningCount === 0) return `${files} checked: all valid`;
  const bad = new Set(r.diagnostics.filter((d) => d.severity === 'error').map((d) => d.file)).size;
  const parts = [plural(r.errorCount, 'error')];
  if (r.warningCount > 0) parts.push(plural(r.warningCount, 'warning'));
  const tail = r.errorCount > 0 ? ` (${bad} of ${files} invalid)` : '';
  return `${files} checked: ${parts.join(', ')}${tail}`;
}
