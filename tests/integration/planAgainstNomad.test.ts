import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileWorkflow } from '../../engine/compile/compileWorkflow.js';
import { NomadClient } from '../../engine/nomad/NomadClient.js';
import { validateWorkflows } from '../../engine/spec/validateWorkflows.js';
import { cli } from '../harness/cli.js';
import { repoWith, workflow } from '../harness/gitRepo.js';
import { NomadAgent, requireNomad } from '../harness/nomadAgent.js';

const bin = requireNomad();

const BUILD = workflow('build', '  tasks:\n    - name: compile\n      run: make\n    - name: test\n      needs: [compile]\n      run: make test\n');
const CLEANUP = workflow('cleanup', '  tasks:\n    - name: sweep\n      run: ./sweep.sh\n');

describe.skipIf(bin === undefined)('caravan plan --nomad-addr on a live `nomad agent -dev`', () => {
  let agent: NomadAgent;
  let nomad: NomadClient;
  let repo: string;
  beforeAll(async () => {
    agent = await NomadAgent.start(bin!);
    nomad = new NomadClient({ address: agent.address });
    repo = await repoWith({ 'build.yaml': BUILD, 'cleanup.yaml': CLEANUP });
    // The base commit's jobs are what a controller registered on the cluster.
    const report = await validateWorkflows(['workflows'], repo);
    for (const j of report.files.flatMap((f) => compileWorkflow(f.workflow!))) await nomad.registerJob(j.job);
  }, 120_000);
  afterAll(async () => {
    await agent?.close();
    if (repo !== undefined) await rm(repo, { recursive: true, force: true });
  });

  it("shows each job's JobModifyIndex on the cluster: the index a controller applying the plan enforces", async () => {
    // One more register moves one index on, so the indexes shown cannot all be the same number by chance.
    const compile = (await nomad.readJob('caravan-build-compile'));
    await nomad.registerJob({ ...compile, Meta: { ...compile.Meta, note: 'touched' } });
    await writeFile(join(repo, 'workflows', 'build.yaml'), BUILD.replace('run: make\n', 'run: make -j4\n') + '    - name: package\n      needs: [test]\n      run: make dist\n');
    await rm(join(repo, 'workflows', 'cleanup.yaml'));

    const r = await cli(repo, 'plan', '--base', 'HEAD', '--nomad-addr', agent.address);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const index = async (id: string): Promise<number> => (await nomad.readJob(id)).JobModifyIndex;
    const compileIndex = await index('caravan-build-compile');
    const sweepIndex = await index('caravan-cleanup-sweep');
    expect(compileIndex).not.toBe(sweepIndex);
    expect(r.out).toContain(`Checked against the cluster at \`${agent.address}\``);
    expect(r.out).toContain(`- ~ \`caravan-build-compile\` (task compile): update (JobModifyIndex ${compileIndex})`);
    expect(r.out).toContain(`- - \`caravan-cleanup-sweep\` (task sweep): destroy (JobModifyIndex ${sweepIndex})`);
    expect(r.out).toContain('- + `caravan-build-package` (task package): create (JobModifyIndex 0: not on the cluster yet)');
    const json = JSON.parse((await cli(repo, 'plan', '--base', 'HEAD', '--nomad-addr', agent.address, '--format', 'json')).out) as { cluster: string; workflows: Array<{ jobs: Array<{ id: string; modifyIndex: number }> }> };
    expect(json.cluster).toBe(agent.address);
    expect(Object.fromEntries(json.workflows.flatMap((w) => w.jobs.map((j) => [j.id, j.modifyIndex])))).toEqual({
      'caravan-build-package': 0,
      'caravan-build-compile': compileIndex,
      'caravan-cleanup-sweep': sweepIndex,
    });
  });

  it('an unreachable cluster is an error naming it, not a plan without indexes', async () => {
    const r = await cli(repo, 'plan', '--base', 'HEAD', '--nomad-addr', 'http://127.0.0.1:1');
    expect(r.code).not.toBe(0);
    expect(r.err).toContain('127.0.0.1:1');
    expect(r.err).not.toContain('    at ');
  });
});
