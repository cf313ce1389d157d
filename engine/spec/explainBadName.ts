const rules: Record<string, { allowed: RegExp; words: string; first: RegExp; firstWords: string; max: number; lower?: boolean }> = {
  dnsLabel: { allowed: /[a-z0-9-]/, words: "lower-case letters, digits and '-'", first: /[a-z0-9]/, firstWords: 'a lower-case letter or digit', max: 63, lower: true },
  taskName: { allowed: /[A-Za-z0-9_-]/, words: "letters, digits, '-' and '_'", first: /[A-Za-z0-9]/, firstWords: 'a letter or digit', max: 63 },
  identifier: { allowed: /[A-Za-z0-9_-]/, words: "letters, digits, '-' and '_'", first: /[A-Za-z_]/, firstWords: "a letter or '_'", max: 63 },
  labelKey: { allowed: /[A-Za-z0-9._/-]/, words: "letters, digits, '.', '_', '/' and '-'", first: /[A-Za-z0-9]/, firstWords: 'a letter or digit', max: 63 },
  envName: { allowed: /[A-Za-z0-9_]/, words: "letters, digits and '_'", first: /[A-Za-z_]/, firstWords: "a letter or '_'", max: 128 },
};

const SHELL_META = /[;&|`$<>(){}\\'"!*?#~[\]]/;

const why = 'names become Nomad job IDs, NATS subjects and file paths';

/**
 * Says precisely what is wrong with a name, because "must match ^[a-z0-9]..." helps no one:
 * the offending character, a path separator or '..', case, or length.
 */
export function explainBadName(name: string, def: string): string {
  const r = rules[def];
  if (r === undefined) return 'it has characters that are not allowed';
  const allowed = `use ${r.words}`;
  if (name.length === 0) return 'it is empty';
  if (name.includes('..')) return `'..' is not allowed (${why}); ${allowed}`;
  if (name.includes('/') && !r.allowed.test('/')) return `'/' is not allowed (${why}); ${allowed}`;
  const bad = [...name].filter((ch) => !r.allowed.test(ch));
  const meta = bad.find((ch) => SHELL_META.test(ch));
  if (meta !== undefined) return `shell metacharacter '${meta}' is not allowed (${why}); ${allowed}`;
  const other = bad.find((ch) => !(r.lower === true && /[A-Z]/.test(ch)));
  if (other !== undefined) return `${/\s/.test(other) ? 'whitespace' : `'${other}'`} is not allowed (${why}); ${allowed}`;
  if (bad.length > 0) return `upper-case '${bad[0]}' is not allowed; ${allowed}`;
  if (!r.first.test(name[0]!)) return `it must start with ${r.firstWords}`;
  if (name.length > r.max) return `it is ${name.length} characters long; the limit is ${r.max}`;
  if (def === 'dnsLabel' || def === 'labelKey') return 'it must end with a letter or digit';
  return `${allowed}`;
}
