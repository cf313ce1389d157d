import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { compileWorkflow } from '../../engine/compile/compileWorkflow.js';
import { validateText } from '../../engine/spec/validateWorkflows.js';

/** `spec.finally` tasks run on Nomad like any task: each one that runs a command is a job. */
describe('finally tasks compile', () => {
  it('to one parameterized batch job each, beside the main and onFailure tasks (Argo exit handler port)', async () => {
    const text = await readFile(new URL('../fixtures/argo/exit-handlers.yaml', import.meta.url), 'utf8');
    const r = validateText('exit-handlers.yaml', text);
    expect(r.diagnostics).toEqual([]);
    const jobs = compileWorkflow(r.workflow!);
    expect(jobs.map((j) => [j.id, j.kind, j.source])).toEqual([
      ['caravan-exit-handlers-intentional-fail', 'task', 'intentional-fail'],
      ['caravan-exit-handlers-send-email', 'task', 'send-email'],
      ['caravan-exit-handlers-celebrate', 'task', 'celebrate'],
      ['caravan-exit-handlers-cry', 'task', 'cry'],
    ]);
    const email = jobs[1]!.job;
    expect([email.Type, email.Meta['caravan.task'], email.ParameterizedJob !== undefined]).toEqual(['batch', 'send-email', true]);
  });
});
