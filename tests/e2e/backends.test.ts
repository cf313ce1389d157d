import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConsulRegistry } from '../../engine/consul/ConsulRegistry.js';
import { openApp } from '../harness/openApp.js';
import { NomadClient } from '../../engine/nomad/NomadClient.js';
import { withEnv } from '../harness/cli.js';
import { ConsulAgent, requireConsul } from '../harness/consulAgent.js';
import { NomadAgent, requireNomad } from '../harness/nomadAgent.js';
import { NatsServer, requireServer } from '../harness/natsServer.js';
import { git, repoWith, workflow } from '../harness/gitRepo.js';
import { until } from '../harness/until.js';

const nomadBin = requireNomad();
const consulBin = requireConsul();
const natsOk = requireServer('nats-server', 'apt-get install -y nats-server');

const spec = [
  '  pools:',
  '    workers: { count: 2, concurrency: 2, resources: { cpu: 50, memoryMB: 64 } }',
  '  tasks:',
  '    - { name: prepare, run: "printf \'items=[%s]\\\\n\' $(seq 1 20 | paste -sd, -) > \\"$CARAVAN_OUTPUTS\\"", outputs: [items] }',
  '    - { name: work, needs: [prepare], pool: workers, forEach: "${{ fromJSON(tasks.prepare.outputs.items) }}", run: "echo item ${{ item }}" }',
  '    - { name: report, needs: [work], run: "echo all done" }',
  '    - { name: finish, needs: [report], run: "echo finished" }',
  '',
].join('\n');

describe.skipIf(nomadBin === undefined || consulBin === undefined || !natsOk)('end to end on Nomad, NATS and Consul', () => {
  let consul: ConsulAgent;
  let nomad: NomadAgent;
  let nats: NatsServer;
  let dir: string;
  beforeAll(async () => {
    consul = await ConsulAgent.start(consulBin!);
    [nomad, nats] = await Promise.all([NomadAgent.start(nomadBin!, consul.address), NatsServer.start()]);
    dir = await repoWith({ 'mixed.yaml': workflow('mixed', spec) });
  }, 180_000);
  afterAll(async () => {
    await Promise.all([nomad?.close(), nats?.close()]);
    await consul?.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('three dispatched tasks and a pool of two agents working 20 tasks run to success, recorded in Git, Nomad and Consul', async () => {
    await withEnv({ NOMAD_ADDR: nomad.address, NATS_URL: nats.url, CONSUL_HTTP_ADDR: consul.address }, async () => {
      const run = await openApp({ repoDir: dir, backend: 'nomad', bus: 'nats', registry: 'consul' }).start('mixed', {});
      const { state, auditCommit } = await run.done;
      expect([state.status, state.failureReason ?? '']).toEqual(['succeeded', '']);
      const work = state.groups.get('work')!;
      expect(work.instances).toHaveLength(20);
      expect(work.instances.every((k) => state.instances.get(k)!.status === 'succeeded')).toBe(true);

      // Git: the record on the audit branch.
      expect((await git(dir, 'rev-parse', 'caravan/runs')).trim()).toBe(auditCommit);
      // Nomad: job meta, one child per dispatched task, and the pool's two agents.
      const client = new NomadClient({ address: nomad.address });
      expect((await client.readJob('caravan-mixed-prepare')).Meta['caravan.workflow']).toBe('mixed');
      for (const t of ['prepare', 'report', 'finish']) expect((await client.dispatchedChildren(`caravan-mixed-${t}`)).length).toBe(1);
      const pool = await client.readJob('caravan-mixed-pool-workers');
      expect(pool.TaskGroups[0]!.Count).toBe(2);
      // Consul: run status in KV, and the pool's agents as a service with passing checks.
      const registry = new ConsulRegistry({ address: consul.address });
      expect(await registry.readRun('mixed', run.runId)).toMatchObject({ status: 'succeeded', auditCommit });
      let health: Array<{ status: string }> = [];
      await until(() => `two passing pool agents in Consul, got ${JSON.stringify(health)}`, async () => {
        health = await registry.poolHealth('caravan-mixed-pool-workers');
        return health.length === 2 && health.every((h) => h.status === 'passing');
      }, 60_000, 500);
      expect(health.map((h) => h.status)).toEqual(['passing', 'passing']);

      // caravan pool scale: three agents through Nomad.
      const { cli } = await import('../harness/cli.js');
      const scale = await cli(dir, 'pool', 'scale', 'mixed', 'workers', '3', '--wait', '90');
      expect([scale.code, scale.out]).toEqual([0, 'caravan-mixed-pool-workers: 2 → 3 agents\ncaravan-mixed-pool-workers: 3 agents running\n']);
      expect(scale.err).toMatch(/caravan: 3 of 3 agents running\n$/);
      expect((await client.readJob('caravan-mixed-pool-workers')).TaskGroups[0]!.Count).toBe(3);
      await until('three pool agents in Consul', async () => (await registry.poolHealth('caravan-mixed-pool-workers')).length >= 3, 60_000, 500);
      expect((await registry.poolHealth('caravan-mixed-pool-workers')).length).toBe(3);
    });
  }, 240_000);
});
