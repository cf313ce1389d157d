import { CaravanError } from '../errors/CaravanError.js';
import { EXIT, type ExitCode } from './exitCodes.js';
import { DEFAULT_DEV_PORTS, DevServers, devBinaries, type DevPorts } from '../dev/DevServers.js';
import type { Io } from './Io.js';
import { findRepoRoot } from '../gitops/readTreeAtRef.js';

/**
 * `caravan dev`: the three servers on their usual ports, until Ctrl-C (or, with --once,
 * started, checked and stopped again). Says exactly what is missing and how to get it.
 */
export async function devCommand(options: { once: boolean; ports: Partial<DevPorts>; controller?: boolean; controllerPort?: number }, io: Io): Promise<ExitCode> {
  // Checked before any server starts: a controller needs a repository to watch.
  const repoDir = options.controller === true ? await findRepoRoot(io.cwd).catch((e: unknown) => {
    throw new CaravanError('NOT_A_REPOSITORY', `caravan dev --controller watches the Git repository it is started in; ${io.cwd} is not inside one`, { cause: e, data: { dir: io.cwd } });
  }) : undefined;
  const bins = devBinaries();
  const missing = bins.filter((b) => b.path === undefined);
  if (missing.length > 0) {
    throw new CaravanError('DEV_MISSING', `caravan dev needs ${missing.map((m) => m.name).join(', ')}, not found on PATH or in ~/.cache/caravan/bin:\n${missing.map((m) => `  ${m.name}: ${m.install}`).join('\n')}`, { data: { missing: missing.map((m) => m.name) } });
  }
  const ports = { ...DEFAULT_DEV_PORTS, ...options.ports };
  // A long-running process: JSON lines on standard error for the record, plain lines on
  // standard output for the person who started it.
  const { createLogger } = await import('../telemetry/createLogger.js');
  const dev = new DevServers(ports, (l) => io.stdout(`${l}\n`), createLogger({ name: 'caravan-dev' }));
  const path = (n: string): string => bins.find((b) => b.name === n)!.path!;
  // Listening starts before the first server does: a signal's default action would end this
  // process at once and leave the servers running, orphaned.
  const signals = new DevStopSignals(io);
  try {
    return await runServers(dev, path, ports, repoDir, options, signals, io);
  } finally {
    signals.close();
  }
}

async function runServers(dev: DevServers, path: (n: string) => string, ports: DevPorts, repoDir: string | undefined, options: { once: boolean; controllerPort?: number }, signals: DevStopSignals, io: Io): Promise<ExitCode> {
  // A signal while the servers start stops those already up at once (Nomad alone may take a
  // minute to be ready); start then fails on the server it was waiting for.
  let earlyStop: Promise<void> | undefined;
  signals.whileStarting = () => (earlyStop = dev.stop());
  try {
    await dev.start({ nats: path('nats-server'), consul: path('consul'), nomad: path('nomad') });
  } catch (e) {
    await earlyStop;
    await dev.stop();
    // Stopped by a signal half-way: a server that exited because it was stopped is no failure.
    if (signals.signal !== undefined) return interruptedExit(signals.signal);
    throw new CaravanError('DEV_SERVER_FAILED', `a dev server failed to start: ${(e as Error).message} (is something else using ports ${ports.nats}, ${ports.consul}, ${ports.nomad}?)`, { cause: e });
  } finally {
    signals.whileStarting = undefined;
  }
  if (signals.signal !== undefined) {
    // A server that start launched after the early stop had looked is stopped here.
    await earlyStop;
    await dev.stop();
    return interruptedExit(signals.signal);
  }
  io.stdout(`\nReady. In another terminal:\n  export NATS_URL=nats://127.0.0.1:${ports.nats} NOMAD_ADDR=http://127.0.0.1:${ports.nomad} CONSUL_HTTP_ADDR=127.0.0.1:${ports.consul}\n  npx caravan run quarterly-report --backend nomad --bus nats --registry consul\n`);
  let controller: { stop(): Promise<void> } | undefined;
  if (repoDir !== undefined) {
    // The controller in this process reaches the servers as any client would: through the environment.
    process.env['NATS_URL'] = `nats://127.0.0.1:${ports.nats}`;
    process.env['NOMAD_ADDR'] = `http://127.0.0.1:${ports.nomad}`;
    process.env['CONSUL_HTTP_ADDR'] = `127.0.0.1:${ports.consul}`;
    const { startController } = await import('../api/startController.js');
    const { createLogger } = await import('../telemetry/createLogger.js');
    try {
      const running = await startController({ repoDir, backend: 'nomad', bus: 'nats', registry: 'consul', intervalMs: 2000, listen: { host: '127.0.0.1', port: options.controllerPort ?? 8080 }, logger: createLogger({ name: 'caravan-controller' }) });
      controller = running;
      io.stdout(`\ncontroller   ${running.server!.url} watching branch main of ${repoDir} every 2s:\n  commit to main (git commit, or git push to this repository) and the workflows whose push triggers match run on Nomad.\n`);
    } catch (e) {
      await dev.stop();
      throw e;
    }
  }
  const stopAll = async (): Promise<void> => {
    // The servers are stopped even when the controller fails to stop cleanly.
    try {
      await controller?.stop();
    } finally {
      await dev.stop();
    }
  };
  if (options.once) {
    await stopAll();
    return EXIT.OK;
  }
  io.stdout(`Ctrl-C stops ${controller !== undefined ? 'the controller and ' : ''}all three.\n`);
  await signals.received;
  await stopAll();
  io.stdout('stopped.\n');
  return EXIT.OK;
}

/** What a shell reports for a process ended by `signal` (128 + its number). */
function interruptedExit(signal: NodeJS.Signals): ExitCode {
  return signal === 'SIGTERM' ? EXIT.TERMINATED : signal === 'SIGHUP' ? EXIT.HANGUP : EXIT.INTERRUPTED;
}

/**
 * The signals that end `caravan dev`: Ctrl-C (SIGINT), a service manager or `kill` (SIGTERM),
 * and a terminal closed under it (SIGHUP). Each stops the servers before the process exits.
 * Any further signal while they stop only says so: the default action of a signal nobody
 * listens to would end the process half-way and leave the rest of the servers running.
 */
class DevStopSignals {
  signal: NodeJS.Signals | undefined;
  readonly received: Promise<NodeJS.Signals>;
  /** Set while the servers start: what a signal does at once, before `received` is awaited. */
  whileStarting: (() => void) | undefined;
  private wake: (signal: NodeJS.Signals) => void = () => undefined;
  private readonly handlers = new Map<NodeJS.Signals, () => void>();

  constructor(private readonly io: Io) {
    this.received = new Promise((r) => (this.wake = r));
    for (const s of STOP_SIGNALS) {
      const h = (): void => this.on(s);
      this.handlers.set(s, h);
      process.on(s, h);
    }
  }

  close(): void {
    for (const [s, h] of this.handlers) process.off(s, h);
  }

  private on(signal: NodeJS.Signals): void {
    if (this.signal !== undefined) {
      this.io.stdout(`still stopping the servers (${signal}); caravan dev exits once they have stopped\n`);
      return;
    }
    this.signal = signal;
    this.io.stdout(`\nstopping the servers (${signal})\n`);
    this.whileStarting?.();
    this.wake(signal);
  }
}

const STOP_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
