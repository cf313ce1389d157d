import { buildDag } from '../graph/buildDag.js';
import type { TaskSpec, Workflow } from '../spec/Workflow.js';

/** What `caravan graph --format` takes. */
export type GraphFormat = 'mermaid' | 'dot' | 'text';
export const GRAPH_FORMATS: readonly GraphFormat[] = ['mermaid', 'dot', 'text'];

/** How a task stands in a run, as a picture colours it (the run's own words, folded). */
export type PictureStatus = 'succeeded' | 'failed' | 'skipped' | 'cancelled' | 'running' | 'waiting' | 'pending' | 'reused';
/** What a pull-request plan marks: a task new, edited or gone in the second version. */
export type DiffMark = 'added' | 'changed' | 'removed';
export type NodeMark = PictureStatus | DiffMark;

/** The part of a workflow a task belongs to; onFailure and finally are drawn apart. */
export type PictureGroup = 'tasks' | 'onFailure' | 'finally';
export type NodeShape = 'task' | 'forEach' | 'approval' | 'workflow' | 'compensate';

export interface PictureNode {
  /** Unique in the picture: the task name, or `<task>.compensate`. Renderers derive safe ids from it. */
  key: string;
  /** First label line (unescaped: renderers escape). */
  title: string;
  group: PictureGroup;
  shape: NodeShape;
  /** Further label lines (unescaped): for each, pool, approval, when, status. */
  details: string[];
  mark?: NodeMark;
  /** Stable JSON of what defines the node, so that two versions can be compared. */
  fingerprint: string;
}

/** needs: upstream to downstream; compensate: a task to its undo step; undo: the order compensations run in. */
export interface PictureEdge {
  from: string;
  to: string;
  kind: 'needs' | 'compensate' | 'undo';
}

/** A drawable DAG: nodes in a deterministic order (group, then generation), and edges. */
export interface GraphPicture {
  workflow: string;
  nodes: PictureNode[];
  edges: PictureEdge[];
}

/** A task (or its compensation) as a run saw it: the run's status word and, after a fan-out, its item count. */
export interface RunMark {
  status: string;
  items?: number;
}

export interface PictureOptions {
  /** Keyed by task name, or `<task>.compensate` for its undo step. */
  run?: ReadonlyMap<string, RunMark>;
}

/** Longest label line: a `when` or forEach expression can be long, a picture should stay readable. */
const MAX_LINE = 72;

/** Folds the engine's task statuses into the colours a picture has; unknown words show as pending. */
export function pictureStatus(status: string): PictureStatus {
  switch (status) {
    case 'succeeded':
    case 'failed':
    case 'skipped':
    case 'cancelled':
    case 'running':
    case 'waiting':
    case 'pending':
    case 'reused':
      return status;
    case 'retrying':
      return 'running';
    default:
      return 'pending';
  }
}

/**
 * The DAG of a workflow as a picture model: main tasks, then onFailure and finally tasks,
 * each in generation order, plus one node per compensation with a dashed edge from its task
 * and the undo order (reverse topological, as the engine runs them). With `run`, nodes carry
 * their status. Pure: renderers (mermaid, dot) turn it into text.
 */
