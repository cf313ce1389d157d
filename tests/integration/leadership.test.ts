import { rm, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConsulRegistry } from '../../engine/consul/ConsulRegistry.js';
import { InMemoryRegistry } from '../../engine/local/InMemoryRegistry.js';
import { openApp } from '../harness/openApp.js';
import type { Registry } from '../../engine/run/Registry.js';
import type { RunEvent } from '../../engine/run/RunEvent.js';
import { ConsulAgent, requireConsul } from '../harness/consulAgent.js';
import { repoWith, workflow } from '../harness/gitRepo.js';
import { until } from '../harness/until.js';
import { gatePath } from '../harness/gatePath.js';

/**
 * A controller that loses the leader lock mid-run stops scheduling at once; the next leader
 * resumes the run from its record and finishes it without re-running what succeeded.
 */
async function loseAndHandOver(registry: Registry, revoke: () => Promise<void>): Promise<{ stoppedAfterMs: number }> {
  const gate = await gatePath();
  const dir = await repoWith({ 'led.yaml': workflow('led', `  tasks:\n    - { name: a, run: "echo a" }\n    - { name: b, needs: [a], run: "while [ ! -f ${gate} ]; do sleep 0.05; done" }\n    - { name: c, needs: [b], run: "echo c" }\n`) });
  try {
    const seen: RunEvent[] = [];
    const first = openApp({ repoDir: dir, registry, leader: { lockDelayMs: 1000 }, onEvent: (e) => seen.push(e) });
    const run = await first.start('led', {});
    await until('b to start', () => seen.some((e) => e.type === 'task.started' && e.task === 'b'));
    const revokedAt = Date.now();
    await revoke();
    await expect(run.done).rejects.toMatchObject({ code: 'LEADERSHIP_LOST', data: { runs: [run.runId] } });
    const stoppedAfterMs = Date.now() - revokedAt;
    const stoppedAt = seen.length;
    // b finishes now, while nobody leads: no engine applies it or schedules c.
    await writeFile(gate, '');
    const second = openApp({ repoDir: dir, registry, leader: { lockDelayMs: 1000 } });
    const resumed = await second.recover(run.runId);
    if (!('done' in resumed)) throw new Error('the run was over before the second leader took it');
    const { state } = await resumed.done;
    expect(state.status).toBe('succeeded');
    expect(seen.slice(stoppedAt)).toEqual([]);
    expect(seen.some((e) => e.type === 'task.queued' && e.task === 'c')).toBe(false);
    // a ran once; b's attempt was in flight under the old leader and ran again.
    expect(state.instances.get('a')!.attempts).toHaveLength(1);
    expect(state.instances.get('b')!.attempts.map((x) => x.status)).toEqual(['failed', 'succeeded']);
    return { stoppedAfterMs };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('leadership in memory (the embedded registry)', () => {
  it('a revoked leader stops scheduling; the next one resumes and finishes the run', async () => {
    const registry = new InMemoryRegistry();
    const holders: string[] = [];
    const spy: Registry = {
      registerController: (id) => registry.registerController(id),
      mirrorRun: (r) => registry.mirrorRun(r),
      readRun: (w, r) => registry.readRun(w, r),
      getKey: (k) => registry.getKey(k),
      putKey: (k, v, o) => registry.putKey(k, v, o),
      deleteKey: (k) => registry.deleteKey(k),
      listKeys: (p) => registry.listKeys(p),
      elect: (o) => {
        holders.push(o.holder);
        return registry.elect(o);
      },
    };
    await loseAndHandOver(spy, async () => registry.revoke(holders[0]!));
    expect(registry.controllerIds).toEqual([]);
  }, 60_000);

  it('--leader without a registry is a usage error', async () => {
    const dir = await repoWith({ 'led.yaml': workflow('led', '  tasks:\n    - { name: a, run: "echo a" }\n') });
    try {
      await expect(openApp({ repoDir: dir, leader: {} }).start('led', {})).rejects.toMatchObject({ code: 'USAGE' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

const consulBin = requireConsul();

describe.skipIf(consulBin === undefined)('leadership on a real Consul', () => {
  let agent: ConsulAgent;
  beforeAll(async () => {
    agent = await ConsulAgent.start(consulBin!);
  }, 90_000);
  afterAll(async () => {
    await agent?.close();
  });

  it('the leader session destroyed: the controller stops scheduling, and the next leader finishes the run', async () => {
    const registry = new ConsulRegistry({ address: agent.address });
    const base = `http://${agent.address}`;
    let controllersDuringRun: string[] = [];
    const { stoppedAfterMs } = await loseAndHandOver(registry, async () => {
      controllersDuringRun = Object.keys((await (await fetch(`${base}/v1/agent/services`)).json()) as Record<string, unknown>);
      const held = (await (await fetch(`${base}/v1/kv/caravan/leader`)).json()) as Array<{ Session: string }>;
      await fetch(`${base}/v1/session/destroy/${held[0]!.Session}`, { method: 'PUT' });
    });
    // The requirement: the old leader stops within one session TTL (15 s by default).
    expect(stoppedAfterMs).toBeLessThan(15_000);
    expect(controllersDuringRun.filter((id) => id.startsWith('caravan-controller-'))).toHaveLength(1);
    // Released by the second leader when its run was over.
    const lock = (await (await fetch(`${base}/v1/kv/caravan/leader`)).json()) as Array<{ Session?: string }>;
    expect(lock[0]!.Session).toBeUndefined();
  }, 90_000);
});
