import { watch, type FSWatcher } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { CaravanError } from '../errors/CaravanError.js';
import type { Workflow } from '../spec/Workflow.js';
import type { LiveRuns } from './LiveRuns.js';

/** How long a waiting run goes without a look when no change notice arrives (a missed fs event). */
const FALLBACK_MS = 2000;

/**
 * Applies a workflow's concurrency policy against the runs live on this machine: `queue`
 * waits for a slot, `cancel-running` cancels the oldest runs to make room, `skip` refuses.
 * A lock file makes the check and the registration of the new run one step, so two
 * `caravan run` started together cannot both take the last slot. A waiting run is woken by
 * the live-run directory changing (a run ending unregisters there), not by a polling loop;
 * a slow fallback look covers a notice the filesystem did not deliver.
 */
export class Admission {
  constructor(private readonly live: LiveRuns) {}

  /**
   * Resolves, holding the workflow's admission lock, once the run may start; the caller
   * registers the run and then calls the returned release. `onWaiting` is told once when the
   * run has to wait.
   */
  async admit(workflow: Workflow, onWaiting?: (message: string) => void): Promise<() => Promise<void>> {
    const c = workflow.spec.concurrency;
    const limit = c?.limit;
    if (limit === undefined) return async () => undefined;
    const name = workflow.metadata.name;
    const policy = c?.policy ?? 'queue';
    let told = false;
    // Watched only once the run has to wait: most runs are admitted at the first look.
    let changed: { next: () => Promise<void>; close: () => void } | undefined;
    try {
      for (;;) {
        const release = await this.live.lock(`workflow-${name}`);
        const active = (await this.live.list()).filter((r) => r.workflow === name).sort((a, b) => (a.startedAt < b.startedAt ? -1 : 1));
        if (active.length < limit) return release;
        await release();
        if (policy === 'skip') {
          throw new CaravanError('RUN_SKIPPED', `not started: ${active.length} run${active.length === 1 ? '' : 's'} of ${name} already running (concurrency limit ${limit}, policy skip): ${active.map((r) => r.runId).join(', ')}`, { data: { workflow: name, running: active.map((r) => r.runId) } });
        }
        if (policy === 'cancel-running') {
          for (const r of active.slice(0, active.length - limit + 1)) {
            await this.live.send(r.runId, { action: 'cancel', by: 'concurrency', reason: `a newer run of ${name} replaces it (policy cancel-running)` });
          }
        }
        if (!told) {
          onWaiting?.(`waiting: ${active.length} run${active.length === 1 ? '' : 's'} of ${name} running (concurrency limit ${limit}, policy ${policy})`);
          told = true;
        }
        changed ??= await this.changeNotices();
        await changed.next();
      }
    } finally {
      changed?.close();
    }
  }

  /** Notices of the live-run directory changing; next() resolves on the next one (or the fallback). */
  private async changeNotices(): Promise<{ next: () => Promise<void>; close: () => void }> {
    await mkdir(this.live.liveDir(), { recursive: true });
    let wake: (() => void) | undefined;
    let dirty = false;
    let watcher: FSWatcher | undefined;
    try {
      watcher = watch(this.live.liveDir(), () => {
        dirty = true;
        wake?.();
      });
      // A watcher that fails later (directory removed) leaves the fallback look in charge.
      watcher.on('error', () => watcher?.close());
    } catch {
      // No inotify here (a full watch table): the fallback look alone still admits the run.
      watcher = undefined;
    }
    return {
      next: () => {
        if (dirty) {
          dirty = false;
          return Promise.resolve();
        }
        return new Promise<void>((resolve) => {
          const timer = setTimeout(done, FALLBACK_MS);
          function done(): void {
            clearTimeout(timer);
            wake = undefined;
            dirty = false;
            resolve();
          }
          wake = done;
        });
      },
      close: () => watcher?.close(),
    };
  }
}
