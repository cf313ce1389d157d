import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import { findServerBinary, serverBinDir, stopProcess, waitForPort } from '../../engine/dev/serverProcess.js';


/** True when the server binary is on PATH or built into the cache. */
export function hasBinary(name: string): boolean {
  return findServerBinary(name) !== undefined;
}

/**
 * Whether integration tests that need `name` should run. Under CI=true a missing server is
 * an error (the test fails loudly); on a developer machine the suite is skipped with a note.
 */
export function requireServer(name: string, install: string): boolean {
  return requireServerBinary(name, install) !== undefined;
}

/** The same, answering with the binary to run (on PATH or from the build cache). */
export function requireServerBinary(name: string, install: string): string | undefined {
  const bin = findServerBinary(name);
  if (bin !== undefined) return bin;
  if (process.env['CI'] === 'true') throw new Error(`${name} is not installed but CI=true: ${install}`);
  process.stderr.write(`[caravan tests] ${name} not found; skipping its integration tests (${install})\n`);
  return undefined;
}

/** A nats-server binary the NATS tests run against, and what to call it in test names. */
export interface NatsServerBinary {
  label: string;
  bin: string;
}

/**
 * The nats-servers to run the NATS tests against: Debian's (2.9) and one built from the
 * 2.10 Go module (`bash scripts/build-nats-server.sh`, which .ci/run runs). Under CI=true a
 * missing one is an error; elsewhere it is skipped with a note.
 */
export function natsServerBinaries(): NatsServerBinary[] {
  const found: NatsServerBinary[] = [];
  const version = (bin: string): string => spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout.trim();
  const system = requireServerBinary('nats-server', 'apt-get install -y nats-server');
  if (system !== undefined) found.push({ label: version(system), bin: system });
  const newer = join(serverBinDir(), 'nats-server-v2.10', 'nats-server');
  if (existsSync(newer)) found.push({ label: version(newer), bin: newer });
  else if (process.env['CI'] === 'true') throw new Error(`nats-server v2.10 is not built but CI=true: bash scripts/build-nats-server.sh`);
  else process.stderr.write('[caravan tests] nats-server v2.10 not built; its runs of the NATS tests are skipped (bash scripts/build-nats-server.sh)\n');
  return found;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/**
 * A free port whose next `count - 1` ports are free too, for servers that take a run of
 * ports (`caravan dev` gives Consul and Nomad base+1.. for their other listeners). Ports
 * come from below the kernel's ephemeral range, so other tests' free ports do not land there.
 */
export async function freePortRun(count: number): Promise<number> {
  for (let tries = 0; tries < 200; tries++) {
    const base = 20_000 + Math.floor(Math.random() * 10_000);
    let ok = true;
    for (let i = 0; i < count && ok; i++) ok = await canListen(base + i);
    if (ok) return base;
  }
  throw new Error(`no run of ${count} free ports found`);
}

export interface NatsServerOptions {
  /** The binary (default: nats-server on PATH). */
  bin?: string;
  /** Added to the server's environment (the pool benchmark sets GOMAXPROCS). */
  env?: Record<string, string>;
  /** Also serve the HTTP monitoring endpoints (`/connz`, `/jsz`...) on a free port: see monitorUrl. */
  monitor?: boolean;
}

/** A real `nats-server -js` on a free port with a temporary store; restartable on the same port and store. */
export class NatsServer {
  private proc: ChildProcess | undefined;
  private output = '';

  private constructor(readonly port: number, readonly storeDir: string, private readonly configFile: string | undefined, private readonly o: NatsServerOptions, private readonly monitorPort: number | undefined) {}

  /** With `config`, the server also reads that configuration (auth, TLS) from a file. */
  static async start(config?: string, o: NatsServerOptions = {}): Promise<NatsServer> {
    const dir = await mkdtemp(join(tmpdir(), 'caravan-nats-'));
    let file: string | undefined;
    if (config !== undefined) {
      file = join(dir, 'server.conf');
      await writeFile(file, config);
    }
    const s = new NatsServer(await freePort(), join(dir, 'store'), file, o, o.monitor === true ? await freePort() : undefined);
    await s.run();
    return s;
  }

  /** The server's process id while it runs (the pool benchmark reads its CPU time). */
  get pid(): number | undefined {
    return this.proc?.pid;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /** The monitoring endpoint's base URL (started with `monitor: true`). */
  get monitorUrl(): string {
    if (this.monitorPort === undefined) throw new Error('this nats-server was started without monitor: true');
    return `http://127.0.0.1:${this.monitorPort}`;
  }

  private async run(): Promise<void> {
    this.proc = spawn(this.o.bin ?? 'nats-server', [...(this.configFile !== undefined ? ['-c', this.configFile] : []), '-js', '-a', '127.0.0.1', '-p', String(this.port), '-sd', this.storeDir, ...(this.monitorPort !== undefined ? ['-m', String(this.monitorPort)] : [])], { env: { ...process.env, ...this.o.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.on('data', (c: Buffer) => { this.output += c.toString(); });
    this.proc.stderr!.on('data', (c: Buffer) => { this.output += c.toString(); });
    try {
      await waitForPort(this.port, 10_000, this.proc, 'nats-server');
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${this.output.slice(-2000)}`, { cause: e });
    }
  }

  async stop(): Promise<void> {
    if (this.proc !== undefined) await stopProcess(this.proc, 'SIGTERM', 5000);
    this.proc = undefined;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.run();
  }

  async close(): Promise<void> {
    await this.stop();
    await rm(dirname(this.storeDir), { recursive: true, force: true });
  }
}
