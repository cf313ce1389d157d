import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { caravanBin, cli, runBin } from '../harness/cli.js';
import { git, tempRepo, workflow } from '../harness/gitRepo.js';
import { until } from '../harness/until.js';
import { consulBinary } from '../harness/consulAgent.js';
import { nomadBinary } from '../harness/nomadAgent.js';
import { freePort, freePortRun, hasBinary } from '../harness/natsServer.js';
import { describeProcess, descendants, isAlive, processesMentioning } from '../harness/processTree.js';

/**
 * `caravan dev` on free ports in a process of its own, with what it printed so far and the
 * servers it started (read before it is stopped: once their parent is gone they belong to init).
 */
async function startDev(): Promise<{ child: ReturnType<typeof spawn>; out: () => string; exited: Promise<number | null>; servers: () => Promise<number[]>; left: () => Promise<string[]>; cleanUp: () => Promise<void> }> {
  const [nats, consul, nomad] = [await freePort(), await freePortRun(4), await freePortRun(3)];
  const devDir = `/tmp/caravan-dev-signal-test-${process.pid}-${nats}`;
  const child = spawn(process.execPath, [caravanBin, 'dev', '--nats-port', String(nats), '--consul-port', String(consul), '--nomad-port', String(nomad)], { env: { ...process.env, CARAVAN_DEV_DIR: devDir }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', () => undefined);
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const seen = new Set<number>();
  return {
    child,
    out: () => out,
    exited,
    servers: async () => {
      for (const pid of await descendants(child.pid!)) seen.add(pid);
      return [...seen];
    },
    // Every server seen, and any named by its data directory or port (one started after the last look).
    left: async () => {
      const named = [...(await processesMentioning(devDir)), ...(await processesMentioning(`-http-port=${consul}`))];
      return [...new Set([...seen, ...named])].filter(isAlive).map(describeProcess);
    },
    // Whatever a failed test left behind is ended here, by the process ids this test saw.
    cleanUp: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      for (const pid of [...seen, ...(await processesMentioning(devDir)), ...(await processesMentioning(`-http-port=${consul}`))]) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
      await rm(devDir, { recursive: true, force: true });
    },
  };
}

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

  it.skipIf(!all && process.env['CI'] !== 'true')('--controller: a commit to main of the repository it is started in runs the pushed workflow on Nomad, with no other command', async () => {
    const [nats, consul, nomad, http] = [await freePort(), await freePortRun(4), await freePortRun(3), await freePort()];
    const devDir = `/tmp/caravan-dev-ctl-test-${process.pid}`;
    const dir = await tempRepo({ 'hello.yaml': workflow('hello', '  triggers:\n    - push: { paths: ["src/**"] }\n  tasks:\n    - { name: greet, run: "echo hello from nomad" }\n') });
    const child = spawn(process.execPath, [caravanBin, 'dev', '--controller', '--nats-port', String(nats), '--consul-port', String(consul), '--nomad-port', String(nomad), '--controller-port', String(http)], { cwd: dir, env: { ...process.env, CARAVAN_DEV_DIR: devDir }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      await until(() => `the controller to start\n${out}\n${err.slice(-2000)}`, () => out.includes(`controller   http://127.0.0.1:${http} watching branch main`), 150_000, 200);
      await mkdir(join(dir, 'src'));
      await writeFile(join(dir, 'src', 'a.txt'), 'change\n');
      await git(dir, 'add', '-A');
      await git(dir, 'commit', '-q', '-m', 'change the source');
      let runId = '';
      await until(() => `a pushed run to start\n${err.slice(-3000)}`, () => {
        const m = /"msg":"run started by a trigger"[^\n]*"run":"(\S+?)"/.exec(err) ?? /"run":"(\d{8}-\d{6}-[0-9a-f]{6})"[^\n]*"msg":"run started by a trigger"/.exec(err);
        if (m !== null) runId = m[1]!;
        return m !== null;
      }, 60_000, 200);
      await until(() => `run ${runId} to succeed on Nomad\n${err.slice(-3000)}`, async () => {
        const s = await cli(dir, 'status', runId, '--json');
        return s.code === 0 && (JSON.parse(s.out) as { status: string }).status === 'succeeded';
      }, 120_000, 500);
      expect((await cli(dir, 'logs', runId, 'greet')).out).toContain('hello from nomad');
    } finally {
      child.kill('SIGINT');
      expect(await exited).toBe(0);
      await rm(devDir, { recursive: true, force: true });
    }
  }, 400_000);

  describe.skipIf(!all && process.env['CI'] !== 'true')('stops all three servers, whatever signal ends it', () => {
    for (const [first, second, code] of [['SIGTERM', 'SIGTERM', 0], ['SIGHUP', 'SIGINT', 0]] as const) {
      it(`${first}, then ${second} while the servers stop: exit ${code}, no server left running`, async () => {
        const dev = await startDev();
        try {
          await until(() => `caravan dev to be ready\n${dev.out()}`, () => dev.out().includes('\nReady.'), 150_000, 200);
          const servers = await dev.servers();
          expect(servers.map((p) => describeProcess(p).split(' ')[1]!.split('/').at(-1)).sort()).toEqual(expect.arrayContaining(['consul', 'nats-server', 'nomad']));
          dev.child.kill(first);
          await until(() => `caravan dev to say it stops\n${dev.out()}`, () => dev.out().includes(`stopping the servers (${first})`), 10_000);
          // A second signal (an impatient Ctrl-C) must not end the process half-way through.
          dev.child.kill(second);
          expect(await dev.exited).toBe(code);
          expect(await dev.left()).toEqual([]);
          expect(dev.out()).toMatch(/stopped\.\n$/);
        } finally {
          await dev.cleanUp();
        }
      }, 200_000);
    }

    it('SIGTERM while the servers start: those already started are stopped, exit 143', async () => {
      const dev = await startDev();
      try {
        await until(() => `nats-server to be started\n${dev.out()}`, () => dev.out().includes('nats-server  nats://'), 60_000);
        const servers = await dev.servers();
        expect(servers.length).toBeGreaterThan(0);
        dev.child.kill('SIGTERM');
        expect(await dev.exited).toBe(143);
        expect(await dev.left()).toEqual([]);
        expect(dev.out()).not.toContain('Ready.');
      } finally {
        await dev.cleanUp();
      }
    }, 200_000);
  });
});
