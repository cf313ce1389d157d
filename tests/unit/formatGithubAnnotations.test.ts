import { describe, expect, it } from 'vitest';
import type { Diagnostic } from '../../engine/spec/Diagnostic.js';
import { annotationLine, escapeData, escapeProperty, formatGithubAnnotations } from '../../engine/spec/formatGithubAnnotations.js';
import { validateSource, type ValidationReport } from '../../engine/spec/validateWorkflows.js';

/** What the Actions runner does with a command's property or message (its CommandExtensions). */
function unescape(s: string): string {
  return s.replace(/%0D/g, '\r').replace(/%0A/g, '\n').replace(/%3A/g, ':').replace(/%2C/g, ',').replace(/%25/g, '%');
}

/** Parses one workflow command as the runner does: `::kind k=v,k=v::message`. */
function parseCommand(line: string): { kind: string; props: Record<string, string>; message: string } {
  const m = /^::(\w+) ([^:]*)::(.*)$/.exec(line);
  if (m === null) throw new Error(`not a workflow command: ${line}`);
  const props = Object.fromEntries(m[2]!.split(',').map((p) => {
    const i = p.indexOf('=');
    return [p.slice(0, i), unescape(p.slice(i + 1))];
  }));
  return { kind: m[1]!, props, message: unescape(m[3]!) };
}

function diag(file: string, line: number, message: string, severity: Diagnostic['severity'] = 'error'): Diagnostic {
  return { file, line, col: 3, severity, code: 'NEEDS_UNKNOWN', message, path: '/spec' };
}

function report(diagnostics: Diagnostic[], files = 1): ValidationReport {
  const ok = validateSource('ok.yaml', new TextEncoder().encode('apiVersion: caravan/v1\nkind: Workflow\nmetadata: { name: ok }\nspec:\n  tasks: [{ name: a, run: "true" }]\n'));
  return {
    files: Array.from({ length: files }, () => ok),
    diagnostics,
    errorCount: diagnostics.filter((d) => d.severity === 'error').length,
    warningCount: diagnostics.filter((d) => d.severity === 'warning').length,
  };
}

describe('GitHub workflow commands', () => {
  it('escapes %, CR and LF in messages, and also : and , in properties', () => {
    expect(escapeData('100% done\r\nnext')).toBe('100%25 done%0D%0Anext');
    expect(escapeProperty('a:b,c%d\n')).toBe('a%3Ab%2Cc%25d%0A');
    // An escape already in the text stays text: % is escaped first.
    expect(escapeData('%0A')).toBe('%250A');
  });

  it('a hostile message cannot start a command of its own or end the annotation early', () => {
    const hostile = "bad\n::error file=/etc/passwd,line=1::pwned\r\n::add-mask::x %0A ::stop-commands::t";
    const line = annotationLine(diag('workflows/a,b:c.yaml', 7, hostile));
    // One line: the runner reads commands line by line.
    expect(line.endsWith('\n')).toBe(true);
    expect(line.slice(0, -1)).not.toMatch(/[\r\n]/);
    const cmd = parseCommand(line.slice(0, -1));
    expect(cmd).toEqual({ kind: 'error', props: { file: 'workflows/a,b:c.yaml', line: '7', col: '3', title: 'NEEDS_UNKNOWN' }, message: hostile });
  });

  it('a hostile file name cannot add properties', () => {
    const cmd = parseCommand(annotationLine(diag('x.yaml,line=999,title=owned', 2, 'm')).trimEnd());
    expect(cmd.props).toEqual({ file: 'x.yaml,line=999,title=owned', line: '2', col: '3', title: 'NEEDS_UNKNOWN' });
  });

  it('annotates at most 10 by default, errors first, then one notice naming the rest; the summary lists all', () => {
    const ds = [
      ...Array.from({ length: 12 }, (_, i) => diag('w.yaml', i + 1, `error ${i + 1}`)),
      diag('w.yaml', 50, 'a warning', 'warning'),
    ];
    const out = formatGithubAnnotations(report([ds[12]!, ...ds.slice(0, 12)]));
    const lines = out.commands.trimEnd().split('\n');
    expect(lines.filter((l) => l.startsWith('::error '))).toHaveLength(10);
    expect(lines.filter((l) => l.startsWith('::warning '))).toHaveLength(0);
    expect(lines.map((l) => (l.startsWith('::') ? parseCommand(l).message : l)).slice(0, 10)).toEqual(Array.from({ length: 10 }, (_, i) => `error ${i + 1}`));
    expect(lines[10]).toBe('::notice title=Caravan%3A more problems::3 more problems not annotated (GitHub shows only a few per step); the job summary lists all 13');
    expect(lines[11]).toBe('1 file checked: 12 errors, 1 warning (1 of 1 file invalid)');
    expect(out.omitted).toBe(3);
    const rows = out.summary.split('\n').filter((l) => l.startsWith('| w.yaml'));
    expect(rows).toHaveLength(13);
    expect(rows[12]).toBe('| w.yaml | 50 | 3 | warning | NEEDS_UNKNOWN | a warning |');
  });

  it('the limit is configurable, and nothing is said about a rest when there is none', () => {
    const ds = [diag('a.yaml', 1, 'one'), diag('a.yaml', 2, 'two'), diag('a.yaml', 3, 'three')];
    expect(formatGithubAnnotations(report(ds), 2).commands.split('\n').filter((l) => l.startsWith('::'))).toEqual([
      '::error file=a.yaml,line=1,col=3,title=NEEDS_UNKNOWN::one',
      '::error file=a.yaml,line=2,col=3,title=NEEDS_UNKNOWN::two',
      '::notice title=Caravan%3A more problems::1 more problem not annotated (GitHub shows only a few per step); the job summary lists all 3',
    ]);
    const all = formatGithubAnnotations(report(ds), 3);
    expect(all.omitted).toBe(0);
    expect(all.commands).not.toContain('::notice');
    expect(formatGithubAnnotations(report([]))).toEqual({ commands: '1 file checked: all valid\n', summary: '', omitted: 0 });
  });

  it('the summary table keeps a hostile message inside its cell', () => {
    const out = formatGithubAnnotations(report([diag('a|b.yaml', 1, 'x | y\n| z <script>alert(1)</script>')]));
    expect(out.summary).toContain('| a\\|b.yaml | 1 | 3 | error | NEEDS_UNKNOWN | x \\| y \\| z &lt;script&gt;alert(1)&lt;/script&gt; |\n');
  });
});
