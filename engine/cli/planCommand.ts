import { formatPlan, type PlanFormat } from '../compile/formatPlan.js';
import { planRevisions } from '../gitops/planRevisions.js';
import { EXIT, type ExitCode } from './exitCodes.js';
import type { Io } from './Io.js';

export interface PlanOptions {
  base: string;
  /** A revision to plan instead of the working tree. */
  head?: string;
  format: PlanFormat;
  workflows: string;
  /** Read each job's JobModifyIndex from the Nomad cluster here (token: $NOMAD_TOKEN). */
  nomadAddr?: string;
}

/**
 * `caravan plan [--base <ref>] [--head <ref>] [--nomad-addr <url>]`: the Nomad jobs that
 * change between a commit and the work tree (or a second commit). The commits are read from
 * Git's object store, so nothing is checked out or touched.
 */
export async function planCommand(options: PlanOptions, io: Io): Promise<ExitCode> {
  const outcome = await planRevisions({ cwd: io.cwd, base: options.base, workflows: options.workflows, ...(options.head !== undefined ? { head: options.head } : {}) });
  if (!outcome.ok) {
    for (const l of outcome.lines) io.stdout(l);
    io.stderr(`caravan: cannot plan: ${outcome.message}\n`);
    return EXIT.INVALID;
  }
  let plan = outcome.plan;
  if (options.nomadAddr !== undefined) {
    // Loaded only here: a plan without a cluster pays nothing for HTTP.
    const [{ NomadClient }, { checkPlanAgainstCluster }] = await Promise.all([import('../nomad/NomadClient.js'), import('../nomad/readJobIndexes.js')]);
    plan = await checkPlanAgainstCluster(plan, new NomadClient({ address: options.nomadAddr }));
  }
  io.stdout(formatPlan(plan, options.format));
  return EXIT.OK;
}
