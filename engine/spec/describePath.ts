/**
 * Human wording for where a problem is: "task 'ingest'", "pool 'analysts'", or a dotted path
 * such as "spec.defaults.retry", so messages read well without the line number.
 */
export function describePath(root: unknown, path: ReadonlyArray<string | number>): string {
  if (path.length === 0) return 'the workflow';
  const [a, b, c, d] = path;
  if (a === 'spec' && (b === 'tasks' || b === 'onFailure' || b === 'finally') && typeof c === 'number') {
    const name = nameAt(root, ['spec', b, c]);
    const kind = b === 'tasks' ? 'task' : `${b} task`;
    const who = name !== undefined ? `${kind} '${name}'` : `${kind} #${c + 1}`;
    const rest = path.slice(3);
    return rest.length === 0 ? who : `${dotted(rest)} of ${who}`;
  }
  if (a === 'spec' && b === 'pools' && typeof c === 'string') {
    return d === undefined ? `pool '${c}'` : `${dotted(path.slice(3))} of pool '${c}'`;
  }
  if (a === 'spec' && b === 'params' && typeof c === 'string') {
    return d === undefined ? `param '${c}'` : `${dotted(path.slice(3))} of param '${c}'`;
  }
  if (a === 'spec' && b === 'triggers' && typeof c === 'number') {
    return path.length === 3 ? `trigger #${c + 1}` : `${dotted(path.slice(3))} of trigger #${c + 1}`;
  }
  return dotted(path);
}

export function dotted(path: ReadonlyArray<string | number>): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out === '' ? seg : `.${seg}`;
  }
  return out;
}

function nameAt(root: unknown, path: ReadonlyArray<string | number>): string | undefined {
  let node: unknown = root;
  for (const seg of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string | number, unknown>)[seg];
  }
  if (node !== null && typeof node === 'object' && typeof (node as { name?: unknown }).name === 'string') {
    return (node as { name: string }).name;
  }
  return undefined;
}

/** The closest candidate by edit distance, for "did you mean" hints. */
export function closest(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestScore = Infinity;
  for (const c of candidates) {
    const s = editDistance(word.toLowerCase(), c.toLowerCase());
    if (s < bestScore) {
      bestScore = s;
      best = c;
    }
  }
  if (best === undefined) return undefined;
  // Short names are too alike to guess between ('a' vs 'b'); only hint when most of it matches.
  const limit = Math.floor(Math.max(word.length, best.length) / 3);
  return bestScore <= limit ? best : undefined;
}

function editDistance(a: string, b: string): number {
  if (a === b) return 0;
  if (Math.abs(a.length - b.length) > 8) return Infinity;
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  let prevPrev: number[] = [];
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + cost);
      // Transposition ("tiemout" for "timeout") counts as one edit.
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        cur[j] = Math.min(cur[j]!, (prevPrev[j - 2] ?? Infinity) + 1);
      }
    }
    prevPrev = prev;
    prev = cur;
  }
  return prev[b.length]!;
}
