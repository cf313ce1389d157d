import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { caravanBin, cli } from '../harness/cli.js';
import { ConsulAgent, requireConsul } from '../harness/consulAgent.js';
import { git, tempRepo, workflow } from '../harness/gitRepo.js';
import { freePort } from '../harness/natsServer.js';
import { until } from '../harness/until.js';

const consulBin = requireConsul();

interface Controller {
  child: ChildProcess;
  url: string;
  exited: Promise<number | null>;
  output: () => string;
}

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

async function role(c: Controller): Promise<string | undefined> {
  try {
    const body = (await (await fetch(`${c.url}/ready`)).json()) as { details?: { role?: string } };
    return body.details?.role;
  } catch {
    // Not listening (yet, or any more).
    return undefined;
  }
}

describe.skipIf(consulBin === undefined)('two controllers on one Consul', () => {
  let consul: ConsulAgent;
  beforeAll(async () => {
    consul = await ConsulAgent.start(consulBin!);
  }, 120_000);
  afterAll(async () => {
    await consul?.close();
  });

  async function controller(dir: string): Promise<Controller> {
    const port = await freePort();
    const child = spawn(process.execPath, [caravanBin, 'controller', '--repo', dir, '--interval', '1s', '--listen', `127.0.0.1:${port}`, '--registry', 'consul', '--leader-ttl', '10s'], { cwd: dir, env: { ...process.env, CONSUL_HTTP_ADDR: consul.address, CARAVAN_LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const c = { child, url: `http://127.0.0.1:${port}`, exited, output: () => out };
    await until(() => `controller on ${port} to answer /ready\n${out}`, async () => (await role(c)) !== undefined);
    return c;
  }

  it('only the leader syncs and runs; SIGKILLed mid-run, a follower takes over within the session TTL and finishes the run with no task run twice', async () => {
    const wf = workflow('ha', '  triggers:\n    - push: { paths: ["src/**"] }\n  tasks:\n    - { name: first, run: "echo first >> ran.log" }\n    - { name: gated, needs: [first], run: "echo start >> gated.log; while [ ! -f go ]; do sleep 0.05; done; echo end >> gated.log" }\n    - { name: last, needs: [gated], run: "echo last >> ran.log" }\n');
    const dir = await tempRepo({ 'ha.yaml': wf });
    await writeFile(join(dir, '.gitignore'), '*.log\ngo\n');
    const a = await controller(dir);
    await until('a to lead', async () => (await role(a)) === 'leader');
    const b = await controller(dir);
    expect(await role(b)).toBe('follower');
    // A follower is a healthy standby: Nomad's check on /ready passes.
    expect((await fetch(`${b.url}/ready`)).status).toBe(200);

    await mkdir(join(dir, 'src'));
    await writeFile(join(dir, 'src', 'main.c'), 'int main(void) { return 0; }\n');
    await git(dir, 'add', '-A');
    await git(dir, 'commit', '-q', '-m', 'source');
    await until('the pushed run to reach its gated task', async () => (await readFile(join(dir, 'gated.log'), 'utf8').catch(() => '')) === 'start\n');
    // The follower did nothing: no sync, no run.
    expect(b.output()).not.toMatch(/"msg":"(synced|run started by a trigger)"/);
    a.child.kill('SIGKILL');
    await a.exited;
    const killedAt = Date.now();
    await until(() => `b to take over\n${b.output()}`, async () => (await role(b)) === 'leader', 60_000);
    const tookOverMs = Date.now() - killedAt;
    console.log(`follower took over ${tookOverMs} ms after the leader was killed`);
    // Consul invalidates a session between one and two TTLs after its last renewal.
    expect(tookOverMs).toBeLessThan(2 * 10_000 + 10_000);
    await writeFile(join(dir, 'go'), '');
    const runId = /"run":"(\d{8}-\d{6}-[0-9a-f]{6})"/.exec(b.output())?.[1] ?? /"run":"(\d{8}-\d{6}-[0-9a-f]{6})"/.exec(a.output())![1]!;
    await until(() => `run ${runId} to finish under b\n${b.output()}`, async () => {
      const s = await cli(dir, 'status', runId, '--json');
      return s.code === 0 && (JSON.parse(s.out) as { status: string }).status === 'succeeded';
    }, 60_000);
    expect(await readFile(join(dir, 'gated.log'), 'utf8')).toBe('start\nend\n');
    expect((await readFile(join(dir, 'ran.log'), 'utf8')).split('\n').filter((l) => l !== '').sort()).toEqual(['first', 'last']);
    // Sync reports are mirrored to Consul KV: the last one, and each by commit.
    const kv = async (key: string): Promise<unknown> => {
      const r = await fetch(`http://${consul.address}/v1/kv/${key}?raw`);
      return r.status === 200 ? ((await r.json()) as unknown) : undefined;
    };
    const head = (await git(dir, 'rev-parse', 'HEAD')).trim();
    expect(await kv('caravan/sync-last')).toMatchObject({ commit: head, status: 'synced' });
    // Whoever recorded this commit's sync names its run (b, if a died before recording it: then as existed).
    expect(await kv(`caravan/sync/${head}`)).toMatchObject({ commit: head, runs: [{ workflow: 'ha', runId, trigger: 'push' }] });
    b.child.kill('SIGTERM');
    expect(await b.exited).toBe(0);
  }, 120_000);
});