export function buildGraphPicture(workflow: Workflow, options: PictureOptions = {}): GraphPicture {
  const nodes: PictureNode[] = [];
  const edges: PictureEdge[] = [];
  const compensable: string[] = [];
  const groups: Array<[PictureGroup, TaskSpec[]]> = [['tasks', workflow.spec.tasks], ['onFailure', workflow.spec.onFailure ?? []], ['finally', workflow.spec.finally ?? []]];
  for (const [group, tasks] of groups) {
    for (const task of orderedTasks(tasks)) {
      nodes.push(taskNode(task, group, options.run?.get(task.name)));
      for (const need of task.needs ?? []) if (tasks.some((t) => t.name === need) && need !== task.name) edges.push({ from: need, to: task.name, kind: 'needs' });
      // Only main tasks are undone (the engine never compensates onFailure or finally tasks).
      if (group === 'tasks' && task.compensate !== undefined) compensable.push(task.name);
    }
  }
  for (const name of compensable) {
    const task = workflow.spec.tasks.find((t) => t.name === name)!;
    const key = `${name}.compensate`;
    const mark = options.run?.get(key);
    nodes.push({
      key,
      title: key,
      group: 'tasks',
      shape: 'compensate',
      details: ['undo on failure', ...statusLines(mark)],
      ...(mark !== undefined ? { mark: pictureStatus(mark.status) } : {}),
      fingerprint: stableJson(task.compensate),
    });
    edges.push({ from: name, to: key, kind: 'compensate' });
  }
  // Compensations run one at a time, latest task first: a chain from the last to the first.
  for (let i = compensable.length - 1; i > 0; i--) edges.push({ from: `${compensable[i]!}.compensate`, to: `${compensable[i - 1]!}.compensate`, kind: 'undo' });
  return { workflow: workflow.metadata.name, nodes, edges };
}

/** Tasks in generation order: the order the engine gives them (topoIndex), so the undo chain is the engine's. */
function orderedTasks(tasks: readonly TaskSpec[]): TaskSpec[] {
  const byName = new Map(tasks.map((t) => [t.name, t]));
  const dag = buildDag(tasks.map((t) => ({ name: t.name, needs: t.needs ?? [] })));
  // A cyclic group (invalid, but a picture may still be asked for) falls back to file order.
  if (dag.generations.length === 0) return [...tasks];
  return dag.generations.flat().map((n) => byName.get(n)!);
}

function taskNode(task: TaskSpec, group: PictureGroup, mark: RunMark | undefined): PictureNode {
  const details: string[] = [];
  let shape: NodeShape = 'task';
  if (task.forEach !== undefined) {
    shape = 'forEach';
    if (mark?.items !== undefined) details.push(`for each: x ${mark.items}`);
    else details.push(Array.isArray(task.forEach) ? `for each: x ${task.forEach.length}` : `for each: ${shownExpression(task.forEach)}`);
    if (task.parallelism !== undefined) details.push(`${task.parallelism} at a time`);
  }
  if (task.approval !== undefined) {
    shape = 'approval';
    details.push(`approval${task.approval.timeout !== undefined ? `, timeout ${task.approval.timeout}` : ''}`);
  }
  if (task.workflow !== undefined) {
    shape = 'workflow';
    details.push(`workflow: ${task.workflow.name}${task.workflow.wait === false ? ' (no wait)' : ''}`);
  }
  if (task.pool !== undefined) details.push(`pool: ${task.pool}`);
  // The method only: a URL may carry credentials or tokens, and pictures end up in PR comments.
  if (task.http !== undefined) details.push(`http ${task.http.method ?? 'GET'}`);
  if (task.sleep !== undefined) details.push(`sleep ${task.sleep}`);
  if (task.when !== undefined) details.push(`when: ${shownExpression(task.when)}`);
  details.push(...statusLines(mark));
  return {
    key: task.name,
    title: task.name,
    group,
    shape,
    details: details.map(clip),
    ...(mark !== undefined ? { mark: pictureStatus(mark.status) } : {}),
    fingerprint: stableJson({ group, task }),
  };
}

function statusLines(mark: RunMark | undefined): string[] {
  // Colour alone says nothing to a screen reader or a monochrome terminal: the word is in the label.
  return mark !== undefined ? [mark.status] : [];
}

/** `${{ x }}` shown as `x` on one line, clipped: the braces are noise in a picture. */
export function shownExpression(text: string): string {
  const m = /^\s*\$\{\{([\s\S]*)\}\}\s*$/.exec(text);
  return clip((m?.[1] ?? text).replace(/\s+/g, ' ').trim());
}

function clip(line: string): string {
  const chars = [...line];
  return chars.length > MAX_LINE ? `${chars.slice(0, MAX_LINE - 3).join('')}...` : line;
}

/** JSON with object keys sorted, so that equal specs give equal strings whatever their key order. */
export function stableJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (v !== null && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v)) ?? 'null';
}
