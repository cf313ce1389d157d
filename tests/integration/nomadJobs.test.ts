import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileWorkflow } from '../../engine/compile/compileWorkflow.js';
import type { CompiledJob } from '../../engine/compile/NomadJob.js';
import { NomadApiError, NomadClient } from '../../engine/nomad/NomadClient.js';
import { validateWorkflows } from '../../engine/spec/validateWorkflows.js';
import { NomadAgent, requireNomad } from '../harness/nomadAgent.js';

const bin = requireNomad();

describe.skipIf(bin === undefined)('compiled jobs on a live `nomad agent -dev`', () => {
  let agent: NomadAgent;
  let nomad: NomadClient;
  let jobs: CompiledJob[];
  beforeAll(async () => {
    agent = await NomadAgent.start(bin!);
    nomad = new NomadClient({ address: agent.address });
    const report = await validateWorkflows(['workflows'], fileURLToPath(new URL('../../', import.meta.url)));
    jobs = report.files.flatMap((f) => compileWorkflow(f.workflow!, { gitCommit: '0123456789abcdef0123456789abcdef01234567' }));
  }, 120_000);
  afterAll(async () => {
    await agent?.close();
  });

  it('every example job passes /v1/validate/job', async () => {
    for (const j of jobs) {
      const r = await nomad.validateJob(j.job);
      expect([j.id, r.ValidationErrors ?? [], r.Error]).toEqual([j.id, [], '']);
    }
  });

  it('registers and plans cleanly, with its meta readable back', async () => {
    for (const j of jobs) {
      const reg = await nomad.registerJob(j.job);
      expect(reg.EvalID === '' || /^[0-9a-f-]{36}$/.test(reg.EvalID)).toBe(true);
      const plan = await nomad.planJob(j.job);
      expect(plan.Diff?.Type).toBe('None');
      const back = await nomad.readJob(j.id);
      expect(back.Meta).toEqual(j.job.Meta);
      expect(back.Type).toBe(j.job.Type);
      if (j.kind === 'task') expect(back.ParameterizedJob?.MetaRequired).toEqual(['caravan_run', 'caravan_attempt']);
    }
  });

  it('check-and-set registration refuses a stale index', async () => {
    const j = jobs[0]!;
    const current = await nomad.readJob(j.id);
    const err = await nomad.registerJob(j.job, current.JobModifyIndex - 1).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NomadApiError);
    expect((err as NomadApiError).status).toBeGreaterThanOrEqual(400);
    await nomad.registerJob(j.job, current.JobModifyIndex);
  });
});
