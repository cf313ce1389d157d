/** The items to fan out over, or what the value was instead ("a mapping", "a string that is not JSON"). */
export type ForEachItems = { ok: true; items: unknown[] } | { ok: false; got: string };

/**
 * The items of a forEach from what its expression yielded: a list, or a string holding a
 * JSON array (Argo's withParam: task outputs are strings, so `${{ tasks.x.outputs.items }}`
 * needs no fromJSON).
 */
export function forEachItems(v: unknown): ForEachItems {
  if (Array.isArray(v)) return { ok: true, items: v };
  if (typeof v !== 'string') return { ok: false, got: kindName(v) };
  let parsed: unknown;
  try {
    parsed = JSON.parse(v);
  } catch {
    return { ok: false, got: 'a string that is not JSON' };
  }
  return Array.isArray(parsed) ? { ok: true, items: parsed } : { ok: false, got: `a string holding ${kindName(parsed)}` };
}

function kindName(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (Array.isArray(v)) return 'a list';
  return typeof v === 'object' ? 'a mapping' : `a ${typeof v}`;
}
