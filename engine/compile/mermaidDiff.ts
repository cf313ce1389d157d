import type { TaskSpec, Workflow } from '../spec/Workflow.js';
import { canonicalJson } from './specHash.js';

/**
 * The one place the plan draws a workflow's DAG. It is deliberately small (nodes, edges and
 * three highlight classes) so that a fuller renderer can take its place with the same
 * signature.
 */

type Mark = 'added' | 'changed' | 'removed' | 'same';

const CLASSES = [
  'classDef added fill:#dafbe1,stroke:#1a7f37,color:#0d3117',
  'classDef changed fill:#fff8c5,stroke:#9a6700,color:#3b2300',
  'classDef removed fill:#ffebe9,stroke:#cf222e,color:#4c0b0a,stroke-dasharray:5 5',
];

function allTasks(w: Workflow | undefined): TaskSpec[] {
  if (w === undefined) return [];
  return [...w.spec.tasks, ...(w.spec.onFailure ?? []), ...(w.spec.finally ?? [])];
}

/**
 * Label text inside `["…"]`: task names are DNS labels by the schema, but the diagram is
 * posted where anyone may read it, so quotes and markup are neutralised all the same.
 */
function label(s: string): string {
  return s.replace(/[^A-Za-z0-9 _.-]/g, (c) => `#${c.charCodeAt(0)};`);
}

/**
 * A Mermaid flowchart (the source, without the ```mermaid fence) of a workflow's tasks and
 * their `needs`, across two versions: tasks only in `head` are `added`, only in `base`
 * `removed` (drawn dashed, with their old edges dotted), in both but different `changed`.
 * Either side may be missing (a workflow added or removed). Deterministic: nodes in the
 * head's order, then the removed ones in the base's order.
 */
export function mermaidDiff(base: Workflow | undefined, head: Workflow | undefined): string {
  const before = new Map(allTasks(base).map((t) => [t.name, t]));
  const after = new Map(allTasks(head).map((t) => [t.name, t]));
  const marks = new Map<string, Mark>();
  for (const [name, t] of after) {
    const old = before.get(name);
    marks.set(name, old === undefined ? 'added' : canonicalJson(old) === canonicalJson(t) ? 'same' : 'changed');
  }
  for (const name of before.keys()) if (!after.has(name)) marks.set(name, 'removed');

  // Mermaid ids are kept apart from the names: `end`, `graph` and friends are keywords.
  const ids = new Map([...marks.keys()].map((name, i) => [name, `t${i}`]));
  const lines = ['flowchart LR'];
  for (const [name, mark] of marks) lines.push(`  ${ids.get(name)!}["${label(name)}"]${mark === 'same' ? '' : `:::${mark}`}`);

  const edges = new Set<string>();
  for (const t of after.values()) {
    for (const need of t.needs ?? []) if (ids.has(need)) edges.add(`  ${ids.get(need)!} --> ${ids.get(t.name)!}`);
  }
  // Edges that only the base had: dotted, so the reader sees what a change disconnected.
  for (const t of before.values()) {
    for (const need of t.needs ?? []) {
      if (!ids.has(need)) continue;
      const solid = `  ${ids.get(need)!} --> ${ids.get(t.name)!}`;
      if (!edges.has(solid)) edges.add(`  ${ids.get(need)!} -.-> ${ids.get(t.name)!}`);
    }
  }
  lines.push(...edges);
  if ([...marks.values()].some((m) => m !== 'same')) lines.push(...CLASSES.map((c) => `  ${c}`));
  return lines.join('\n') + '\n';
}
