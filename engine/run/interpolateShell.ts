import { findTemplates } from '../spec/parseExpression.js';
import { evaluateExpression, ExpressionEvaluationError, type ExpressionContext } from './evaluate.js';

/** Environment variables that carry expression values into a shell script: `CARAVAN_EXPR_0`, `_1`... */
export const EXPRESSION_VARIABLE_PREFIX = 'CARAVAN_EXPR_';

/** A shell script whose `${{ }}` were replaced by references to the variables in `env`. */
export interface ShellScript {
  script: string;
  /** The expressions' values, by variable name: set them in the script's environment. */
  env: Record<string, string>;
}

/** Where a `${{ }}` stands in the script, as the shell will read it. */
type Quoting = 'plain' | 'double' | 'single' | 'arithmetic' | 'heredoc' | 'heredoc-literal';

/**
 * Makes `${{ }}` in a shell command safe, the way GitHub Actions advises for untrusted input:
 * each value goes into an environment variable, and the script refers to that variable where
 * the expression stood, so the shell never parses the value. It stays one word with its exact
 * text, whatever quotes, `$( )`, backticks, `;` or newlines it holds. The reference is
 * written for where the expression stands: `"${V}"` unquoted (one word, not split or
 * globbed), `${V}` inside double quotes or an expanding here-document, `'"${V}"'` inside
 * single quotes (the quote is closed, the value spliced in double quotes, the quote reopened),
 * and the value itself in a here-document whose delimiter is quoted (nothing is expanded there).
 *
 * The price: a value is never more than one word. `${{ params.flags }}` holding `-a -b` is one
 * argument; lists belong in `forEach` or `args`.
 */
export function interpolateShell(script: string, ctx: ExpressionContext): ShellScript {
  if (!script.includes('${{')) return { script, env: {} };
  const scan = findTemplates(script);
  if (!scan.ok) throw new ExpressionEvaluationError(script, scan.message);
  const env: Record<string, string> = {};
  const reader = new QuotingReader(script);
  let out = '';
  let last = 0;
  scan.templates.forEach((t, i) => {
    const quoting = reader.readTo(t.start);
    out += script.slice(last, t.start);
    const v = evaluateExpression(t.source, ctx);
    const value = v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v);
    const name = `${EXPRESSION_VARIABLE_PREFIX}${i}`;
    if (quoting === 'arithmetic' && !/^\s*[-+]?[0-9]+\s*$/.test(value)) {
      // $(( )) evaluates the text it expands (bash even runs $( ) inside array subscripts
      // there), and quotes are not allowed in it: only a plain integer can stand there.
      throw new ExpressionEvaluationError(t.source, `its value stands in an arithmetic expansion $(( )), where only an integer is safe, not ${JSON.stringify(value.slice(0, 40))}`);
    }
    if (quoting === 'heredoc-literal') {
      // Nothing is expanded in this body, so only the value itself can stand there: safe
      // unless one of its lines would end the here-document early.
      const h = reader.heredoc!;
      if (value.split('\n').some((l) => (h.stripTabs === true ? l.replace(/^\t+/, '') : l) === h.delimiter)) {
        throw new ExpressionEvaluationError(t.source, `its value holds the line '${h.delimiter}', which would end the here-document it stands in; use an unquoted delimiter (<<${h.delimiter})`);
      }
      out += value;
    } else {
      env[name] = value;
      out += reference(name, quoting);
    }
    last = t.start + 3 + t.source.length + 2;
    reader.skipTo(last);
  });
  return { script: out + script.slice(last), env };
}

function reference(name: string, quoting: Exclude<Quoting, 'heredoc-literal'>): string {
  switch (quoting) {
    case 'plain':
      return `"\${${name}}"`;
    case 'double':
    case 'heredoc':
    case 'arithmetic':
      return `\${${name}}`;
    case 'single':
      return `'"\${${name}}"'`;
  }
}

/** One level of the shell's nesting: a quote, a command substitution, a here-document body. */
interface Frame {
  kind: 'plain' | 'double' | 'single' | 'subst' | 'arithmetic' | 'backtick' | 'heredoc';
  /** Open parentheses inside a `$( )`, so that `( )` and `case` patterns do not end it. */
  depth?: number;
  /** The here-document's delimiter line, and whether its body is expanded. */
  delimiter?: string;
  expands?: boolean;
  stripTabs?: boolean;
}

/**
 * Follows the POSIX shell's quoting through a script, left to right, far enough to say how
 * the shell reads the text at a position: quotes, backslashes, `$( )`, backticks, comments
 * and here-documents. A template's own text is skipped (it is replaced, not read).
 */
class QuotingReader {
  private pos = 0;
  private readonly stack: Frame[] = [{ kind: 'plain' }];
  /** Here-documents announced on the current line; their bodies start after its newline. */
  private pendingHeredocs: Frame[] = [];

  constructor(private readonly s: string) {}

