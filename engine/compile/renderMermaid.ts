import type { GraphPicture, NodeMark, NodeShape, PictureGroup, PictureNode } from './GraphPicture.js';

/**
 * Colours per mark, chosen to read on GitHub's light and dark themes (fill, stroke, text).
 * Shared with the DOT renderer so both pictures of a run look alike.
 */
export const MARK_COLOURS: Readonly<Record<NodeMark, { fill: string; stroke: string; color: string }>> = {
  succeeded: { fill: '#d3f9d8', stroke: '#2b8a3e', color: '#1b4d2a' },
  failed: { fill: '#ffe3e3', stroke: '#c92a2a', color: '#6b1111' },
  skipped: { fill: '#f1f3f5', stroke: '#868e96', color: '#495057' },
  cancelled: { fill: '#fff3bf', stroke: '#e67700', color: '#5c3c00' },
  running: { fill: '#d0ebff', stroke: '#1971c2', color: '#0b3a66' },
  waiting: { fill: '#e5dbff', stroke: '#6741d9', color: '#2f1a73' },
  pending: { fill: '#ffffff', stroke: '#adb5bd', color: '#495057' },
  reused: { fill: '#e6fcf5', stroke: '#0ca678', color: '#084d3a' },
  added: { fill: '#d3f9d8', stroke: '#2b8a3e', color: '#1b4d2a' },
  changed: { fill: '#fff3bf', stroke: '#e67700', color: '#5c3c00' },
  removed: { fill: '#ffe3e3', stroke: '#c92a2a', color: '#6b1111' },
};

/** The order classDefs are written in, whatever order the nodes use them. */
const MARK_ORDER = Object.keys(MARK_COLOURS) as NodeMark[];

const GROUP_TITLE: Readonly<Record<Exclude<PictureGroup, 'tasks'>, string>> = { onFailure: 'onFailure', finally: 'finally' };

/** Opening and closing brackets of each shape (text goes between, always quoted). */
const SHAPE: Readonly<Record<NodeShape, [string, string]>> = {
  task: ['(', ')'],
  // A subroutine box (double sides): the closest a classic Mermaid shape comes to a stack.
  forEach: ['[[', ']]'],
  approval: ['{{', '}}'],
  workflow: ['([', '])'],
  compensate: ['[/', '/]'],
};

/**
 * A picture as a Mermaid flowchart that renders in GitHub comments and Markdown previews.
 * Node ids are generated (`n1`, `n2`, ...), never taken from task names, so no name can
 * collide with Mermaid's keywords (`end`, `graph`) or edge syntax; every label is quoted,
 * and every character outside a small safe set is written as a Mermaid entity code (`#60;`).
 */
export function renderMermaid(picture: GraphPicture): string {
  const ids = new Map(picture.nodes.map((n, i) => [n.key, `n${i + 1}`]));
  const lines = ['flowchart TD'];
  const node = (n: PictureNode, indent: string): string => {
    const [open, close] = SHAPE[n.shape];
    return `${indent}${ids.get(n.key)!}${open}"${[n.title, ...n.details].map(mermaidText).join('<br/>')}"${close}`;
  };
  for (const n of picture.nodes) if (n.group === 'tasks') lines.push(node(n, '  '));
  for (const group of ['onFailure', 'finally'] as const) {
    const members = picture.nodes.filter((n) => n.group === group);
    if (members.length === 0) continue;
    lines.push(`  subgraph ${group}_group["${mermaidText(GROUP_TITLE[group])}"]`, ...members.map((n) => node(n, '    ')), '  end');
  }
  for (const e of picture.edges) {
    const from = ids.get(e.from);
    const to = ids.get(e.to);
    if (from === undefined || to === undefined) continue;
    lines.push(e.kind === 'needs' ? `  ${from} --> ${to}` : e.kind === 'compensate' ? `  ${from} -. undo .-> ${to}` : `  ${from} -.-> ${to}`);
  }
  const used = MARK_ORDER.filter((m) => picture.nodes.some((n) => n.mark === m));
  for (const m of used) {
    const c = MARK_COLOURS[m];
    lines.push(`  classDef ${m} fill:${c.fill},stroke:${c.stroke},color:${c.color}${m === 'removed' ? ',stroke-dasharray:4 3' : ''}`);
  }
  for (const m of used) lines.push(`  class ${picture.nodes.filter((n) => n.mark === m).map((n) => ids.get(n.key)!).join(',')} ${m}`);
  return lines.join('\n') + '\n';
}

/**
 * Text safe inside a quoted Mermaid label: letters, digits and plain punctuation stay, every
 * other character (quotes, brackets, `<`, `>`, `&`, backticks, `#`, `;`, non-ASCII) becomes
 * its entity code, which Mermaid decodes to a character entity after parsing, so it can
 * neither end the label nor become markup. Line breaks and control characters become spaces.
 */
export function mermaidText(text: string): string {
  let out = '';
  // Matching control characters is this expression's whole purpose.
  // eslint-disable-next-line no-control-regex
  for (const ch of text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ')) {
    out += /^[A-Za-z0-9 _.,:/=+\-()'!?@]$/.test(ch) ? ch : `#${ch.codePointAt(0)!};`;
  }
  return out;
}
