import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import type { GitAuditStore } from '../audit/GitAuditStore.js';
import type { WorkflowDirty } from '../audit/workflowDirty.js';
import { CaravanError } from '../errors/CaravanError.js';
import { buildRunPlan } from '../run/RunPlan.js';
import { planRetry, type RetrySelection } from '../run/planRetry.js';
import type { Workflow } from '../spec/Workflow.js';
import { validateText } from '../spec/validateWorkflows.js';
import type { LiveRuns } from './LiveRuns.js';

/** Run ids as Caravan makes them (and as triggers choose them): safe in paths and subjects. */
const RUN_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

/** Everything a retry starts from, read from the earlier run's record on caravan/runs. */
export interface RetrySource {
  /** The run retried. */
  runId: string;
  workflow: Workflow;
  /** The workflow definition exactly as the earlier run ran it. */
  source: string;
  commit: string | undefined;
  /** Set when the earlier run's workflow had uncommitted changes: the retry runs (and says) the same. */
  workflowDirty?: WorkflowDirty;
  /** The params as recorded: secret ones show as `***` and must be given again. */
  params: Record<string, unknown>;
  selection: RetrySelection;
}

/**
 * Reads a finished run for `caravan retry`: its record on caravan/runs (the definition it ran,
 * its commit, its params and its events) and what the retry reuses (planRetry).
 *
 * The definition is the `workflow.yaml` the record keeps, not the file in the working tree
 * nor a lookup of the file at the run's commit: it is byte for byte what the run executed,
 * which for a clean run is the file at its Workflow-Commit. A run of a file with uncommitted
 * changes is retried too, with that same definition: its SHA-256 must match the one the
 * record holds, and the retry is marked Workflow-Dirty like the run it retries.
 */
export async function readRetrySource(audit: GitAuditStore, live: LiveRuns, runId: string, options: { from?: string; parallelism?: number } = {}): Promise<RetrySource> {
  if (!RUN_ID.test(runId)) throw new CaravanError('RUN_NOT_FOUND', `'${runId.slice(0, 80)}' is not a run id`, { data: { runId: runId.slice(0, 80) } });
  const running = await live.get(runId);
  if (running !== undefined) throw new CaravanError('RUN_IN_PROGRESS', `run ${runId} is still running (process ${running.pid}); retry it once it is over, or cancel it first (caravan cancel ${runId})`, { data: { runId, pid: running.pid } });
  const stored = await audit.readRun(runId);
  if (stored === undefined) {
    const journal = live.journalPath(runId);
    if (existsSync(journal)) throw new CaravanError('RUN_IN_PROGRESS', `run ${runId} is only in the local journal (its process died): \`caravan recover ${runId}\` finishes or records it first`, { data: { runId } });
    throw new CaravanError('RUN_NOT_FOUND', `no run ${runId} on caravan/runs`, { data: { runId } });
  }
  const status = stored.run.status;
  if (status === 'running' || status === 'paused') {
    throw new CaravanError('RUN_IN_PROGRESS', `run ${runId} is not over (${status} when last recorded, and no process here runs it): \`caravan recover ${runId}\` continues it, \`caravan cancel ${runId}\` after that ends it`, { data: { runId, status } });
  }
  const source = stored.workflowSource;
  if (source === undefined) throw new CaravanError('RUN_NOT_FOUND', `run ${runId} has no recorded workflow definition to retry`, { data: { runId } });
  if (stored.workflowDirty !== undefined) {
    const sha256 = createHash('sha256').update(source, 'utf8').digest('hex');
    if (sha256 !== stored.workflowDirty.sha256) {
      throw new CaravanError('WORKFLOW_INVALID', `run ${runId} ran a workflow with uncommitted changes (sha256 ${stored.workflowDirty.sha256.slice(0, 12)}), and the definition its record keeps does not match it (sha256 ${sha256.slice(0, 12)}); not retried`, { data: { runId, expected: stored.workflowDirty.sha256, actual: sha256 } });
    }
  }
  const parsed = validateText(`${runId}/workflow.yaml`, source);
  if (parsed.workflow === undefined) throw new CaravanError('WORKFLOW_INVALID', `the recorded workflow of run ${runId} no longer validates`, { data: { runId } });
  const started = stored.events.find((e) => e.type === 'run.started');
  if (started === undefined || started.type !== 'run.started') throw new CaravanError('RUN_NOT_FOUND', `run ${runId} has no run.started event to retry from`, { data: { runId } });
  const plan = buildRunPlan(parsed.workflow, { maxParallel: options.parallelism ?? 32 });
  const selection = planRetry(plan, stored.events, options.from !== undefined ? { from: options.from } : {});
  return {
    runId,
    workflow: parsed.workflow,
    source,
    commit: started.commit ?? stored.run.workflowCommit,
    ...(stored.workflowDirty !== undefined ? { workflowDirty: stored.workflowDirty } : {}),
    params: started.params,
    selection,
  };
}
