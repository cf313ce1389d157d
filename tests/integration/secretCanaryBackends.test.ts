import { jetstreamManager } from '@nats-io/jetstream';
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectJetStream } from '../../engine/nats/connectJetStream.js';
import { natsConnectionOptions } from '../../engine/nats/natsConnectionOptions.js';
import { cli, withEnv } from '../harness/cli.js';
import { ConsulAgent, requireConsul } from '../harness/consulAgent.js';
import { git, repoWith, workflow } from '../harness/gitRepo.js';
import { NatsServer, requireServer } from '../harness/natsServer.js';

/**
 * The secret canary where the real backends keep things: every message of the NATS event
 * stream and every Consul KV value, after a run on the NATS bus mirrored to Consul whose tasks
 * echo a secret param and an env secret, and fail quoting them.
 */
const PARAM = 'prmZ7Rk2Wq9Lx4Tc';
const ENV = 'envH3Np8Vd1Ys6Jb';
const consul = requireConsul();
const natsOk = requireServer('nats-server', 'apt-get install -y nats-server');

describe.skipIf(consul === undefined || !natsOk)('secret canary on NATS JetStream and Consul KV', () => {
  let nats: NatsServer;
  let agent: ConsulAgent;
  beforeAll(async () => {
    nats = await NatsServer.start();
    agent = await ConsulAgent.start(consul!);
  }, 90_000);
  afterAll(async () => {
    await Promise.all([nats?.stop(), agent?.close()]);
  });

  it('no message of the event stream and no KV value holds a secret', async () => {
    const dir = await repoWith({ 'canary.yaml': workflow('canary', [
      '  params:',
      '    token: { type: string, secret: true }',
      '  tasks:',
      '    - name: talk',
      '      run: \'echo "p ${{ params.token }} e $S"; echo "p ${{ params.token }} e $S" >&2; $S\'',
      '      env: { S: { secret: { path: app/db, key: password } } }',
      '',
    ].join('\n')) });
    try {
      const r = await withEnv({ NATS_URL: nats.url, CONSUL_HTTP_ADDR: agent.address, CARAVAN_SECRET_APP_DB_PASSWORD: ENV }, () => cli(dir, 'run', 'canary', '--bus', 'nats', '--registry', 'consul', '--param', `token=${PARAM}`, '--json'));
      expect(r.code).toBe(1);
      // The routes were taken: the task ran, logged and failed on the env secret as a command.
      expect(r.out).toContain('"type":"task.log"');
      expect(r.out).toMatch(/"type":"task.failed".*command not found/);
      const stored: string[] = [r.out, r.err, await git(dir, 'log', '-p', 'caravan/runs')];
      const js = await connectJetStream({ connection: await natsConnectionOptions({}, [nats.url]) });
      try {
        const jsm = await jetstreamManager(js.connection);
        const info = await jsm.streams.info('CARAVAN_EVENTS');
        expect(info.state.messages).toBeGreaterThan(5);
        for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
          const m = await jsm.streams.getMessage('CARAVAN_EVENTS', { seq });
          if (m !== null) stored.push(m.string());
        }
      } finally {
        await js.close();
      }
      const kv = (await (await fetch(`http://${agent.address}/v1/kv/?recurse`)).json()) as Array<{ Key: string; Value: string | null }>;
      expect(kv.some((e) => e.Key.startsWith('caravan/runs/canary/'))).toBe(true);
      for (const e of kv) stored.push(e.Key, Buffer.from(e.Value ?? '', 'base64').toString('utf8'));
      const all = stored.join('\n');
      expect(all).toContain('***');
      expect([all.includes(PARAM), all.includes(ENV)]).toEqual([false, false]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
