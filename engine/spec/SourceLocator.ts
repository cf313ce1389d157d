import * as YAML from 'yaml';
import type { PendingDiagnostic } from './Diagnostic.js';

export interface Position {
  line: number;
  col: number;
}

/**
 * Maps a document path back to a line and column. The `yaml` CST is only built the first
 * time a position is asked for, so valid files (the common case) never pay for it.
 */
export class SourceLocator {
  private doc: YAML.Document.Parsed | undefined;
  private readonly lineCounter = new YAML.LineCounter();

  constructor(private readonly text: string) {}

  locate(d: Pick<PendingDiagnostic, 'path' | 'at' | 'offsetInValue'>): Position {
    const doc = this.document();
    let node: unknown = doc.contents;
    let keyNode: YAML.Scalar | undefined;
    let best: Position = this.nodeStart(node) ?? { line: 1, col: 1 };
    const path = d.path;
    for (let i = 0; i < path.length; i++) {
      const seg = path[i]!;
      node = this.deref(node);
      let next: unknown;
      keyNode = undefined;
      if (YAML.isMap(node)) {
        const pair = node.items.find((p) => YAML.isScalar(p.key) && String(p.key.value) === String(seg));
        if (pair === undefined) break;
        keyNode = pair.key as YAML.Scalar;
        next = pair.value;
        const keyPos = this.nodeStart(keyNode);
        if (keyPos !== undefined) best = keyPos;
      } else if (YAML.isSeq(node) && typeof seg === 'number') {
        next = node.items[seg];
        if (next === undefined) break;
      } else {
        break;
      }
      const isLast = i === path.length - 1;
      if (isLast && d.at === 'key' && keyNode !== undefined) {
        return best;
      }
      const valuePos = this.nodeStart(next);
      if (valuePos !== undefined) best = valuePos;
      node = next;
      if (isLast && d.offsetInValue !== undefined) {
        const inner = this.offsetWithin(this.deref(node), d.offsetInValue);
        if (inner !== undefined) return inner;
      }
    }
    return best;
  }

  private document(): YAML.Document.Parsed {
    if (this.doc === undefined) {
      this.doc = YAML.parseDocument(this.text, {
        lineCounter: this.lineCounter,
        prettyErrors: false,
        uniqueKeys: false,
        merge: true,
      });
    }
    return this.doc;
  }

  private deref(node: unknown): unknown {
    if (YAML.isAlias(node)) return node.resolve(this.document());
    return node;
  }

  private nodeStart(node: unknown): Position | undefined {
    if (YAML.isNode(node) && node.range) return this.lineCounter.linePos(node.range[0]);
    return undefined;
  }

  /** Position of the `index`-th occurrence of `needle` in the raw source of a scalar. */
  private offsetWithin(node: unknown, where: { needle: string; index: number; extra: number }): Position | undefined {
    if (!YAML.isScalar(node) || !node.range) return undefined;
    const raw = this.text.slice(node.range[0], node.range[1]);
    let at = -1;
    for (let k = 0; k <= where.index; k++) {
      at = raw.indexOf(where.needle, at + 1);
      if (at === -1) return undefined;
    }
    return this.lineCounter.linePos(node.range[0] + at + where.extra);
  }
}
