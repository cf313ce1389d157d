import type { Plan } from '../compile/planChanges.js';
import type { NomadClient } from './NomadClient.js';
import { NomadApiError } from './NomadClient.js';

/** Jobs read at once: a plan may name hundreds, and the cluster serves others too. */
const CONCURRENCY = 8;

/**
 * Each job's current JobModifyIndex on the cluster (0 when it does not exist): the index a
 * controller applying this plan enforces when it registers the job (check-and-set), so a
 * reviewer sees which cluster state the plan was made against.
 */
export async function readJobIndexes(nomad: Pick<NomadClient, 'readJob'>, ids: readonly string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const queue = [...new Set(ids)];
  const worker = async (): Promise<void> => {
    for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
      try {
        out.set(id, (await nomad.readJob(id)).JobModifyIndex);
      } catch (e) {
        if (e instanceof NomadApiError && e.status === 404) out.set(id, 0);
        else throw e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, queue.length) }, worker));
  return out;
}

/** The plan with each job's index from the cluster at `address` (see readJobIndexes). */
export async function checkPlanAgainstCluster(plan: Plan, nomad: Pick<NomadClient, 'readJob' | 'address'>): Promise<Plan> {
  const indexes = await readJobIndexes(nomad, plan.workflows.flatMap((w) => w.jobs.map((j) => j.id)));
  return {
    ...plan,
    cluster: nomad.address,
    workflows: plan.workflows.map((w) => ({ ...w, jobs: w.jobs.map((j) => ({ ...j, modifyIndex: indexes.get(j.id) ?? 0 })) })),
  };
}
