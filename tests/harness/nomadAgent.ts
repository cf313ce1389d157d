import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findServerBinary, stopProcess } from '../../engine/dev/serverProcess.js';
import { freePort, requireServerBinary } from './natsServer.js';
import { describeProcess, descendants, isAlive, processesMentioning } from './processTree.js';
import { answers, until } from './until.js';

/** `nomad` on PATH, or the one scripts/build-nomad.sh cached. */
export function nomadBinary(): string | undefined {
  return findServerBinary('nomad');
}

export function requireNomad(): string | undefined {
  return requireServerBinary('nomad', 'run scripts/build-nomad.sh');
}

/** A real `nomad agent -dev` (server and client, raw_exec on) on free ports with a temporary data dir. */
export class NomadAgent {
  private proc: ChildProcess | undefined;
  private client: ChildProcess | undefined;
  private orphans: number[] = [];
  private output = '';

  private constructor(readonly bin: string, readonly dir: string, readonly httpPort: number) {}

  /**
   * With `consul` (host:port), Nomad registers job services in that Consul agent; `extraHcl`
   * is appended to the agent's configuration.
   */
  static async start(bin: string, consul?: string, extraHcl = ''): Promise<NomadAgent> {
    const agent = await NomadAgent.launchDev(bin, `${consul !== undefined ? `consul {\n  address = "${consul}"\n}\n` : ''}${extraHcl}`);
    await agent.waitReady();
    return agent;
  }

  /** Writes a dev agent's configuration (free ports, a temporary data dir, `extraHcl`) and starts it. */
  private static async launchDev(bin: string, extraHcl: string): Promise<NomadAgent> {
    const dir = await mkdtemp(join(tmpdir(), 'caravan-nomad-'));
    const [http, rpc, serf] = [await freePort(), await freePort(), await freePort()];
    await writeFile(join(dir, 'agent.hcl'), `data_dir = "${dir}/data"\nbind_addr = "127.0.0.1"\nports {\n  http = ${http}\n  rpc  = ${rpc}\n  serf = ${serf}\n}\n${extraHcl}`);
    const agent = new NomadAgent(bin, dir, http);
    agent.proc = agent.spawnLogged(['agent', '-dev', `-config=${join(dir, 'agent.hcl')}`]);
    return agent;
  }

