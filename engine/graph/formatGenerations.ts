import type { TaskSpec, Workflow } from '../spec/Workflow.js';
import type { TaskDag } from './buildDag.js';

/**
 * A compact text picture of a DAG, one line per generation: what can run together, and in
 * which order. Used by `caravan graph --format text` and in plans for reviewers. The DAG may
 * be of the main tasks or of the onFailure or finally tasks; `annotate` adds to a task's
 * label (a run's status).
 */
export function formatGenerations(workflow: Workflow, dag: TaskDag, indent = '  ', annotate?: (name: string) => string | undefined): string {
  const spec = workflow.spec;
  const byName = new Map([...spec.tasks, ...(spec.onFailure ?? []), ...(spec.finally ?? [])].map((t) => [t.name, t]));
  const width = String(dag.generations.length).length;
  return dag.generations
    .map((gen, i) => {
      const names = gen.map((n) => label(byName.get(n), n) + (annotate?.(n) ?? '')).join(', ');
      return `${indent}${String(i + 1).padStart(width)}. ${names}`;
    })
    .join('\n');
}

function label(task: TaskSpec | undefined, name: string): string {
  if (task === undefined) return name;
  const tags: string[] = [];
  if (task.forEach !== undefined) tags.push(Array.isArray(task.forEach) ? `forEach ${task.forEach.length}` : 'forEach');
  if (task.pool !== undefined) tags.push(`pool ${task.pool}`);
  if (task.approval !== undefined) tags.push('approval');
  if (task.workflow !== undefined) tags.push(`workflow ${task.workflow.name}`);
  if (task.http !== undefined) tags.push('http');
  if (task.when !== undefined) tags.push('when');
  if (task.compensate !== undefined) tags.push('compensate');
  return tags.length > 0 ? `${name} [${tags.join(', ')}]` : name;
}
