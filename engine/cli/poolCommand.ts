import { poolJobId } from '../compile/jobId.js';
import { CaravanError, EXIT, type ExitCode } from '../errors/CaravanError.js';
import { NomadClient } from '../nomad/NomadClient.js';
import type { Io } from './Io.js';

/**
 * `caravan pool scale <workflow> <pool> <n>`: changes the number of agents of a pool through
 * Nomad (a check-and-set register of its service job, so a concurrent change is not lost).
 * The workflow file still says how many agents the next registration asks for.
 */
export async function poolScaleCommand(workflow: string, pool: string, count: number, io: Io): Promise<ExitCode> {
  const nomad = new NomadClient();
  const id = poolJobId(workflow, pool);
  let job;
  try {
    job = await nomad.readJob(id);
  } catch (e) {
    if ((e as { status?: number }).status === 404) throw new CaravanError('WORKFLOW_NOT_FOUND', `no pool job ${id} in Nomad at ${nomad.address}; run the workflow with --backend nomad first`, { cause: e });
    throw e;
  }
  const before = job.TaskGroups[0]?.Count ?? 0;
  const { JobModifyIndex, Version: _v, ...rest } = job;
  void _v;
  const next = { ...rest, TaskGroups: job.TaskGroups.map((g, i) => (i === 0 ? { ...g, Count: count } : g)) };
  await nomad.registerJob(next, JobModifyIndex);
  io.stdout(`${id}: ${before} → ${count} agents\n`);
  return EXIT.OK;
}
