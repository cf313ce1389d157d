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
  try {
    await dev.start({ nats: path('nats-server'), consul: path('consul'), nomad: path('nomad') });
  } catch (e) {
    await dev.stop();
    throw new CaravanError('DEV_SERVER_FAILED', `a dev server failed to start: ${(e as Error).message} (is something else using ports ${ports.nats}, ${ports.consul}, ${ports.nomad}?)`, { cause: e });
  }
  io.stdout(`\nReady. In another terminal:\n  export NATS_URL=nats://127.0.0.1:${ports.nats} NOMAD_ADDR=http://127.0.0.1:${ports.nomad} CONSUL_HTTP_ADDR=127.0.0.1:${ports.consul}\n  npx caravan run quarterly-report --backend nomad --bus nats --registry consul\n`);
  let controller: { stop(): Promise<void> } | undefined;
  if (repoDir !== undefined) {
    // The controller in this process reaches the servers as any client would: through the environment.
    process.env['NATS_URL'] = `nats://127.0.0.1:${ports.nats}`;
    process.env['NOMAD_ADDR'] = `http://127.0.0.1:${ports.nomad}`;
    process.env['CONSUL_HTTP_ADDR'] = `127.0.0.1:${ports.consul}`;
    const { startController } = await import('../controller/startController.js');
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
    await controller?.stop();
    await dev.stop();
  };
  if (options.once) {
    await stopAll();
    return EXIT.OK;
  }
  io.stdout(`Ctrl-C stops ${controller !== undefined ? 'the controller and ' : ''}all three.\n`);
  await new Promise<void>((r) => {
    process.once('SIGINT', () => r());
    process.once('SIGTERM', () => r());
  });
  await stopAll();
  return EXIT.OK;
}
