import type { GraphPicture, NodeShape, PictureNode } from './GraphPicture.js';
import { MARK_COLOURS } from './renderMermaid.js';

/** Graphviz shape and base style of each node shape: a forEach is drawn as a stack (box3d). */
const SHAPE: Readonly<Record<NodeShape, { shape: string; style: string }>> = {
  task: { shape: 'box', style: 'rounded' },
  forEach: { shape: 'box3d', style: '' },
  approval: { shape: 'hexagon', style: '' },
  workflow: { shape: 'component', style: '' },
  compensate: { shape: 'box', style: 'dashed' },
};

/**
 * A picture in Graphviz DOT (`dot -Tsvg`). Node ids are generated (`n1`, ...), labels are
 * quoted strings with `\` and `"` escaped and line breaks and control characters removed,
 * so no task name or expression can end a string or smuggle in an escape like `\N`.
 * onFailure and finally tasks are drawn in their own dashed clusters.
 */
export function renderDot(picture: GraphPicture): string {
  const ids = new Map(picture.nodes.map((n, i) => [n.key, `n${i + 1}`]));
  const lines = [
    `digraph ${dotString(picture.workflow)} {`,
    '  graph [rankdir=TB, fontname="Helvetica"];',
    '  node [fontname="Helvetica", fontsize=11];',
    '  edge [fontname="Helvetica", fontsize=9];',
  ];
  const node = (n: PictureNode, indent: string): string => {
    const s = SHAPE[n.shape];
    const colour = n.mark !== undefined ? MARK_COLOURS[n.mark] : undefined;
    const styles = [s.style, colour !== undefined ? 'filled' : '', n.mark === 'removed' ? 'dashed' : ''].filter((x, i, all) => x !== '' && all.indexOf(x) === i);
    const attrs = [`label=${dotLabel([n.title, ...n.details])}`, `shape=${s.shape}`];
    if (styles.length > 0) attrs.push(`style=${dotString(styles.join(','))}`);
    if (colour !== undefined) attrs.push(`fillcolor=${dotString(colour.fill)}`, `color=${dotString(colour.stroke)}`, `fontcolor=${dotString(colour.color)}`);
    if (n.mark !== undefined) attrs.push(`class=${dotString(n.mark)}`);
    return `${indent}${ids.get(n.key)!} [${attrs.join(', ')}];`;
  };
  for (const n of picture.nodes) if (n.group === 'tasks') lines.push(node(n, '  '));
  for (const group of ['onFailure', 'finally'] as const) {
    const members = picture.nodes.filter((n) => n.group === group);
    if (members.length === 0) continue;
    lines.push(`  subgraph cluster_${group} {`, `    label=${dotString(group)};`, '    style=dashed;', ...members.map((n) => node(n, '    ')), '  }');
  }
  for (const e of picture.edges) {
    const from = ids.get(e.from);
    const to = ids.get(e.to);
    if (from === undefined || to === undefined) continue;
    lines.push(e.kind === 'needs' ? `  ${from} -> ${to};` : e.kind === 'compensate' ? `  ${from} -> ${to} [style=dashed, label="undo"];` : `  ${from} -> ${to} [style=dashed, constraint=false];`);
  }
  lines.push('}');
  return lines.join('\n') + '\n';
}

/** A DOT quoted string: only `"` and `\` need escaping; line breaks and control characters become spaces. */
export function dotString(text: string): string {
  // Matching control characters is this expression's whole purpose.
  // eslint-disable-next-line no-control-regex
  return `"${text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ').replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/** Label lines joined by Graphviz's own centred line break (`\n`), each line escaped first. */
function dotLabel(lines: readonly string[]): string {
  return `"${lines.map((l) => dotString(l).slice(1, -1)).join('\\n')}"`;
}
