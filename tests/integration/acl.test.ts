import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConsulRegistry } from '../../engine/consul/ConsulRegistry.js';
import type { NomadJob } from '../../engine/compile/NomadJob.js';
import { NomadClient } from '../../engine/nomad/NomadClient.js';
import { withEnv } from '../harness/cli.js';
import { ConsulAgent, requireConsul } from '../harness/consulAgent.js';
import { NomadAgent, requireNomad } from '../harness/nomadAgent.js';

const consulBin = requireConsul();
const nomadBin = requireNomad();

const job = { ID: 'acl-probe', Name: 'acl-probe', Type: 'batch', Datacenters: ['*'], TaskGroups: [{ Name: 'g', Count: 1, Tasks: [{ Name: 't', Driver: 'raw_exec', Config: { command: '/bin/true' }, Resources: { CPU: 50, MemoryMB: 32 } }] }] } as unknown as NomadJob;

describe.skipIf(consulBin === undefined)('Consul with ACLs on (default deny): the token comes from CONSUL_HTTP_TOKEN', () => {
  const management = '5e2b1f0c-7a1d-4c39-9d7e-3a2f6b8c1d40';
  let agent: ConsulAgent;
  beforeAll(async () => {
    agent = await ConsulAgent.start(consulBin!, `acl { enabled = true\n default_policy = "deny"\n tokens { initial_management = "${management}" } }`);
  }, 90_000);
  afterAll(async () => {
    await agent?.close();
  });

  it('works with the token from the environment and is refused without it, never echoing the token', async () => {
    const rec = { workflow: 'wf', runId: 'acl-1', status: 'running', tasks: {}, startedAt: '2026-11-22T00:00:00.000Z' };
    await withEnv({ CONSUL_HTTP_ADDR: agent.address, CONSUL_HTTP_TOKEN: management }, async () => {
      const r = new ConsulRegistry();
      await r.mirrorRun(rec);
      expect(await r.readRun('wf', 'acl-1')).toEqual(rec);
    });
    await withEnv({ CONSUL_HTTP_ADDR: agent.address, CONSUL_HTTP_TOKEN: undefined }, async () => {
      const err = await new ConsulRegistry().mirrorRun(rec).then(() => undefined, (e: unknown) => e as Error);
      expect(err?.message).toMatch(/permission denied|forbidden|403/i);
      expect(err?.message).not.toContain(management);
    });
  });
});

describe.skipIf(nomadBin === undefined)('Nomad with ACLs on: the token comes from NOMAD_TOKEN', () => {
  let agent: NomadAgent & { token: string };
  beforeAll(async () => {
    agent = await NomadAgent.startWithAcl(nomadBin!);
  }, 120_000);
  afterAll(async () => {
    await agent?.close();
  });

  it('registers with the token from the environment; without it the answer is 403, and the token is never in an error', async () => {
    await withEnv({ NOMAD_ADDR: agent.address, NOMAD_TOKEN: agent.token }, async () => {
      const reg = await new NomadClient().registerJob(job);
      expect(reg.JobModifyIndex).toBeGreaterThan(0);
    });
    await withEnv({ NOMAD_ADDR: agent.address, NOMAD_TOKEN: 'a3f1c2d4-0000-4000-8000-00000000dead' }, async () => {
      const err = await new NomadClient().readJob('acl-probe').then(() => undefined, (e: unknown) => e as Error & { code?: string; status?: number });
      expect([err?.code, err?.status]).toEqual(['NOMAD_API', 403]);
      expect(err?.message).not.toContain('a3f1c2d4');
    });
    await withEnv({ NOMAD_ADDR: agent.address, NOMAD_TOKEN: undefined }, async () => {
      await expect(new NomadClient().readJob('acl-probe')).rejects.toMatchObject({ code: 'NOMAD_API', status: 403 });
    });
  });
});
