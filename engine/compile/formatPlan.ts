import type { FieldChange } from './diffJobs.js';
import type { JobChange, Plan, WorkflowChange } from './planChanges.js';

export type PlanFormat = 'markdown' | 'json';
export const PLAN_FORMATS: readonly PlanFormat[] = ['markdown', 'json'];

const MARK = { added: '+', changed: '~', removed: '-', create: '+', update: '~', destroy: '-' } as const;

/** A plan as a pull-request comment or job summary (markdown), or for machines (json). */
export function formatPlan(plan: Plan, format: PlanFormat): string {
  if (format === 'json') return JSON.stringify({ ...plan, workflows: plan.workflows.map(({ workflow: _w, ...rest }) => rest) }) + '\n';
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
  );
  for (const w of plan.workflows) lines.push(...workflowSection(w), '');
  return lines.join('\n').replace(/\n+$/, '\n');
}

function workflowSection(w: WorkflowChange): string[] {
  const out = [`### ${MARK[w.change]} ${w.name} (${w.change}, \`${w.file}\`)`, ''];
  if (w.sections.length > 0) out.push(`Changed: ${w.sections.map((x) => `\`${x}\``).join(', ')}`, '');
  if (w.jobs.length === 0 && w.change === 'changed') out.push('No Nomad job changes.', '');
  for (const j of w.jobs) out.push(...jobLines(j));
  if (w.engineTasks.length > 0) {
    out.push(`- ~ tasks run by the engine or a pool: ${w.engineTasks.map((t) => `\`${t}\``).join(', ')} (no job of their own; the new definition is used by the next run)`);
  }
  if (w.generations.length > 0) {
    const tasks = w.generations.reduce((n, g) => n + g.length, 0);
    out.push('', `<details><summary>DAG: ${tasks} task${tasks === 1 ? '' : 's'} in ${w.generations.length} generation${w.generations.length === 1 ? '' : 's'}</summary>`, '', '```');
    w.generations.forEach((g, i) => out.push(`${i + 1}. ${g.join(', ')}`));
    out.push('```', '', '</details>');
  }
  return out;
}

function jobLines(j: JobChange): string[] {
  const what = j.kind === 'pool' ? `pool ${j.source}` : j.kind === 'compensate' ? `compensation of ${j.source}` : `task ${j.source}`;
  const out = [`- ${MARK[j.action]} \`${j.id}\` (${what}): ${j.action}`];
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
