import type { CaravanApp, StartedRun } from '../app/CaravanApp.js';
import { CaravanError } from '../errors/CaravanError.js';
import type { Logger } from '../run/Logger.js';
import type { Workflow } from '../spec/Workflow.js';

/** What starting a trigger's run came to: the run, a run that existed already, or nothing. */
export type StartOutcome = StartedRun | 'exists' | undefined;

/**
 * The runs a controller drives: started by its triggers or taken over from an earlier
 * controller, each followed to its end, and handed over together when it stops.
 */
export class TriggerRuns {
  readonly live = new Set<StartedRun>();

  constructor(private readonly app: CaravanApp, private readonly logger: Logger) {}

  /** Starts a trigger's run; 'exists' when a run with that id was started before, undefined when it was not started. */
  async start(workflow: Workflow, source: string, runId: string, trigger: string, commit: string, params: Record<string, unknown> = {}): Promise<StartOutcome> {
    const { app, logger } = this;
    const log = { workflow: workflow.metadata.name, run: runId, trigger };
    try {
      const run = await app.startLoaded({ workflow, source }, params, { trigger, commit, runId });
      this.track(run);
      logger.info('run started by a trigger', log);
      return run;
    } catch (e) {
      if (e instanceof CaravanError && e.code === 'RUN_SKIPPED') {
        const existed = e.data?.['duplicate'] === true;
        logger.info(existed ? 'run exists already: not started twice' : 'run skipped by the concurrency policy', { ...log, reason: e.message });
        return existed ? 'exists' : undefined;
      }
      logger.error('a trigger could not start its run', { ...log, err: e });
      return undefined;
    }
  }

  /** Follows a run to its end (logged), after which it is no longer the controller's. */
  track(run: StartedRun): void {
    this.live.add(run);
    run.done.then(
      ({ state }) => this.logger.info('run over', { workflow: run.workflow, run: run.runId, status: state.status }),
      (e: unknown) => this.logger.warn('run handed over', { workflow: run.workflow, run: run.runId, err: e }),
    ).finally(() => this.live.delete(run));
  }

  /** Whether a run with this id was ever started in this repository. */
  exists(runId: string): Promise<boolean> {
    return this.app.runExists(runId);
  }

  /**
   * Starts a run and follows it, letting the caller handle refusals (event triggers turn a
   * refusal of their params into a refused message).
   */
  async startDirect(loaded: { workflow: Workflow; source: string }, params: Record<string, unknown>, how: { trigger: string; commit: string; runId: string }): Promise<StartedRun> {
    const run = await this.app.startLoaded(loaded, params, how);
    this.track(run);
    return run;
  }

  find(runId: string): StartedRun | undefined {
    return [...this.live].find((r) => r.runId === runId);
  }

  /** Runs whose earlier controller died (a journal, no live process): continued here. */
  async recover(): Promise<void> {
    const { app, logger } = this;
    for (const runId of await app.live.journalIds()) {
      if ((await app.live.get(runId)) !== undefined) continue;
      try {
        const r = await app.recover(runId);
        if ('engine' in r) {
          this.track(r);
          logger.info('run recovered from its journal', { workflow: r.workflow, run: runId });
        } else logger.info('finished run recorded from its journal', { workflow: r.workflow, run: runId });
      } catch (e) {
        logger.error('a run left by an earlier controller could not be recovered (caravan recover it by hand)', { run: runId, err: e });
      }
    }
  }

  /** Hands every run over (journal and checkpoint written; the next controller recovers them). */
  async handOver(): Promise<void> {
    const runs = [...this.live];
    for (const r of runs) r.engine.relinquish(new CaravanError('INTERRUPTED', `the controller stopped; the next one recovers run ${r.runId}`, { data: { runId: r.runId } }));
    await Promise.allSettled(runs.map((r) => r.done));
  }
}
