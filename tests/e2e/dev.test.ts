import { describe, expect, it } from 'vitest';
import { rm } from 'node:fs/promises';
import { runBin } from '../harness/cli.js';
import { consulBinary } from '../harness/consulAgent.js';
import { nomadBinary } from '../harness/nomadAgent.js';
import { freePort, freePortRun, hasBinary } from '../harness/natsServer.js';

/** `caravan` in a process of its own with exactly this environment; `caravan dev` takes its time. */
function caravan(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; out: string; err: string }> {
  return runBin(args, { env, timeoutMs: 170_000 });
}

describe('caravan dev', () => {
  it('explains what is missing and how to get it', async () => {
    const r = await caravan(['dev', '--once'], { PATH: '/nonexistent', CARAVAN_BIN_DIR: '/nonexistent', HOME: '/nonexistent' });
    expect(r.code).toBe(69);
    expect(r.err).toBe([
      'caravan: caravan dev needs nats-server, consul, nomad, not found on PATH or in ~/.cache/caravan/bin:',
      '  nats-server: apt-get install nats-server (Debian/Ubuntu), or a release from the NATS project',
      '  consul: bash scripts/build-consul.sh (builds Consul v1.16.3, MPL-2.0, from its Go module into ~/.cache/caravan/bin)',
      '  nomad: bash scripts/build-nomad.sh (builds Nomad v1.6.3, MPL-2.0, from its Go module into ~/.cache/caravan/bin)',
      '',
    ].join('\n'));
  });

  const all = hasBinary('nats-server') && consulBinary() !== undefined && nomadBinary() !== undefined;
  it.skipIf(!all && process.env['CI'] !== 'true')('starts all three, wired together, and stops them', async () => {
    const [nats, consul, nomad] = [await freePort(), await freePortRun(4), await freePortRun(3)];
    const devDir = `/tmp/caravan-dev-test-${process.pid}`;
    const r = await caravan(['dev', '--once', '--nats-port', String(nats), '--consul-port', String(consul), '--nomad-port', String(nomad)], { ...process.env, CARAVAN_DEV_DIR: devDir });
    await rm(devDir, { recursive: true, force: true });
    expect(r.code).toBe(0);
    // Standard error holds JSON lines only (the record of a long-running process).
    const lines = r.err.trim().split('\n').map((l) => JSON.parse(l) as { level: number; msg: string; server?: string; url?: string; name: string });
    expect(lines.filter((l) => l.msg === 'dev server started').map((l) => [l.server, l.url, l.name])).toEqual([
      ['nats-server', `nats://127.0.0.1:${nats}`, 'caravan-dev'],
      ['consul', `http://127.0.0.1:${consul}`, 'caravan-dev'],
      ['nomad', `http://127.0.0.1:${nomad}`, 'caravan-dev'],
    ]);
    expect(lines.filter((l) => l.level >= 50)).toEqual([]);
    expect(r.out).toContain(`nats-server  nats://127.0.0.1:${nats} (JetStream`);
    expect(r.out).toContain(`consul       http://127.0.0.1:${consul} (UI at /ui)`);
    expect(r.out).toContain(`nomad        http://127.0.0.1:${nomad} (UI at /ui; raw_exec enabled)`);
    expect(r.out).toContain(`export NATS_URL=nats://127.0.0.1:${nats} NOMAD_ADDR=http://127.0.0.1:${nomad} CONSUL_HTTP_ADDR=127.0.0.1:${consul}`);
  }, 180_000);
});
