import { NomadClient } from '../nomad/NomadClient.js';
import { scalePool, waitForPool } from '../nomad/scalePool.js';
import { EXIT, type ExitCode } from './exitCodes.js';
import type { Io } from './Io.js';

/**
 * `caravan pool scale <workflow> <pool> <n>`: changes the number of agents of a pool through
 * Nomad; with `waitS`, waits until that many agents run.
 */
export async function poolScaleCommand(workflow: string, pool: string, count: number, io: Io, waitS?: number): Promise<ExitCode> {
  const nomad = new NomadClient();
  const { job, before } = await scalePool(nomad, workflow, pool, count);
  io.stdout(`${job}: ${before} → ${count} agents\n`);
  if (waitS === undefined) return EXIT.OK;
  await waitForPool(nomad, job, count, waitS, (running) => io.stderr(`caravan: ${running} of ${count} agents running\n`));
  io.stdout(`${job}: ${count} agents running\n`);
  return EXIT.OK;
}