  private get top(): Frame {
    return this.stack[this.stack.length - 1]!;
  }

  /** The here-document the last position read is in, if any. */
  get heredoc(): Frame | undefined {
    return this.top.kind === 'heredoc' ? this.top : undefined;
  }

  skipTo(pos: number): void {
    this.pos = Math.max(this.pos, pos);
  }

  readTo(end: number): Quoting {
    const s = this.s;
    while (this.pos < end) {
      const f = this.top;
      const c = s[this.pos]!;
      if (f.kind === 'heredoc') {
        this.readHeredocLine(f, end);
        continue;
      }
      if (f.kind === 'single') {
        if (c === "'") this.stack.pop();
        this.pos++;
        continue;
      }
      if (c === '\\') {
        this.pos += 2;
        continue;
      }
      if (f.kind === 'double') {
        if (c === '"') this.stack.pop();
        else if (c === '$' && s[this.pos + 1] === '(' && s[this.pos + 2] === '(') {
          this.stack.push({ kind: 'arithmetic', depth: 0 });
          this.pos += 2;
        } else if (c === '$' && s[this.pos + 1] === '(') {
          this.stack.push({ kind: 'subst', depth: 0 });
          this.pos++;
        } else if (c === '`') this.stack.push({ kind: 'backtick' });
        this.pos++;
        continue;
      }
      // plain, subst, backtick: the shell's own syntax.
      if (c === "'") this.stack.push({ kind: 'single' });
      else if (c === '"') this.stack.push({ kind: 'double' });
      else if (c === '`') {
        if (f.kind === 'backtick') this.stack.pop();
        else this.stack.push({ kind: 'backtick' });
      } else if (c === '$' && s[this.pos + 1] === '(' && s[this.pos + 2] === '(') {
        this.stack.push({ kind: 'arithmetic', depth: 0 });
        this.pos += 2;
      } else if (c === '$' && s[this.pos + 1] === '(') {
        this.stack.push({ kind: 'subst', depth: 0 });
        this.pos++;
      } else if (c === '(' && (f.kind === 'subst' || f.kind === 'arithmetic')) f.depth = (f.depth ?? 0) + 1;
      else if (c === ')' && (f.kind === 'subst' || f.kind === 'arithmetic')) {
        if ((f.depth ?? 0) > 0) f.depth = f.depth! - 1;
        else {
          this.stack.pop();
          // An arithmetic expansion ends with `))`.
          if (f.kind === 'arithmetic') this.pos++;
        }
      } else if (c === '#' && (this.pos === 0 || /\s/.test(s[this.pos - 1]!))) {
        const nl = s.indexOf('\n', this.pos);
        this.pos = nl < 0 ? s.length : nl;
        continue;
      } else if (c === '<' && s[this.pos + 1] === '<' && s[this.pos + 2] !== '<') {
        this.announceHeredoc();
        continue;
      } else if (c === '\n' && this.pendingHeredocs.length > 0) {
        // Bodies follow in the order their operators appeared.
        this.stack.push(...[...this.pendingHeredocs].reverse());
        this.pendingHeredocs = [];
      }
      this.pos++;
    }
    const f = this.top;
    if (f.kind === 'heredoc') return f.expands === true ? 'heredoc' : 'heredoc-literal';
    if (f.kind === 'single' || f.kind === 'double' || f.kind === 'arithmetic') return f.kind;
    return 'plain';
  }

  /** `<<WORD`, `<<-WORD`, `<<'WORD'`, `<<"WORD"`: a quoted delimiter means a literal body. */
  private announceHeredoc(): void {
    const m = /^<<(-?)[ \t]*(?:'([^'\n]*)'|"([^"\n]*)"|\\?([^\s;&|<>()]+))/.exec(this.s.slice(this.pos));
    if (m === null) {
      this.pos += 2;
      return;
    }
    const quoted = m[2] !== undefined || m[3] !== undefined || m[0].includes('\\');
    this.pendingHeredocs.push({ kind: 'heredoc', delimiter: m[2] ?? m[3] ?? m[4]!, expands: !quoted, stripTabs: m[1] === '-' });
    this.pos += m[0].length;
  }

  /** Reads a here-document body line by line; the delimiter line ends it. */
  private readHeredocLine(f: Frame, end: number): void {
    const s = this.s;
    const nl = s.indexOf('\n', this.pos);
    const lineEnd = nl < 0 ? s.length : nl;
    // Only a whole line can be the delimiter (a read can stop and resume inside a line).
    if (this.pos === 0 || s[this.pos - 1] === '\n') {
      const line = s.slice(this.pos, lineEnd);
      if ((f.stripTabs === true ? line.replace(/^\t+/, '') : line) === f.delimiter) {
        this.stack.pop();
        this.pos = lineEnd;
        return;
      }
    }
    this.pos = Math.min(end, lineEnd + 1);
  }
}
