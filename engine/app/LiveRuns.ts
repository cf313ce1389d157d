import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { processAlive, sameProcessAlive } from '../local/processAlive.js';
import { checkRunId } from '../audit/updateRef.js';

export type ControlAction = 'approve' | 'reject' | 'cancel' | 'pause' | 'unpause';

export interface ControlCommand {
  action: ControlAction;
  task?: string;
  by: string;
  reason?: string;
}

export interface LiveRun {
  runId: string;
  workflow: string;
  pid: number;
  startedAt: string;
  /**
   * When the process started, in clock ticks since boot (/proc/<pid>/stat field 22): a PID is
   * reused after its process dies, and a file naming a reused PID must not look live.
   * Absent where /proc is not (the PID alone is checked then).
   */
  processStart?: number;
}

// Kept here for callers of the application layer; the check lives with the other process checks.
export { processStartTime } from '../local/processAlive.js';

/**
 * Runs executing on this machine, and the control channel to them: `caravan approve` or
 * `caravan cancel` from another terminal drops a command file that the running engine
 * picks up. Everything lives under .git/caravan/, never in the working tree.
 */
export class LiveRuns {
  constructor(private readonly gitdir: string) {}

  /** Where live runs are registered (one file each); Admission watches it. */
  liveDir(): string {
    return join(this.gitdir, 'caravan', 'live');
  }

  private controlDir(runId: string): string {
    return join(this.gitdir, 'caravan', 'control', checkRunId(runId));
  }

  /** Runs that have a journal here: live, killed, or finished but not (yet) written to Git. */
  async journalIds(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(join(this.gitdir, 'caravan', 'journal'));
    } catch (e) {
      // No journal directory: no run has been recorded on this machine yet.
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    return names.filter((n) => n.endsWith('.ndjson')).map((n) => n.slice(0, -'.ndjson'.length));
  }

  journalPath(runId: string): string {
    return join(this.gitdir, 'caravan', 'journal', `${checkRunId(runId)}.ndjson`);
  }

  async register(run: LiveRun): Promise<void> {
    await mkdir(this.liveDir(), { recursive: true });
    await writeFile(join(this.liveDir(), `${checkRunId(run.runId)}.json`), JSON.stringify(run) + '\n');
  }

  async unregister(runId: string): Promise<void> {
    await rm(join(this.liveDir(), `${checkRunId(runId)}.json`), { force: true });
    await rm(this.controlDir(runId), { recursive: true, force: true });
  }

  /** A run registered by a process that is still alive. */
  async get(runId: string): Promise<LiveRun | undefined> {
    const file = join(this.liveDir(), `${checkRunId(runId)}.json`);
    let run: LiveRun;
    try {
      run = JSON.parse(await readFile(file, 'utf8')) as LiveRun;
    } catch {
      return undefined;
    }
    // The same PID may be another process: the run's died and the number was given out again.
    return sameProcessAlive(run.pid, run.processStart) ? run : undefined;
  }

  async list(): Promise<LiveRun[]> {
    let names: string[];
    try {
      names = await readdir(this.liveDir());
    } catch {
      return [];
    }
    const out: LiveRun[] = [];
    for (const n of names) {
      const r = await this.get(n.replace(/\.json$/, ''));
      if (r !== undefined) out.push(r);
    }
    return out;
  }

  /**
   * A machine-wide lock (O_EXCL lock file); a lock left by a dead process is taken over.
   * Returns the release function.
   */
  async lock(name: string): Promise<() => Promise<void>> {
    const dir = join(this.gitdir, 'caravan', 'locks');
    await mkdir(dir, { recursive: true });
    const path = join(dir, `${name}.lock`);
    for (let i = 0; ; i++) {
      try {
        await writeFile(path, String(process.pid), { flag: 'wx' });
        return () => rm(path, { force: true });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        const holder = Number(await readFile(path, 'utf8').catch(() => '0'));
        if (holder > 0 && !processAlive(holder)) await rm(path, { force: true });
        await new Promise((r) => setTimeout(r, Math.min(100, 5 * (i + 1))));
      }
    }
  }

  async send(runId: string, command: ControlCommand): Promise<void> {
    await mkdir(this.controlDir(runId), { recursive: true });
    await writeFile(join(this.controlDir(runId), `${Date.now()}-${process.pid}-${Math.random().toString(16).slice(2, 8)}.json`), JSON.stringify(command));
  }

  /**
   * Hands each command sent to a run to `handle`, in the order sent; returns a stop function.
   * Woken by the control directory changing (a command arrives in milliseconds), with a look
   * every `fallbackMs` for a notice the filesystem did not deliver.
   */
  watch(runId: string, handle: (c: ControlCommand) => void, fallbackMs = 1000): () => void {
    let busy = false;
    let again = false;
    let stopped = false;
    const look = (): void => {
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      void this.take(runId).then((cmds) => cmds.forEach(handle)).finally(() => {
        busy = false;
        if (again) {
          again = false;
          look();
        }
      });
    };
    const timer = setInterval(look, fallbackMs);
    timer.unref();
    let watcher: FSWatcher | undefined;
    const dir = this.controlDir(runId);
    void mkdir(dir, { recursive: true }).then(() => {
      if (stopped) return;
      try {
        watcher = watch(dir, look);
        // A watcher that fails later (the directory removed at the end) leaves the fallback look.
        watcher.on('error', () => watcher?.close());
      } catch {
        // No inotify left (a full watch table): the fallback look still delivers, only slower.
        watcher = undefined;
      }
      // Commands sent before the watcher existed.
      look();
      // Without the directory the fallback look still reads it once a command creates it.
    }, () => undefined);
    return () => {
      stopped = true;
      clearInterval(timer);
      watcher?.close();
    };
  }

  private async take(runId: string): Promise<ControlCommand[]> {
    let names: string[];
    try {
      names = (await readdir(this.controlDir(runId))).sort();
    } catch {
      return [];
    }
    const out: ControlCommand[] = [];
    for (const n of names) {
      const path = join(this.controlDir(runId), n);
      try {
        out.push(JSON.parse(await readFile(path, 'utf8')) as ControlCommand);
      } catch {
        // A half-written file: read it next time.
        continue;
      }
      await rm(path, { force: true });
    }
    return out;
  }
}
