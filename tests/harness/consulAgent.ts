import { spawn, type ChildProcess } from 'node:child_process';
import { findServerBinary, stopProcess } from '../../engine/dev/serverProcess.js';
import { freePort, requireServerBinary } from './natsServer.js';

export function consulBinary(): string | undefined {
  return findServerBinary('consul');
}

export function requireConsul(): string | undefined {
  return requireServerBinary('consul', 'run scripts/build-consul.sh');
}

/** A real `consul agent -dev` (in memory) on free ports. */
export class ConsulAgent {
  private proc: ChildProcess | undefined;
  private output = '';

  private constructor(readonly httpPort: number) {}

  /** `hcl`: extra configuration, e.g. ACLs (`-hcl`). */
  static async start(bin: string, hcl?: string): Promise<ConsulAgent> {
    const [http, lan, wan, server] = [await freePort(), await freePort(), await freePort(), await freePort()];
    const a = new ConsulAgent(http);
    a.proc = spawn(bin, ['agent', '-dev', '-bind=127.0.0.1', '-client=127.0.0.1', `-http-port=${http}`, '-dns-port=-1', '-grpc-port=-1', '-grpc-tls-port=-1', `-serf-lan-port=${lan}`, `-serf-wan-port=${wan}`, `-server-port=${server}`, ...(hcl !== undefined ? [`-hcl=${hcl}`] : [])], { stdio: ['ignore', 'pipe', 'pipe'] });
    a.proc.stdout!.on('data', (c: Buffer) => { a.output += c.toString(); });
    a.proc.stderr!.on('data', (c: Buffer) => { a.output += c.toString(); });
    const end = Date.now() + 60_000;
    while (Date.now() < end) {
      if (a.proc.exitCode !== null) throw new Error(`consul exited (${a.proc.exitCode}):\n${a.output.slice(-3000)}`);
      try {
        const res = await fetch(`http://127.0.0.1:${http}/v1/status/leader`);
        if (res.ok && (await res.json()) !== '') return a;
      } catch {
        // not up yet
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`consul not ready after 60 s:\n${a.output.slice(-3000)}`);
  }

  get address(): string {
    return `127.0.0.1:${this.httpPort}`;
  }

  async close(): Promise<void> {
    if (this.proc !== undefined) await stopProcess(this.proc);
  }
}
