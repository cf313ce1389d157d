import type { Diagnostic } from './Diagnostic.js';
import type { ValidationReport } from './validateWorkflows.js';

/**
 * GitHub shows at most 10 error and 10 warning annotations per step (50 per job); the rest
 * are dropped without a word. So Caravan emits a bounded number itself and says how many it
 * left out, and the full list goes to the job summary.
 */
export const DEFAULT_MAX_ANNOTATIONS = 10;

export interface GithubAnnotations {
  /** Workflow commands, one per line, then the plain summary line for the log. */
  commands: string;
  /** The full list as Markdown, for `$GITHUB_STEP_SUMMARY`; empty when there is nothing to list. */
  summary: string;
  /** How many diagnostics were not annotated. */
  omitted: number;
}

/**
 * Escaping for a workflow command's message, as the Actions runner unescapes it: `%` first,
 * so that an escape already present in the text survives as text.
 */
export function escapeData(s: string): string {
  return s.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}

/** Escaping for a property value (`file=`, `title=`): also `:` and `,`, which end a property. */
export function escapeProperty(s: string): string {
  return escapeData(s).replace(/:/g, '%3A').replace(/,/g, '%2C');
}

/** One `::error file=…,line=…,col=…,title=…::message` line for a diagnostic. */
export function annotationLine(d: Diagnostic): string {
  const kind = d.severity === 'error' ? 'error' : 'warning';
  return `::${kind} file=${escapeProperty(d.file)},line=${d.line},col=${d.col},title=${escapeProperty(d.code)}::${escapeData(d.message)}\n`;
}

/**
 * A report as GitHub workflow commands: at most `max` annotations (errors before warnings, so
 * that what fails the check is what is shown), then one notice naming how many were left out.
 * The notice is of a third kind, so it is never itself the one GitHub drops.
 */
export function formatGithubAnnotations(report: ValidationReport, max = DEFAULT_MAX_ANNOTATIONS): GithubAnnotations {
  const ordered = [...report.diagnostics.filter((d) => d.severity === 'error'), ...report.diagnostics.filter((d) => d.severity !== 'error')];
  const shown = ordered.slice(0, max);
  const omitted = ordered.length - shown.length;
  let commands = shown.map(annotationLine).join('');
  if (omitted > 0) {
    commands += `::notice title=${escapeProperty('Caravan: more problems')}::${escapeData(`${omitted} more problem${omitted === 1 ? '' : 's'} not annotated (GitHub shows only a few per step); the job summary lists all ${ordered.length}`)}\n`;
  }
  commands += summaryLine(report) + '\n';
  return { commands, summary: ordered.length === 0 ? '' : summaryTable(report, ordered), omitted };
}

/** Text inside a Markdown table cell: no row break, no column break, no HTML. */
export function tableCell(s: string): string {
  return s.replace(/\r?\n|\r/g, ' ').replace(/\|/g, '\\|').replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function summaryTable(report: ValidationReport, ordered: readonly Diagnostic[]): string {
  const lines = [
    '## Caravan validate',
    '',
    summaryLine(report),
    '',
    '| File | Line | Column | Severity | Code | Message |',
    '| --- | ---: | ---: | --- | --- | --- |',
    ...ordered.map((d) => `| ${tableCell(d.file)} | ${d.line} | ${d.col} | ${d.severity} | ${d.code} | ${tableCell(d.message)} |`),
  ];
  return lines.join('\n') + '\n';
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** `6 files checked: 3 errors (1 of 6 files invalid)`: the line a status check shows. */
export function summaryLine(r: ValidationReport): string {
  const files = plural(r.files.length, 'file');
  if (r.errorCount === 0 && r.warningCount === 0) return `${files} checked: all valid`;
  const bad = new Set(r.diagnostics.filter((d) => d.severity === 'error').map((d) => d.file)).size;
  const parts = [plural(r.errorCount, 'error')];
  if (r.warningCount > 0) parts.push(plural(r.warningCount, 'warning'));
  const tail = r.errorCount > 0 ? ` (${bad} of ${files} invalid)` : '';
  return `${files} checked: ${parts.join(', ')}${tail}`;
}
