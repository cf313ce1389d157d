import type { TaskSpec, Workflow } from '../spec/Workflow.js';
import type { FieldChange } from './diffJobs.js';
import { renderWorkflowDiff } from './diffGraphPicture.js';
import type { JobChange, Plan, WorkflowChange } from './planChanges.js';
import { canonicalJson } from './specHash.js';

export type PlanFormat = 'markdown' | 'json';
export const PLAN_FORMATS: readonly PlanFormat[] = ['markdown', 'json'];

const MARK = { added: '+', changed: '~', removed: '-', create: '+', update: '~', destroy: '-' } as const;

/** A workflow's job list longer than this many lines is folded, so a big plan stays scannable. */
const FOLD_LINES = 20;

/** A plan as a pull-request comment or job summary (markdown), or for machines (json). */
export function formatPlan(plan: Plan, format: PlanFormat): string {
  if (format === 'json') return JSON.stringify({ ...plan, workflows: plan.workflows.map(({ workflow: _w, baseWorkflow: _b, ...rest }) => rest) }) + '\n';
  const s = plan.summary;
  const lines = [`## Caravan plan: \`${plan.base}\` → ${plan.head}`, ''];
  if (plan.workflows.length === 0) {
    lines.push(`No changes: ${s.unchanged} workflow${s.unchanged === 1 ? '' : 's'} unchanged.`);
    return lines.join('\n') + '\n';
  }
  lines.push(
    `Workflows: ${s.added} added, ${s.changed} changed, ${s.removed} removed, ${s.unchanged} unchanged. ` +
      `Nomad jobs: **${s.create} to create, ${s.update} to update, ${s.destroy} to destroy**.`,
    '',
    plan.cluster === undefined
      ? 'Not checked against a cluster: no JobModifyIndex shown (plan with `--nomad-addr` to read them).'
      : `Checked against the cluster at ${code(plan.cluster)}: each job shows the JobModifyIndex a controller applying this plan enforces (0: the job must not exist yet).`,
    '',
  );
  for (const w of plan.workflows) lines.push(...workflowSection(w, plan.cluster !== undefined), '');
  return lines.join('\n').replace(/\n+$/, '\n');
}

function workflowSection(w: WorkflowChange, checked: boolean): string[] {
  const out = [`### ${MARK[w.change]} ${w.name} (${w.change}, \`${w.file}\`)`, ''];
  if (w.sections.length > 0) out.push(`Changed: ${w.sections.map((x) => `\`${x}\``).join(', ')}`, '');
  if (w.jobs.length === 0 && w.change === 'changed') out.push('No Nomad job changes.', '');
  const jobs = w.jobs.flatMap((j) => jobLines(j, checked));
  if (jobs.length > FOLD_LINES) {
    const n = (a: JobChange['action']): number => w.jobs.filter((j) => j.action === a).length;
    out.push(`<details><summary>${w.jobs.length} Nomad jobs: ${n('create')} to create, ${n('update')} to update, ${n('destroy')} to destroy</summary>`, '', ...jobs, '', '</details>', '');
  } else {
    out.push(...jobs);
  }
  if (w.engineTasks.length > 0) {
    out.push(`- ~ tasks run by the engine or a pool: ${w.engineTasks.map((t) => `\`${t}\``).join(', ')} (no job of their own; the new definition is used by the next run)`);
  }
  const c = countTasks(w.baseWorkflow, w.workflow);
  const marks = [c.added > 0 ? `${c.added} added` : '', c.changed > 0 ? `${c.changed} changed` : '', c.removed > 0 ? `${c.removed} removed` : ''].filter((x) => x !== '');
  out.push(
    '',
    w.change === 'removed'
      ? `<details><summary>DAG: ${c.removed} task${c.removed === 1 ? '' : 's'}, all removed</summary>`
      : `<details><summary>DAG: ${c.tasks} task${c.tasks === 1 ? '' : 's'}${marks.length > 0 ? ` (${marks.join(', ')})` : ''}</summary>`,
    '',
    '```mermaid',
    // The same picture as `caravan graph`, with added, changed and removed tasks marked.
    renderWorkflowDiff(w.baseWorkflow, w.workflow, 'mermaid').replace(/\n$/, ''),
    '```',
    '',
    '</details>',
  );
  return out;
}

function tasksOf(w: Workflow | undefined): TaskSpec[] {
  return w === undefined ? [] : [...w.spec.tasks, ...(w.spec.onFailure ?? []), ...(w.spec.finally ?? [])];
}

/** Tasks in the new version, and how many were added, changed or removed: the diagram's caption. */
function countTasks(base: Workflow | undefined, head: Workflow | undefined): { tasks: number; added: number; changed: number; removed: number } {
  const before = new Map(tasksOf(base).map((t) => [t.name, canonicalJson(t)]));
  const after = new Map(tasksOf(head).map((t) => [t.name, canonicalJson(t)]));
  const added = [...after.keys()].filter((n) => !before.has(n)).length;
  const changed = [...after].filter(([n, t]) => before.has(n) && before.get(n) !== t).length;
  const removed = [...before.keys()].filter((n) => !after.has(n)).length;
  return { tasks: after.size, added, changed, removed };
}

function indexNote(j: JobChange, checked: boolean): string {
  if (!checked || j.modifyIndex === undefined) return '';
  if (j.modifyIndex === 0) return j.action === 'destroy' ? ' (not on the cluster)' : ' (JobModifyIndex 0: not on the cluster yet)';
  return ` (JobModifyIndex ${j.modifyIndex})`;
}

function jobLines(j: JobChange, checked: boolean): string[] {
  const what = j.kind === 'pool' ? `pool ${j.source}` : j.kind === 'compensate' ? `compensation of ${j.source}` : `task ${j.source}`;
  const out = [`- ${MARK[j.action]} \`${j.id}\` (${what}): ${j.action}${indexNote(j, checked)}`];
  for (const f of j.fields) {
    const multiLine = (f.before ?? '').includes('\n') || (f.after ?? '').includes('\n');
    if (!multiLine) {
      out.push(`  - ${fieldLine(f)}`);
      continue;
    }
    // Multi-line commands read best as a diff.
    out.push(`  - ${f.field}: ${f.kind}`, '', '    ```diff');
    for (const l of (f.before ?? '').replace(/\n$/, '').split('\n')) if (f.before !== undefined) out.push(`    - ${l}`);
    for (const l of (f.after ?? '').replace(/\n$/, '').split('\n')) if (f.after !== undefined) out.push(`    + ${l}`);
    out.push('    ```', '');
  }
  return out;
}

function code(s: string): string {
  return s.includes('`') ? `\`\` ${s} \`\`` : `\`${s}\``;
}

function fieldLine(f: FieldChange): string {
  if (f.before !== undefined && f.after !== undefined) return `${f.field}: ${code(f.before)} → ${code(f.after)}`;
  if (f.kind === 'added') return `${f.field}: added${f.after !== undefined ? ` ${code(f.after)}` : ''}`;
  if (f.kind === 'removed') return `${f.field}: removed${f.before !== undefined ? ` (was ${code(f.before)})` : ''}`;
  return `${f.field}: changed`;
}
