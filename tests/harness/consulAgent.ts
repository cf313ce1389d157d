import { spawn, type ChildProcess } from 'node:child_process';
import { findServerBinary, stopProcess } from '../../engine/dev/serverProcess.js';
import { freePort, requireServerBinary } from './natsServer.js';
import { answers, until } from './until.js';

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
    const proc = a.proc;
    await until(() => `consul to elect itself leader:\n${a.output.slice(-3000)}`, () => {
      if (proc.exitCode !== null) throw new Error(`consul exited (${proc.exitCode}):\n${a.output.slice(-3000)}`);
      return answers(`http://127.0.0.1:${http}/v1/status/leader`, (leader) => leader !== '');
    }, 60_000, 250);
    return a;
  }

  get address(): string {
    return `127.0.0.1:${this.httpPort}`;
  }

  async close(): Promise<void> {
    if (this.proc !== undefined) await stopProcess(this.proc);
  }
}
