import type { GitAuditStore } from '../audit/GitAuditStore.js';
import { CaravanError } from '../errors/CaravanError.js';
import type { ControlAction, LiveRuns } from './LiveRuns.js';
import type { RunQueries } from './RunQueries.js';

/** A request to change a live run, with who asks and why. */
export interface ControlRequest {
  action: ControlAction;
  /** The approval task, for approve and reject. */
  task?: string;
  /** Who asks: recorded with the decision in the run's events. */
  by: string;
  reason?: string;
}

/**
 * The write side the CLI (and the coming HTTP API) share: pause, unpause, cancel, approve
 * and reject a live run. Commands reach the run's engine through its control channel.
 */
export class RunControl {
  constructor(private readonly audit: GitAuditStore, private readonly live: LiveRuns, private readonly queries: RunQueries) {}

  async send(runId: string, request: ControlRequest): Promise<void> {
    if ((await this.live.get(runId)) === undefined) {
      const stored = await this.audit.readRun(runId);
      if (stored === undefined) throw new CaravanError('RUN_NOT_FOUND', `no run ${runId}`, { data: { runId } });
      const status = stored.run.status;
      throw new CaravanError('RUN_NOT_LIVE', `run ${runId} is not running (${status}); ${status === 'running' || status === 'paused' ? `recover it with \`caravan recover ${runId}\` first` : 'nothing to do'}`, { data: { runId, status } });
    }
    if (request.action === 'approve' || request.action === 'reject') await this.checkApprovalTask(runId, request.task);
    await this.live.send(runId, { action: request.action, by: request.by, ...(request.task !== undefined ? { task: request.task } : {}), ...(request.reason !== undefined ? { reason: request.reason } : {}) });
  }

  /** An approval decision must name a task of the run; otherwise it would vanish without a word. */
  private async checkApprovalTask(runId: string, task: string | undefined): Promise<void> {
    if (task === undefined) throw new CaravanError('USAGE', 'approve and reject name the approval task', { data: { runId } });
    const { snapshot } = await this.queries.get(runId);
    if (!(task in snapshot.tasks)) {
      throw new CaravanError('TASK_NOT_FOUND', `run ${runId} has no task '${task}' (tasks: ${Object.keys(snapshot.tasks).join(', ')})`, { data: { runId, task } });
    }
  }
}
