/**
 * Replaces every secret value in `text` with `***` before it leaves the runner (log lines,
 * error messages): they end up on the bus and in the Git audit trail. Values shorter than
 * three characters are left alone, or every `a` in a log would be masked.
 */
export function maskSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) if (s.length >= 3) out = out.split(s).join('***');
  return out;
}
