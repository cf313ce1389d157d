import { describe, expect, it } from 'vitest';
import { BackendHealth } from '../../engine/app/BackendHealth.js';
import { ConsulRegistry } from '../../engine/consul/ConsulRegistry.js';
import { MemoryLogger } from '../../engine/run/Logger.js';
import { withEnv } from '../harness/cli.js';
import { ConsulAgent, requireConsul } from '../harness/consulAgent.js';
import { freePort, NatsServer, requireServer } from '../harness/natsServer.js';

/**
 * What GET /ready says of the backends, against real servers: a real nats-server and Consul
 * agent answer (connected), a stopped nats-server and a port where no Nomad listens do not
 * (unreachable, logged once with the reason), and a backend not in use is `off`.
 */

const consulBin = requireConsul();
const natsAvailable = requireServer('nats-server', 'apt-get install -y nats-server');

describe.skipIf(consulBin === undefined || !natsAvailable)('backend health for /ready', () => {
  it('connected while the servers answer; unreachable (and logged once) when one stops; off when unused', async () => {
    const nats = await NatsServer.start();
    const consul = await ConsulAgent.start(consulBin!);
    const nomadPort = await freePort();
    try {
      await withEnv({ NATS_URL: nats.url, NOMAD_ADDR: `http://127.0.0.1:${nomadPort}` }, async () => {
        const logger = new MemoryLogger();
        const registry = new ConsulRegistry({ address: consul.address });
        const health = new BackendHealth({ registry, nats: true, nomad: false, logger, cacheMs: 0 });
        expect(await health.check()).toEqual({ ok: true, backends: { nats: 'connected', consul: 'connected', nomad: 'off' } });

        await nats.stop();
        expect(await health.check()).toEqual({ ok: false, backends: { nats: 'unreachable', consul: 'connected', nomad: 'off' } });
        await health.check();
        expect(logger.lines('warn').filter((l) => l.msg === 'backend unreachable: not ready').map((l) => l.fields['backend'])).toEqual(['nats']);

        await nats.restart();
        expect((await health.check()).backends.nats).toBe('connected');
        expect(logger.lines('info').some((l) => l.msg === 'backend reachable again' && l.fields['backend'] === 'nats')).toBe(true);

        const withNomad = new BackendHealth({ nats: false, nomad: true, logger, cacheMs: 0 });
        expect(await withNomad.check()).toEqual({ ok: false, backends: { nats: 'off', consul: 'off', nomad: 'unreachable' } });
      });
    } finally {
      await nats.close();
      await consul.close();
    }
  }, 120_000);

  it('one check serves the probes within the cache time', async () => {
    let reads = 0;
    const registry = { getKey: async () => { reads++; return undefined; } } as unknown as ConsulRegistry;
    const health = new BackendHealth({ registry, nats: false, nomad: false, logger: new MemoryLogger(), cacheMs: 60_000 });
    await Promise.all([health.check(), health.check(), health.check()]);
    await health.check();
    expect(reads).toBe(1);
  });
});
