import { describe, expect, it } from 'vitest';
import { ApiTokens } from '../../engine/api/ApiTokens.js';
import { LEADER_API_KEY } from '../../engine/api/controllerBackend.js';
import { ConsulRegistry } from '../../engine/consul/ConsulRegistry.js';
import { startController, type RunningController } from '../../engine/api/startController.js';
import { MemoryLogger } from '../../engine/run/Logger.js';
import { ConsulAgent, requireConsul } from '../harness/consulAgent.js';
import { tempRepo, workflow } from '../harness/gitRepo.js';
import { until } from '../harness/until.js';

/**
 * Two controllers on one real Consul: the leader advertises its API address in the registry,
 * and the follower answers a mutation with 503 naming that address (reads it still serves).
 */

const consulBin = requireConsul();
const TOKEN = 'leader-test-token-0123456789abcdef';
const quick = workflow('quick', '  tasks:\n    - { name: hello, run: "echo hello" }\n');

describe.skipIf(consulBin === undefined)('the API on a leader and a follower', () => {
  it('the follower refuses a run with 503 and the leader\'s advertised address; the leader starts it', async () => {
    const consul = await ConsulAgent.start(consulBin!);
    const started: RunningController[] = [];
    try {
      const open = async (advertiseUrl: string): Promise<RunningController> => {
        const ctl = await startController({
          repoDir: await tempRepo({ 'quick.yaml': quick }),
          registry: new ConsulRegistry({ address: consul.address }),
          leader: { ttlMs: 10_000, lockDelayMs: 0 },
          intervalMs: 3_600_000,
          listen: { host: '127.0.0.1', port: 0 },
          api: { tokens: new ApiTokens([{ name: 'ops', token: TOKEN, roles: ['operator'] }]), advertiseUrl },
          logger: new MemoryLogger(),
        });
        started.push(ctl);
        return ctl;
      };
      const leader = await open('http://leader.example:8080');
      await leader.controller.elected();
      const registry = new ConsulRegistry({ address: consul.address });
      await until('the leader to advertise its API', async () => (await registry.getKey(LEADER_API_KEY)) !== undefined);
      expect(JSON.parse((await registry.getKey(LEADER_API_KEY))!.value)).toMatchObject({ url: 'http://leader.example:8080' });

      const follower = await open('http://follower.example:8080');
      expect(follower.controller.status().role).toBe('follower');
      const post = (ctl: RunningController): Promise<Response> => fetch(`${ctl.server!.url}/api/v1/workflows/quick/runs`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: '{}' });
      const refused = await post(follower);
      expect(refused.status).toBe(503);
      expect(await refused.json()).toMatchObject({ error: { code: 'NOT_LEADER', details: { role: 'follower', leader: 'http://leader.example:8080' } } });
      expect((await fetch(`${follower.server!.url}/api/v1/runs`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200);
      expect((await post(leader)).status).toBe(201);
    } finally {
      for (const c of started.reverse()) await c.stop();
      await consul.close();
    }
  }, 120_000);
});
