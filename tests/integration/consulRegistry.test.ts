import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConsulRegistry } from '../../engine/consul/ConsulRegistry.js';
import { ConsulAgent, requireConsul } from '../harness/consulAgent.js';
import { until } from '../harness/until.js';
import { gatePath } from '../harness/gatePath.js';
import { git, repoWith, workflow } from '../harness/gitRepo.js';

const bin = requireConsul();

describe.skipIf(bin === undefined)('the Consul registry against a real `consul agent -dev`', () => {
  let agent: ConsulAgent;
  let registry: ConsulRegistry;
  beforeAll(async () => {
    agent = await ConsulAgent.start(bin!);
    registry = new ConsulRegistry({ address: agent.address });
  }, 90_000);
  afterAll(async () => {
    await agent?.close();
  });

  it('registers caravan-controller with a TTL check that stays passing', async () => {
    const stop = await registry.registerController('controller-1', 10_000);
    await until('a passing controller', async () => (await registry.poolHealth('caravan-controller')).some((e) => e.status === 'passing'));
    await stop();
    await until('the controller gone', async () => (await registry.poolHealth('caravan-controller')).length === 0);
  });

  it('mirrors run status to KV caravan/runs/<workflow>/<run-id>', async () => {
    const record = { workflow: 'report', runId: '20261122-000000-abcdef', status: 'succeeded', tasks: { succeeded: 3 }, startedAt: '2026-11-22T00:00:00.000Z', finishedAt: '2026-11-22T00:00:01.000Z', auditCommit: 'a'.repeat(40) };
    await registry.mirrorRun(record);
    expect(await registry.readRun('report', record.runId)).toEqual(record);
    const raw = (await (await fetch(`http://${agent.address}/v1/kv/caravan/runs/report/${record.runId}?raw`)).json()) as unknown;
    expect(raw).toEqual(record);
  });

  it('a run with --registry consul leaves its final status, with the audit commit, in KV', async () => {
    const { openApp } = await import('../harness/openApp.js');
    const dir = await repoWith({ 'mirrored.yaml': workflow('mirrored', '  tasks:\n    - { name: a, agent: noop }\n    - { name: b, needs: [a], agent: noop }\n') });
    const saved = process.env['CONSUL_HTTP_ADDR'];
    process.env['CONSUL_HTTP_ADDR'] = agent.address;
    try {
      const run = await openApp({ repoDir: dir, registry: 'consul' }).start('mirrored', {});
      const { auditCommit } = await run.done;
      expect(await registry.readRun('mirrored', run.runId)).toMatchObject({ workflow: 'mirrored', runId: run.runId, status: 'succeeded', tasks: { succeeded: 2 }, auditCommit });
      expect((await git(dir, 'rev-parse', 'caravan/runs')).trim()).toBe(auditCommit);
    } finally {
      if (saved === undefined) delete process.env['CONSUL_HTTP_ADDR'];
      else process.env['CONSUL_HTTP_ADDR'] = saved;
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a live run\'s status in KV follows its checkpoints, each with its commit on caravan/runs', async () => {
    const { writeFile } = await import('node:fs/promises');
    const { openApp } = await import('../harness/openApp.js');
    const gate = await gatePath();
    const dir = await repoWith({ 'live.yaml': workflow('live', `  tasks:\n    - { name: a, agent: noop }\n    - { name: b, needs: [a], run: "while [ ! -f ${gate} ]; do sleep 0.05; done" }\n`) });
    const saved = process.env['CONSUL_HTTP_ADDR'];
    process.env['CONSUL_HTTP_ADDR'] = agent.address;
    try {
      const run = await openApp({ repoDir: dir, registry: 'consul', checkpointEveryMs: 100 }).start('live', {});
      // While b waits: a checkpoint has a done and b running, and KV says so.
      let live: Awaited<ReturnType<typeof registry.readRun>>;
      await until('a checkpoint with a done', async () => {
        live = await registry.readRun('live', run.runId);
        return live?.tasks['succeeded'] === 1 && live.auditCommit !== undefined;
      });
      expect(live!).toMatchObject({ status: 'running', tasks: { succeeded: 1, running: 1 } });
      expect((await git(dir, 'cat-file', '-t', live!.auditCommit!)).trim()).toBe('commit');
      await writeFile(gate, '');
      const { auditCommit } = await run.done;
      expect(await registry.readRun('live', run.runId)).toMatchObject({ status: 'succeeded', tasks: { succeeded: 2 }, auditCommit });
    } finally {
      if (saved === undefined) delete process.env['CONSUL_HTTP_ADDR'];
      else process.env['CONSUL_HTTP_ADDR'] = saved;
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('elects one leader; a lost session stops the old leader within one TTL, and the other takes over', async () => {
    const ttl = 10_000; // Consul's minimum session TTL
    const events: string[] = [];
    let lostAt = 0;
    const stopA = registry.elect({ holder: 'a', ttlMs: ttl, lockDelayMs: 1000, onElected: () => events.push('a elected'), onLost: (why) => { lostAt = Date.now(); events.push(`a lost: ${why}`); } });
    await until('a to lead', () => events.includes('a elected'));
    const stopB = registry.elect({ holder: 'b', ttlMs: ttl, lockDelayMs: 1000, onElected: () => events.push('b elected'), onLost: () => events.push('b lost') });
    const held = (await (await fetch(`http://${agent.address}/v1/kv/caravan/leader`)).json()) as Array<{ Session: string }>;
    // Kill a's session behind its back, as an expired TTL or a partition would.
    const destroyedAt = Date.now();
    await fetch(`http://${agent.address}/v1/session/destroy/${held[0]!.Session}`, { method: 'PUT' });
    await until('a to notice', () => lostAt > 0);
    // The requirement itself: the old leader stops within one TTL of losing its session.
    expect(lostAt - destroyedAt).toBeLessThan(ttl);
    await stopA();
    await until('b to lead', () => events.includes('b elected'));
    // 'b elected' usually comes a lock delay after 'a lost', but can come first by a few ms
    // (an acquire in flight when the session dies; see the registry contract).
    expect([...events].sort()).toEqual(['a elected', expect.stringMatching(/^a lost: (leader session lost|the leader lock was released or taken over)/), 'b elected']);
    await stopB();
  }, 60_000);
});
