import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findServerBinary } from '../../engine/local/serverProcess.js';
import { freePort } from './natsServer.js';

/** `nomad` on PATH, or the one scripts/build-nomad.sh cached. */
export function nomadBinary(): string | undefined {
  return findServerBinary('nomad');
}

export function requireNomad(): string | undefined {
  const bin = nomadBinary();
  if (bin !== undefined) return bin;
  if (process.env['CI'] === 'true') throw new Error('nomad is not installed but CI=true: run scripts/build-nomad.sh');
  process.stderr.write('[caravan tests] nomad not found; skipping its integration tests (scripts/build-nomad.sh)\n');
  return undefined;
}

/** A real `nomad agent -dev` (server and client, raw_exec on) on free ports with a temporary data dir. */
export class NomadAgent {
  private proc: ChildProcess | undefined;
  private output = '';

  private constructor(readonly bin: string, readonly dir: string, readonly httpPort: number) {}

  /**
   * With `consul` (host:port), Nomad registers job services in that Consul agent; `extraHcl`
   * is appended to the agent's configuration.
   */
  static async start(bin: string, consul?: string, extraHcl = ''): Promise<NomadAgent> {
    const dir = await mkdtemp(join(tmpdir(), 'caravan-nomad-'));
    const [http, rpc, serf] = [await freePort(), await freePort(), await freePort()];
    await writeFile(join(dir, 'agent.hcl'), `data_dir = "${dir}/data"\nbind_addr = "127.0.0.1"\nports {\n  http = ${http}\n  rpc  = ${rpc}\n  serf = ${serf}\n}\n${consul !== undefined ? `consul {\n  address = "${consul}"\n}\n` : ''}${extraHcl}`);
    const agent = new NomadAgent(bin, dir, http);
    agent.proc = spawn(bin, ['agent', '-dev', `-config=${join(dir, 'agent.hcl')}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    agent.proc.stdout!.on('data', (c: Buffer) => { agent.output += c.toString(); });
    agent.proc.stderr!.on('data', (c: Buffer) => { agent.output += c.toString(); });
    await agent.waitReady();
    return agent;
  }

  get address(): string {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  private async waitReady(): Promise<void> {
    const end = Date.now() + 60_000;
    while (Date.now() < end) {
      if (this.proc?.exitCode !== null && this.proc?.exitCode !== undefined) throw new Error(`nomad exited (${this.proc.exitCode}):\n${this.output.slice(-3000)}`);
      try {
        const res = await fetch(`${this.address}/v1/nodes`);
        if (res.ok) {
          const nodes = (await res.json()) as Array<{ Status: string }>;
          if (nodes.some((n) => n.Status === 'ready')) return;
        }
      } catch {
        // not up yet
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`nomad agent not ready after 60 s:\n${this.output.slice(-3000)}`);
  }

  async close(): Promise<void> {
    const p = this.proc;
    if (p !== undefined && p.exitCode === null) {
      await new Promise<void>((r) => {
        p.once('exit', () => r());
        p.kill('SIGINT');
        setTimeout(() => p.kill('SIGKILL'), 10_000).unref();
      });
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}
