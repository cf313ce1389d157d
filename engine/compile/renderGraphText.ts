import { buildDag } from '../graph/buildDag.js';
import { formatGenerations } from '../graph/formatGenerations.js';
import type { TaskSpec, Workflow } from '../spec/Workflow.js';
import { shownExpression, type PictureOptions } from './GraphPicture.js';

/**
 * A workflow's DAG for a terminal: one numbered line per generation (tasks on one line can
 * run together), for the main tasks and then the onFailure and finally tasks, followed by
 * what the generation lines only tag: each `when` and forEach expression, and the order
 * compensations run in. With a run, each task carries its status.
 */
export function renderGraphText(workflow: Workflow, options: PictureOptions = {}): string {
  const run = options.run;
  const annotate = run === undefined ? undefined : (name: string): string | undefined => {
    const m = run.get(name);
    if (m === undefined) return undefined;
    return ` (${m.status}${m.items !== undefined ? `, ${m.items} item${m.items === 1 ? '' : 's'}` : ''})`;
  };
  const spec = workflow.spec;
  const out = [`workflow ${workflow.metadata.name}`];
  const generations = (tasks: readonly TaskSpec[]): string => {
    const dag = buildDag(tasks.map((t) => ({ name: t.name, needs: t.needs ?? [] })));
    return formatGenerations(workflow, dag, '  ', annotate);
  };
  out.push(generations(spec.tasks));
  const compensable = spec.tasks.filter((t) => t.compensate !== undefined);
  if (compensable.length > 0) {
    // buildGraphPicture keeps the same order: the engine undoes the latest task first.
    const order = topological(spec.tasks).filter((n) => compensable.some((t) => t.name === n)).reverse();
    out.push('compensation (when the run fails, undone one at a time in this order):');
    out.push(`  ${order.map((n) => `${n}.compensate${annotate?.(`${n}.compensate`) ?? ''}`).join(' -> ')}`);
  }
  for (const [title, tasks] of [['onFailure', spec.onFailure ?? []], ['finally', spec.finally ?? []]] as const) {
    if (tasks.length === 0) continue;
    out.push(`${title}:`, generations(tasks));
  }
  const all = [...spec.tasks, ...(spec.onFailure ?? []), ...(spec.finally ?? [])];
  const details = all.flatMap((t) => [
    ...(t.forEach !== undefined && !Array.isArray(t.forEach) ? [`  ${t.name} for each: ${shownExpression(t.forEach)}`] : []),
    ...(t.when !== undefined ? [`  ${t.name} when: ${shownExpression(t.when)}`] : []),
  ]);
  if (details.length > 0) out.push('conditions and fan-out:', ...details);
  return out.join('\n') + '\n';
}

function topological(tasks: readonly TaskSpec[]): string[] {
  return buildDag(tasks.map((t) => ({ name: t.name, needs: t.needs ?? [] }))).generations.flat();
}
