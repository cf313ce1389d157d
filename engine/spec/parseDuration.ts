const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const PART = /([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)/gy;

/**
 * "1h30m" to milliseconds. Returns undefined for anything that is not a duration, so callers
 * decide how to report it (the schema already rejects malformed ones with a position).
 */
export function parseDuration(text: string): number | undefined {
  if (text.length === 0) return undefined;
  PART.lastIndex = 0;
  let total = 0;
  let consumed = 0;
  for (let m = PART.exec(text); m !== null; m = PART.exec(text)) {
    total += Number(m[1]) * (UNIT_MS[m[2]!] ?? NaN);
    consumed = PART.lastIndex;
  }
  if (consumed !== text.length || !Number.isFinite(total)) return undefined;
  return total;
}

/** Milliseconds to Nomad's integer nanoseconds. */
export function durationToNanos(text: string): number | undefined {
  const ms = parseDuration(text);
  return ms === undefined ? undefined : Math.round(ms * 1_000_000);
}
