import { poolJobId } from '../compile/jobId.js';
import { CaravanError, EXIT, type ExitCode } from '../errors/CaravanError.js';
import { NomadClient } from '../nomad/NomadClient.js';
import type { Io } from './Io.js';

/**
 * `caravan pool scale <workflow> <pool> <n>`: changes the number of agents of a pool through
 * Nomad (a check-and-set register of its service job, so a concurrent change is not lost).
 * The workflow file still says how many agents the next registration asks for. With `waitS`,
 * it waits (blocking queries on the job's allocations) until that many agents run.
 */
export async function poolScaleCommand(workflow: string, pool: string, count: number, io: Io, waitS?: number): Promise<ExitCode> {
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
  if (waitS === undefined) return EXIT.OK;
  // Follow the job's allocations with blocking queries until exactly `count` agents run.
  const end = Date.now() + waitS * 1000;
  let index = 1;
  let running = -1;
  while (Date.now() < end) {
    const r = await nomad.watchJobAllocations(id, index, Math.max(1, Math.min(30, Math.ceil((end - Date.now()) / 1000))));
    index = r.index;
    const live = r.value.filter((a) => a.DesiredStatus === 'run');
    const now = live.filter((a) => a.ClientStatus === 'running').length;
    if (now !== running) {
      running = now;
      io.stderr(`caravan: ${running} of ${count} agents running\n`);
    }
    if (running === count && live.length === count) {
      io.stdout(`${id}: ${count} agents running\n`);
      return EXIT.OK;
    }
  }
  throw new CaravanError('POOL_NOT_READY', `${id}: ${running} of ${count} agents running after ${waitS} s (see the job's allocations in the Nomad UI)`, { data: { job: id, running, count } });
}
