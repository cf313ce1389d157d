import type { StartedRun } from '../app/CaravanApp.js';
import type { Logger } from '../run/Logger.js';
import type { Metrics } from '../run/Metrics.js';
import type { KeyValue } from '../run/Registry.js';
import type { FileResult } from '../spec/validateWorkflows.js';
import type { Workflow } from '../spec/Workflow.js';
import { ScheduleState } from './ScheduleState.js';
import { dueFires, nextFire, scheduledRunId, SCHEDULE_DEFAULTS, type ScheduleSpec } from './ScheduleTrigger.js';
import type { TriggerRuns } from './TriggerRuns.js';
import type { WorkflowFiles } from './WorkflowFiles.js';

/** A schedule trigger of a workflow at the synced commit. */
interface Schedule {
  workflow: Workflow;
  source: string;
  commit: string;
  /** Its position among the workflow's triggers: its state's key. */
  index: number;
  spec: ScheduleSpec & { params?: Record<string, unknown> };
}

/** What one schedule has going: its runs still running, and a fire held back (buffer-one). */
interface ScheduleRuns {
  running: Set<StartedRun>;
  buffered?: Date;
}


export interface ScheduleFiringOptions {
  runs: TriggerRuns;
  /** Where each schedule's last fire is kept (Consul KV, or files). */
  state: KeyValue;
  now: () => number;
  logger: Logger;
  /** Whether this controller may fire now (not a follower, not deposed). */
  leading: () => boolean;
  /** Counts each scheduled time that came due by outcome (default: nowhere). */
  metrics?: Metrics;
}

/**
 * The controller's schedule triggers: which schedules the synced commit has, a timer to the
 * next scheduled time, and each time fired once under its catch-up and overlap policies.
 */
export class ScheduleFiring {
  private schedules: Schedule[] = [];
  private readonly runsOf = new Map<string, ScheduleRuns>();
  private timer: NodeJS.Timeout | undefined;
  private firing: Promise<unknown> = Promise.resolve();
  private readonly state: ScheduleState;
  private stopped = false;

  constructor(private readonly options: ScheduleFiringOptions) {
    this.state = new ScheduleState(options.state);
  }

  private now(): number {
    return this.options.now();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    await this.firing;
  }

  /** The schedule triggers of the valid workflows at the synced commit (an invalid one keeps its previous ones). */
  update(commit: string, files: readonly FileResult[], workflows: WorkflowFiles, fileOf: (workflow: string) => string | undefined): void {
    const invalid = new Set(files.filter((f) => f.workflow === undefined).map((f) => f.file));
    const kept = this.schedules.filter((s) => invalid.has(fileOf(s.workflow.metadata.name) ?? ''));
    const next: Schedule[] = [...kept];
    for (const f of files) {
      const wf = f.workflow;
      if (wf === undefined) continue;
      (wf.spec.triggers ?? []).forEach((t, index) => {
        if (t.schedule !== undefined) next.push({ workflow: wf, source: workflows.source(f.file), commit, index, spec: t.schedule });
      });
    }
    this.schedules = next;
  }


  /** Wakes at the next scheduled time of any schedule (at most a minute away, so clock jumps are caught). */
  arm(): void {
    if (this.stopped) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    const now = this.now();
    let soonest = now + 60_000;
    for (const s of this.schedules) {
      const at = nextFire(s.spec, new Date(now));
      if (at !== undefined) soonest = Math.min(soonest, at.getTime());
    }
    // A little after the time, so that it is in (lastFire, now].
    this.timer = setTimeout(() => {
      void this.fire().finally(() => this.arm());
    }, Math.max(0, soonest - now) + 50);
    this.timer.unref();
  }

  /**
   * Fires every schedule whose time has come (per its catch-up policy), each scheduled time
   * at most once: its run id is derived from the workflow and the time, and the last fire is
   * recorded with check-and-set after the run started. A schedule seen for the first time
   * starts from now. Returns the runs started.
   */
  fire(at?: Date): Promise<Array<{ workflow: string; runId: string; at: string }>> {
    if (!this.options.leading()) return Promise.resolve([]);
    const run = this.firing.then(() => this.fireDue(at ?? new Date(this.now())));
    this.firing = run.catch(() => undefined);
    return run;
  }

  private async fireDue(now: Date): Promise<Array<{ workflow: string; runId: string; at: string }>> {
    const { logger } = this.options;
    const started: Array<{ workflow: string; runId: string; at: string }> = [];
    for (const s of this.schedules) {
      const name = s.workflow.metadata.name;
      try {
        const last = await this.state.lastFire(name, s.index);
        const due = dueFires(s.spec, last?.at, now);
        if (last === undefined && due.length === 0) {
          await this.state.recordFire(name, s.index, now, 0);
          logger.info('schedule seen for the first time: it fires from its next time on', { workflow: name, trigger: s.index, cron: s.spec.cron });
          continue;
        }
        for (const at of due) {
          const runId = await this.fireOne(s, at);
          if (runId !== undefined) started.push({ workflow: name, runId, at: at.toISOString() });
        }
        if (due.length > 0 && !(await this.state.recordFire(name, s.index, due.at(-1)!, last?.index ?? 0))) {
          logger.warn('another controller recorded this schedule meanwhile; its run ids keep a time from starting twice', { workflow: name, trigger: s.index });
        }
      } catch (e) {
        this.options.metrics?.scheduleFired(name, 'failed');
        logger.error('a schedule could not fire', { workflow: name, trigger: s.index, err: e });
      }
    }
    return started;
  }

  /** One scheduled time, under the schedule's overlap policy; returns the run id if a run started. */
  private async fireOne(s: Schedule, at: Date): Promise<string | undefined> {
    const name = s.workflow.metadata.name;
    const key = `${name}#${s.index}`;
    const runs = this.runsOf.get(key) ?? { running: new Set<StartedRun>() };
    this.runsOf.set(key, runs);
    const overlap = s.spec.overlap ?? SCHEDULE_DEFAULTS.overlap;
    const log = { workflow: name, trigger: s.index, scheduledAt: at.toISOString(), overlap };
    const skipped = (): undefined => {
      this.options.metrics?.scheduleFired(name, 'skipped');
      return undefined;
    };
    if (runs.running.size > 0) {
      if (overlap === 'skip') {
        this.options.logger.info('scheduled time skipped: the previous run of this schedule is still running (overlap: skip)', log);
        return skipped();
      }
      if (overlap === 'buffer-one') {
        if (runs.buffered === undefined) this.options.logger.info('scheduled time held until the running run ends (overlap: buffer-one)', log);
        else this.options.logger.info('scheduled time dropped: one is already held (overlap: buffer-one)', log);
        runs.buffered ??= at;
        return skipped();
      }
      if (overlap === 'cancel-running') {
        for (const r of runs.running) r.engine.cancel(`schedule ${at.toISOString()} (overlap: cancel-running)`);
      }
    }
    const runId = scheduledRunId(name, at);
    const run = await this.options.runs.start(s.workflow, s.source, runId, `schedule:${at.toISOString()}`, s.commit, s.spec.params ?? {});
    if (run === undefined) return skipped();
    if (run === 'exists') {
      this.options.metrics?.scheduleFired(name, 'exists');
      return undefined;
    }
    this.options.metrics?.scheduleFired(name, 'started');
    runs.running.add(run);
    void run.done.catch(() => undefined).finally(() => {
      runs.running.delete(run);
      const held = runs.buffered;
      if (held !== undefined && runs.running.size === 0 && !this.stopped) {
        runs.buffered = undefined;
        void this.fireOne(s, held);
      }
    });
    return runId;
  }
}
