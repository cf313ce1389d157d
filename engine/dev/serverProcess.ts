import { spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createConnection } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { CaravanError } from '../errors/CaravanError.js';

/** Where scripts/build-nomad.sh and build-consul.sh leave their binaries. */
export function serverBinDir(): string {
  return process.env['CARAVAN_BIN_DIR'] ?? join(homedir(), '.cache', 'caravan', 'bin');
}

/** A server binary on PATH, else the cached build; undefined when neither exists. */
export function findServerBinary(name: string): string | undefined {
  if (spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0) return name;
  const cached = join(serverBinDir(), name);
  return existsSync(cached) ? cached : undefined;
}

/** Waits until something accepts TCP connections on 127.0.0.1:port, failing if `proc` exits first. */
export async function waitForPort(port: number, limitMs: number, proc: ChildProcess, name: string): Promise<void> {
  const end = Date.now() + limitMs;
  while (Date.now() < end) {
    // Killed by a signal (caravan dev stopping while it starts) counts as gone too.
    if (proc.exitCode !== null || proc.signalCode !== null) throw new CaravanError('DEV_SERVER_FAILED', `${name} ${proc.exitCode !== null ? `exited with code ${proc.exitCode}` : `was killed by ${proc.signalCode}`} before listening on ${port}`, { data: { server: name, port, exitCode: proc.exitCode, signal: proc.signalCode } });
    const up = await new Promise<boolean>((r) => {
      const c = createConnection({ port, host: '127.0.0.1' });
      c.once('connect', () => { c.destroy(); r(true); });
      c.once('error', () => r(false));
    });
    if (up) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new CaravanError('DEV_SERVER_FAILED', `nothing listening on port ${port} after ${limitMs} ms`, { data: { server: name, port, limitMs } });
}

/** Asks a server to stop with `signal`, SIGKILLs it after `graceMs`, and waits until it exits. */
export async function stopProcess(proc: ChildProcess, signal: NodeJS.Signals = 'SIGINT', graceMs = 10_000): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  await new Promise<void>((r) => {
    proc.once('exit', () => r());
    proc.kill(signal);
    setTimeout(() => proc.kill('SIGKILL'), graceMs).unref();
  });
}
