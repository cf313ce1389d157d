import { CaravanError } from '../errors/CaravanError.js';
import { EXIT, type ExitCode } from './exitCodes.js';
import { DEFAULT_DEV_PORTS, DevServers, devBinaries, type DevPorts } from '../dev/DevServers.js';
import type { Io } from './Io.js';

/**
 * `caravan dev`: the three servers on their usual ports, until Ctrl-C (or, with --once,
 * started, checked and stopped again). Says exactly what is missing and how to get it.
 */
export async function devCommand(options: { once: boolean; ports: Partial<DevPorts> }, io: Io): Promise<ExitCode> {
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
  if (options.once) {
    await dev.stop();
    return EXIT.OK;
  }
  io.stdout('Ctrl-C stops all three.\n');
  await new Promise<void>((r) => process.once('SIGINT', () => r()));
  await dev.stop();
  return EXIT.OK;
}
