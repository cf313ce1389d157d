import type { Workflow } from '../spec/Workflow.js';
import { buildGraphPicture, type GraphPicture, type PictureEdge, type PictureNode } from './GraphPicture.js';
import { renderDot } from './renderDot.js';
import { renderMermaid } from './renderMermaid.js';

export type DiffPictureFormat = 'mermaid' | 'dot';
export const DIFF_PICTURE_FORMATS: readonly DiffPictureFormat[] = ['mermaid', 'dot'];

/** How many tasks (and compensations) each mark covers, for a line under the picture. */
export interface PictureDiffSummary {
  added: number;
  changed: number;
  removed: number;
  unchanged: number;
}

/**
 * Two versions of a workflow in one picture, for a pull-request plan: the DAG as it will be,
 * with tasks that are new marked `added`, tasks whose definition (or group) differs marked
 * `changed`, and tasks that are gone drawn where they were, marked `removed`, with their
 * old edges. Either version may be missing (a workflow added or deleted).
 */
export function diffGraphPicture(before: Workflow | undefined, after: Workflow | undefined): GraphPicture {
  if (before === undefined && after === undefined) throw new TypeError('diffGraphPicture needs at least one version of the workflow');
  const old = before !== undefined ? buildGraphPicture(before) : undefined;
  const now = after !== undefined ? buildGraphPicture(after) : undefined;
  const oldNodes = new Map((old?.nodes ?? []).map((n) => [n.key, n]));
  const newKeys = new Set((now?.nodes ?? []).map((n) => n.key));
  const nodes: PictureNode[] = (now?.nodes ?? []).map((n) => {
    const was = oldNodes.get(n.key);
    if (was === undefined) return { ...n, mark: 'added' as const };
    return was.fingerprint !== n.fingerprint ? { ...n, mark: 'changed' as const } : n;
  });
  const removed = (old?.nodes ?? []).filter((n) => !newKeys.has(n.key));
  nodes.push(...removed.map((n) => ({ ...n, mark: 'removed' as const })));
  const gone = new Set(removed.map((n) => n.key));
  const edges: PictureEdge[] = [...(now?.edges ?? [])];
  // A removed task keeps the edges it had, so a reviewer sees where it was.
  for (const e of old?.edges ?? []) if (gone.has(e.from) || gone.has(e.to)) edges.push(e);
  return { workflow: (after ?? before)!.metadata.name, nodes, edges };
}

/** Counts the marks of a diff picture. */
export function summarizePictureDiff(picture: GraphPicture): PictureDiffSummary {
  const count = (m: string): number => picture.nodes.filter((n) => n.mark === m).length;
  return { added: count('added'), changed: count('changed'), removed: count('removed'), unchanged: picture.nodes.filter((n) => n.mark === undefined).length };
}

/**
 * The diff picture as text for `caravan plan --format markdown` (a ```mermaid block's body)
 * or for Graphviz: classDefs `added`, `changed` and `removed` colour the tasks.
 */
export function renderWorkflowDiff(before: Workflow | undefined, after: Workflow | undefined, format: DiffPictureFormat = 'mermaid'): string {
  const picture = diffGraphPicture(before, after);
  return format === 'dot' ? renderDot(picture) : renderMermaid(picture);
}
