/** Anything pino can write finished lines to: a file stream, standard error, a test's buffer. */
export interface LineSink {
  write(line: string): unknown;
}

/** What a masked value is replaced with, here as in the agents' task logs. */
export const MASK = '***';

/** Shorter values are left alone, as the agents do: masking every `a` would ruin the log. */
const MIN_SECRET_LENGTH = 3;

/** A JSON string literal, escapes included. */
const JSON_STRING = /"(?:[^"\\]|\\.)*"/g;

/**
 * The forms to look for in a JSON line for each secret value: the value as JSON writes it
 * inside a string (a quote, a backslash or a newline in it escaped; for most secrets, the
 * value itself), and as it reads once more escaped (a JSON text quoted in a field, such as
 * an error message holding a request body). Longest first, so that a secret that contains
 * another is masked whole. `known` forms are kept.
 */
export function secretForms(values: readonly string[], known: readonly string[] = []): readonly string[] {
  const forms = new Set(known);
  for (const v of values) {
    if (v.length < MIN_SECRET_LENGTH) continue;
    const once = JSON.stringify(v).slice(1, -1);
    forms.add(once);
    forms.add(JSON.stringify(once).slice(1, -1));
  }
  return [...forms].sort((a, b) => b.length - a.length);
}

/**
 * The stream between pino and the real destination: it masks secret values in each finished
 * line. Working on the line, rather than on the fields handed to one call, catches a value
 * wherever it went: the message, a field at any depth, a child's bindings (serialized when
 * the child was made), an error's message, stack and causes.
 *
 * Only the insides of JSON strings are masked, so the line stays valid JSON whatever the
 * secret (`123` would otherwise eat a number). A secret that appears as a number field is
 * not found by value; such fields belong in the redacted paths.
 *
 * `secrets` is set by the logger that is writing, for the duration of its call: one stream
 * serves a root logger and all its children, each with its own secrets.
 */
export class SecretMaskingStream implements LineSink {
  secrets: readonly string[] = [];

  constructor(private readonly sink: LineSink) {}

  write(line: string): void {
    this.sink.write(this.secrets.length === 0 ? line : maskLine(line, this.secrets));
  }
}

/** `line` with every form in `forms` replaced by MASK inside its JSON strings. */
export function maskLine(line: string, forms: readonly string[]): string {
  // Most lines carry no secret: look before building a new line.
  if (!forms.some((f) => line.includes(f))) return line;
  return line.replace(JSON_STRING, (literal) => {
    let out = literal;
    for (const f of forms) if (out.includes(f)) out = out.split(f).join(MASK);
    return out;
  });
}