  /** Starts `nomad <args>` with its output kept for error messages. */
  private spawnLogged(args: string[]): ChildProcess {
    const p = spawn(this.bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (c: Buffer): void => { this.output += c.toString(); };
    p.stdout!.on('data', keep);
    p.stderr!.on('data', keep);
    return p;
  }

  /**
   * A server and a separate client agent (raw_exec on), with the server's heartbeat TTL cut
   * to a second, so that a killed client's node is down, and its allocations lost, within
   * seconds. The dev agent cannot show this: its client lives in the server's process.
   */
  static async startServerAndClient(bin: string): Promise<NomadAgent> {
    const dir = await mkdtemp(join(tmpdir(), 'caravan-nomad-'));
    const [http, rpc, serf, chttp, crpc, cserf] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
    await writeFile(join(dir, 'server.hcl'), `data_dir = "${dir}/server"\nbind_addr = "127.0.0.1"\ndisable_update_check = true\nadvertise {\n  http = "127.0.0.1"\n  rpc  = "127.0.0.1"\n  serf = "127.0.0.1"\n}\nports {\n  http = ${http}\n  rpc  = ${rpc}\n  serf = ${serf}\n}\nserver {\n  enabled = true\n  bootstrap_expect = 1\n  heartbeat_grace = "1s"\n  min_heartbeat_ttl = "1s"\n}\n`);
    await writeFile(join(dir, 'client.hcl'), `data_dir = "${dir}/client"\nbind_addr = "127.0.0.1"\ndisable_update_check = true\nadvertise {\n  http = "127.0.0.1"\n  rpc  = "127.0.0.1"\n  serf = "127.0.0.1"\n}\nports {\n  http = ${chttp}\n  rpc  = ${crpc}\n  serf = ${cserf}\n}\nclient {\n  enabled = true\n  servers = ["127.0.0.1:${rpc}"]\n}\nplugin "raw_exec" {\n  config {\n    enabled = true\n  }\n}\n`);
    const agent = new NomadAgent(bin, dir, http);
    agent.proc = agent.spawnLogged(['agent', `-config=${join(dir, 'server.hcl')}`]);
    agent.client = agent.spawnLogged(['agent', `-config=${join(dir, 'client.hcl')}`]);
    await agent.waitReady();
    return agent;
  }

  /** SIGKILLs the separate client agent: its node stops heartbeating, as when a machine dies. */
  async killClient(): Promise<void> {
    if (this.client?.pid !== undefined) this.orphans = await descendants(this.client.pid);
    this.client?.kill('SIGKILL');
  }

  get address(): string {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  /**
   * A dev agent with ACLs on, bootstrapped: `token` is the management token. Anonymous
   * requests are denied.
   */
  static async startWithAcl(bin: string): Promise<NomadAgent & { token: string }> {
    const agent = await NomadAgent.launchDev(bin, 'acl {\n  enabled = true\n}\n');
    let token = '';
    await until(() => `nomad's ACL bootstrap:\n${agent.output.slice(-3000)}`, () => answers(`${agent.address}/v1/acl/bootstrap`, (b) => {
      token = (b as { SecretID: string }).SecretID;
      return true;
    }, { method: 'POST' }), 60_000, 250);
    agent.aclToken = token;
    await agent.waitReady();
    return Object.assign(agent, { token });
  }

  private aclToken: string | undefined;

  private async waitReady(): Promise<void> {
    const headers: Record<string, string> = this.aclToken !== undefined ? { 'x-nomad-token': this.aclToken } : {};
    await until(() => `a ready nomad node:\n${this.output.slice(-3000)}`, () => {
      if (this.proc?.exitCode !== null && this.proc?.exitCode !== undefined) throw new Error(`nomad exited (${this.proc.exitCode}):\n${this.output.slice(-3000)}`);
      return answers(`${this.address}/v1/nodes`, (nodes) => (nodes as Array<{ Status: string }>).some((n) => n.Status === 'ready'), { headers });
    }, 60_000, 250);
  }

  /**
   * Stops the agent and everything it started, within a bounded time even on a busy machine:
   * Nomad leaves its per-allocation helpers (`nomad logmon`, `nomad executor`) and the tasks
   * running when the agent exits, by design (tasks survive an agent restart). So the process
   * tree is read first, the agent gets SIGINT and at most STOP_GRACE_MS before SIGKILL, and
   * then every process of the tree is killed and waited for. Throws, naming them, if any is
   * still alive: a leak must fail the suite, not linger until CI's end.
   */
  async close(): Promise<void> {
    const roots = [this.proc?.pid, this.client?.pid].filter((p): p is number => p !== undefined);
    const tree = new Set<number>(this.orphans);
    for (const r of roots) for (const p of await descendants(r)) tree.add(p);
    this.client?.kill('SIGKILL');
    if (this.proc !== undefined) await stopProcess(this.proc, 'SIGINT', STOP_GRACE_MS);
    // Helpers started while the agent stopped are re-parented to init: they are found by
    // the data directory on their command line instead.
    for (const p of await processesMentioning(this.dir)) tree.add(p);
    for (const pid of tree) killQuietly(pid);
    let alive = [...tree];
    // A process that outlives the wait is reported below, after the mounts and the data
    // directory are cleaned up, so the timeout itself is not the error.
    await until('the agent\'s processes to exit', () => (alive = alive.filter(isAlive)).length === 0, 5_000, 50).catch(() => undefined);
    // A client killed with SIGKILL leaves its allocations' secrets and private dirs mounted.
    const mounts = (await readFile('/proc/self/mounts', 'utf8').catch(() => '')).split('\n').map((l) => l.split(' ')[1] ?? '').filter((m) => m.startsWith(`${this.dir}/`));
    for (const m of mounts.reverse()) spawnSync('umount', ['-l', m]);
    await rm(this.dir, { recursive: true, force: true });
    if (alive.length > 0) throw new Error(`the Nomad test agent left processes running after close(): ${alive.map(describeProcess).join('; ')}`);
  }
}

/** How long a stopping agent may take before SIGKILL: well inside a 10 s teardown hook. */
const STOP_GRACE_MS = 3_000;

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Gone already: that is the goal.
  }
}
