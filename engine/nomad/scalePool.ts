import { poolJobId } from '../compile/jobId.js';
import { CaravanError } from '../errors/CaravanError.js';
import { NomadApiError, type NomadClient } from './NomadClient.js';

export interface ScalePoolResult {
  job: string;
  before: number;
  count: number;
}

/**
 * Changes the number of agents of a pool through Nomad: a check-and-set register of its
 * service job, so a concurrent change is not lost. The workflow file still says how many
 * agents the next registration asks for.
 */
export async function scalePool(nomad: NomadClient, workflow: string, pool: string, count: number): Promise<ScalePoolResult> {
  const id = poolJobId(workflow, pool);
  let job;
  try {
    job = await nomad.readJob(id);
  } catch (e) {
    if (e instanceof NomadApiError && e.status === 404) throw new CaravanError('WORKFLOW_NOT_FOUND', `no pool job ${id} in Nomad at ${nomad.address}; run the workflow with --backend nomad first`, { cause: e, data: { job: id } });
    throw e;
  }
  const before = job.TaskGroups[0]?.Count ?? 0;
  const { JobModifyIndex, Version: _version, ...rest } = job;
  void _version;
  const next = { ...rest, TaskGroups: job.TaskGroups.map((g, i) => (i === 0 ? { ...g, Count: count } : g)) };
  await nomad.registerJob(next, JobModifyIndex);
  return { job: id, before, count };
}

/**
 * Follows a pool job's allocations with blocking queries until exactly `count` agents run;
 * `onProgress` hears each change of the running count. Throws POOL_NOT_READY after `waitS`.
 */
export async function waitForPool(nomad: NomadClient, job: string, count: number, waitS: number, onProgress: (running: number) => void = () => undefined): Promise<void> {
  const end = Date.now() + waitS * 1000;
  let index = 1;
  let running = -1;
  while (Date.now() < end) {
    const r = await nomad.watchJobAllocations(job, index, Math.max(1, Math.min(30, Math.ceil((end - Date.now()) / 1000))));
    index = r.index;
    const live = r.value.filter((a) => a.DesiredStatus === 'run');
    const now = live.filter((a) => a.ClientStatus === 'running').length;
    if (now !== running) {
      running = now;
      onProgress(running);
    }
    if (running === count && live.length === count) return;
  }
  throw new CaravanError('POOL_NOT_READY', `${job}: ${running} of ${count} agents running after ${waitS} s (see the job's allocations in the Nomad UI)`, { data: { job, running, count } });
}
