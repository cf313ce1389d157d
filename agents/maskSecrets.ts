/**
 * What a secret is replaced by wherever the runner reports text (log lines, failure
 * messages, output values): they end up on the bus and in the Git audit trail.
 */
export const SECRET_MASK = '***';

/**
 * The masking rule: a secret value, or one line of a multi-line value, is masked when it
 * holds at least this many characters besides surrounding white space. Shorter ones are left
 * alone, or every `a` in a log would become `***`; such a secret is not protected by masking.
 */
export const MIN_SECRET_LENGTH = 3;

/**
 * Every secret value an attempt can see, ready to mask text with. Besides each whole value,
 * each line of a multi-line value (logs arrive line by line) and each value without its
 * surrounding white space (a secret file's trailing newline) is masked. Longer patterns go
 * first, so a secret that contains another is masked whole rather than leaving its rest.
 */
export class SecretMask {
  /** Masks nothing: the common case costs no work per line. */
  static readonly none = new SecretMask([]);

  private readonly patterns: readonly string[];

  constructor(values: readonly string[]) {
    const found = new Set<string>();
    const add = (s: string): void => {
      if (s.trim().length < MIN_SECRET_LENGTH) return;
      found.add(s);
      found.add(s.trim());
    };
    for (const v of values) {
      add(v);
      if (v.includes('\n')) for (const line of v.split(/\r?\n/)) add(line);
    }
    this.patterns = [...found].sort((a, b) => b.length - a.length);
  }

  get empty(): boolean {
    return this.patterns.length === 0;
  }

  /** This mask and more secret values (a mask from the environment, then what the attempt resolved). */
  with(values: readonly string[]): SecretMask {
    return values.length === 0 ? this : new SecretMask([...this.patterns, ...values]);
  }

  /** `text` with every occurrence of a secret replaced by `***`. */
  apply(text: string): string {
    let out = text;
    for (const p of this.patterns) if (out.includes(p)) out = out.replaceAll(p, SECRET_MASK);
    return out;
  }

  /**
   * For messages that quote an excerpt cut at a length limit (`outputs line 1 is not
   * key=value: '<first 60 characters>'`): besides every whole secret, a secret's beginning
   * (at least MIN_SECRET_LENGTH characters of it) right before a closing `'` is masked, as
   * the cut may have kept only that part. Text that merely ends like a secret starts is
   * masked too; in an error message that costs little.
   */
  message(text: string): string {
    let out = this.apply(text);
    if (this.empty || !out.includes("'")) return out;
    for (let q = out.indexOf("'"); q !== -1; q = out.indexOf("'", q + 1)) {
      const from = this.cutSecretBefore(out, q);
      if (from < q) {
        out = out.slice(0, from) + SECRET_MASK + out.slice(q);
        q = from + SECRET_MASK.length;
      }
    }
    return out;
  }

  /** Where the longest beginning of a secret that ends at `end` starts; `end` when there is none. */
  private cutSecretBefore(text: string, end: number): number {
    let best = end;
    for (const p of this.patterns) {
      const head = p.slice(0, MIN_SECRET_LENGTH);
      // Candidates are where the secret's first characters occur within reach of `end`; the
      // earliest that matches up to `end` is the longest beginning.
      for (let j = text.indexOf(head, Math.max(0, end - p.length + 1)); j !== -1 && j <= end - MIN_SECRET_LENGTH && j < best; j = text.indexOf(head, j + 1)) {
        if (p.startsWith(text.slice(j, end))) {
          best = j;
          break;
        }
      }
    }
    return best;
  }
}

/**
 * Replaces every secret value in `text` with `***` (see SecretMask for the rule). For many
 * lines, build one SecretMask and apply it to each.
 */
export function maskSecrets(text: string, secrets: readonly string[]): string {
  return new SecretMask(secrets).apply(text);
}
