import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONTROLLER_JOB_ID, controllerJob, readControllerDeploy } from '../../engine/compile/controllerJob.js';
import { NomadClient } from '../../engine/nomad/NomadClient.js';
import { ConsulAgent, requireConsul } from '../harness/consulAgent.js';
import { tempRepo, workflow } from '../harness/gitRepo.js';
import { NatsServer } from '../harness/natsServer.js';
import { NomadAgent, requireNomad } from '../harness/nomadAgent.js';
import { until } from '../harness/until.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const nomadBin = requireNomad();
const consulBin = requireConsul();

describe('the controller\'s own Nomad job (deploy/controller.yaml)', () => {
  it('the checked-in settings validate, and a bad field is reported with its line', async () => {
    const ok = readControllerDeploy('deploy/controller.yaml', await readFile(`${root}deploy/controller.yaml`));
    expect(ok.ok).toBe(true);
    const bad = readControllerDeploy('deploy/controller.yaml', new TextEncoder().encode('repo: /srv/x\ncount: 9\n'));
    expect(bad).toMatchObject({ ok: false, diagnostics: [{ file: 'deploy/controller.yaml', line: 2, message: expect.stringMatching(/count/) }] });
  });

  describe.skipIf(nomadBin === undefined || consulBin === undefined)('on a live Nomad', () => {
    let nomad: NomadAgent;
    let consul: ConsulAgent;
    let nats: NatsServer;
    beforeAll(async () => {
      [nomad, consul, nats] = await Promise.all([NomadAgent.start(nomadBin!), ConsulAgent.start(consulBin!), NatsServer.start()]);
    }, 120_000);
    afterAll(async () => {
      await Promise.all([nomad?.close(), consul?.close(), nats?.close()]);
    });

    it('runs Caravan on the Nomad it manages: the controller allocation serves /health and /ready, leads, and stops cleanly on SIGTERM', async () => {
      const dir = await tempRepo({ 'hello.yaml': workflow('hello', '  tasks:\n    - { name: greet, run: "echo hi" }\n') });
      const job = controllerJob({
        repo: dir,
        command: [process.execPath, `${root}bin/caravan.js`],
        count: 1,
        serviceProvider: 'nomad',
        env: { NOMAD_ADDR: `http://${nomad.address.replace(/^https?:\/\//, '')}`, CONSUL_HTTP_ADDR: consul.address, NATS_URL: nats.url },
        args: ['--interval', '2s'],
      });
      const client = new NomadClient({ address: nomad.address });
      expect((await client.validateJob(job)).Error ?? '').toBe('');
      await client.registerJob(job);
      let port = 0;
      await until('the controller allocation to run and publish its port', async () => {
        const allocs = await client.jobAllocations(CONTROLLER_JOB_ID);
        const running = allocs.find((a) => a.ClientStatus === 'running');
        if (running === undefined) return false;
        const full = (await client.allocation(running.ID)) as unknown as { AllocatedResources?: { Shared?: { Ports?: Array<{ Label: string; Value: number }> } } };
        port = full.AllocatedResources?.Shared?.Ports?.find((p) => p.Label === 'http')?.Value ?? 0;
        return port > 0;
      }, 90_000, 250);
      await until('the controller to answer /health', async () => (await fetch(`http://127.0.0.1:${port}/health`).catch(() => undefined))?.status === 200, 60_000, 250);
      await until('the controller to lead and sync', async () => {
        const r = await fetch(`http://127.0.0.1:${port}/ready`).catch(() => undefined);
        if (r === undefined || r.status !== 200) return false;
        const body = (await r.json()) as { details: { role: string; lastSync: { status: string } | null } };
        return body.details.role === 'leader' && body.details.lastSync?.status === 'synced';
      }, 60_000, 250);
      await client.stopJob(CONTROLLER_JOB_ID);
      await until('the allocation to stop', async () => (await client.jobAllocations(CONTROLLER_JOB_ID)).every((a) => a.ClientStatus !== 'running'), 60_000, 250);
      const [alloc] = await client.jobAllocations(CONTROLLER_JOB_ID);
      const events = alloc!.TaskStates?.['controller']?.Events ?? [];
      // Nomad's SIGTERM ended it: it exited 0, not killed after the timeout.
      expect(events.map((e) => e.Type)).not.toContain('Killing timeout exceeded');
      expect(events.find((e) => e.Type === 'Terminated')?.ExitCode ?? 0).toBe(0);
    }, 240_000);
  });
});
