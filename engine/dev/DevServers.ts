import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { CaravanError } from '../errors/CaravanError.js';
import type { Logger } from '../run/Logger.js';
import { findServerBinary, stopProcess, waitForPort } from './serverProcess.js';

export interface DevPorts {
  nats: number;
  consul: number;
  nomad: number;
}

export const DEFAULT_DEV_PORTS: DevPorts = { nats: 4222, consul: 8500, nomad: 4646 };

interface Binary {
  name: 'nats-server' | 'consul' | 'nomad';
  path: string | undefined;
  install: string;
}

/** The three servers and where each comes from; `install` says how to get a missing one. */
export function devBinaries(): Binary[] {
  return [
    { name: 'nats-server', path: findServerBinary('nats-server'), install: 'apt-get install nats-server (Debian/Ubuntu), or a release from the NATS project' },
    { name: 'consul', path: findServerBinary('consul'), install: 'bash scripts/build-consul.sh (builds Consul v1.16.3, MPL-2.0, from its Go module into ~/.cache/caravan/bin)' },
    { name: 'nomad', path: findServerBinary('nomad'), install: 'bash scripts/build-nomad.sh (builds Nomad v1.6.3, MPL-2.0, from its Go module into ~/.cache/caravan/bin)' },
  ];
}

async function waitHttp(url: string, ok: (body: unknown) => boolean, limitMs: number, proc: ChildProcess, name: string): Promise<void> {
  const end = Date.now() + limitMs;
  while (Date.now() < end) {
    // Killed by a signal (caravan dev stopping while it starts) counts as gone too.
    if (proc.exitCode !== null || proc.signalCode !== null) throw new CaravanError('DEV_SERVER_FAILED', `${name} ${proc.exitCode !== null ? `exited with code ${proc.exitCode}` : `was killed by ${proc.signalCode}`}`, { data: { server: name, exitCode: proc.exitCode, signal: proc.signalCode } });
    try {
      const res = await fetch(url);
      if (res.ok && ok(await res.json())) return;
    } catch {
      // Not answering yet: the loop asks again until the limit, then says which server.
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new CaravanError('DEV_SERVER_FAILED', `${name} did not become ready within ${limitMs / 1000} s`, { data: { server: name, url, limitMs } });
}

/**
 * `caravan dev`: NATS JetStream, Consul and Nomad in dev mode on this machine, wired to each
 * other (Nomad registers pool services in this Consul), with data under ~/.cache/caravan/dev.
 */
export class DevServers {
  private readonly procs: ChildProcess[] = [];
  private stopping = false;

  /**
   * `say` gets the lines for the person at the terminal; `logger` the JSON lines for the
   * record (each server's start, and a server that exits while it should be running).
   */
  constructor(readonly ports: DevPorts, private readonly say: (line: string) => void, private readonly logger: Logger) {}

  private started(proc: ChildProcess, server: string, url: string): void {
    this.logger.info('dev server started', { server, url, pid: proc.pid });
    proc.once('exit', (code, signal) => {
      if (!this.stopping) this.logger.error('dev server exited while caravan dev runs; restart caravan dev', { server, code, signal });
    });
  }

  async start(bins: { nats: string; consul: string; nomad: string }): Promise<void> {
    const base = join(process.env['CARAVAN_DEV_DIR'] ?? join(homedir(), '.cache', 'caravan', 'dev'));
    await mkdir(join(base, 'nats'), { recursive: true });
    await mkdir(join(base, 'nomad'), { recursive: true });
    const nats = spawn(bins.nats, ['-js', '-a', '127.0.0.1', '-p', String(this.ports.nats), '-sd', join(base, 'nats')], { stdio: 'ignore' });
    this.procs.push(nats);
    await waitForPort(this.ports.nats, 15_000, nats, 'nats-server');
    this.started(nats, 'nats-server', `nats://127.0.0.1:${this.ports.nats}`);
    this.say(`nats-server  nats://127.0.0.1:${this.ports.nats} (JetStream, store ${join(base, 'nats')})`);
    const consul = spawn(bins.consul, ['agent', '-dev', '-bind=127.0.0.1', '-client=127.0.0.1', `-http-port=${this.ports.consul}`, '-dns-port=-1', '-grpc-port=-1', '-grpc-tls-port=-1', `-serf-lan-port=${this.ports.consul + 1}`, `-serf-wan-port=${this.ports.consul + 2}`, `-server-port=${this.ports.consul + 3}`], { stdio: 'ignore' });
    this.procs.push(consul);
    await waitHttp(`http://127.0.0.1:${this.ports.consul}/v1/status/leader`, (b) => b !== '', 60_000, consul, 'consul');
    this.started(consul, 'consul', `http://127.0.0.1:${this.ports.consul}`);
    this.say(`consul       http://127.0.0.1:${this.ports.consul} (UI at /ui)`);
    const cfg = join(base, 'nomad', 'dev.hcl');
    await writeFile(cfg, `data_dir = "${join(base, 'nomad', 'data')}"\nbind_addr = "127.0.0.1"\nports {\n  http = ${this.ports.nomad}\n  rpc  = ${this.ports.nomad + 1}\n  serf = ${this.ports.nomad + 2}\n}\nconsul {\n  address = "127.0.0.1:${this.ports.consul}"\n}\n`);
    const nomad = spawn(bins.nomad, ['agent', '-dev', `-config=${cfg}`], { stdio: 'ignore' });
    this.procs.push(nomad);
    await waitHttp(`http://127.0.0.1:${this.ports.nomad}/v1/nodes`, (b) => Array.isArray(b) && b.some((n: { Status?: string }) => n.Status === 'ready'), 90_000, nomad, 'nomad');
    this.started(nomad, 'nomad', `http://127.0.0.1:${this.ports.nomad}`);
    this.say(`nomad        http://127.0.0.1:${this.ports.nomad} (UI at /ui; raw_exec enabled)`);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    for (const p of [...this.procs].reverse()) await stopProcess(p);
    this.logger.info('dev servers stopped', { servers: this.procs.length });
  }
}
