import { tmpdir } from 'node:os';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { processAlive, processStartTime, sameProcessAlive } from './processAlive.js';
import type { AgentResult } from '../../agents/AgentType.js';
import { AgentRegistry } from '../../agents/builtinAgents.js';
import { environmentSecrets, type SecretResolver } from '../../agents/prepareAction.js';
import { AttemptRunner, type Attempt } from '../../agents/runAttempt.js';
import { findOrphanJob, lastJobOf, orphanJobStatus, ShellWorkerPool, type OrphanJob } from '../../agents/ShellWorkerPool.js';
import { adoptShellJob, type OrphanWorker } from '../../agents/shellAgent.js';
import type { Bus } from '../run/Bus.js';
import type { Clock } from '../run/Clock.js';
import type { Executor, StartRequest } from '../run/Executor.js';
import { interpolateDeep } from '../run/evaluate.js';
import type { Logger } from '../run/Logger.js';
import { attemptKey, eventSubject } from '../run/protocol.js';
import { eventId, type RunEvent } from '../run/RunEvent.js';

export interface ChildRunResult {
  runId: string;
  status: string;
  outputs: Record<string, string>;
}

export interface LocalExecutorOptions {
  /** Working directory of tasks (the repository root). */
  baseDir: string;
  registry?: AgentRegistry;
  secrets?: SecretResolver;
  /** Log lines kept per attempt; later lines are counted, not kept. */
  maxLogLines?: number;
  /** Bytes of log lines kept per attempt; later lines are counted, not kept. */
  maxLogBytes?: number;
  heartbeatMs?: number;
  /** Long-lived shells that run commands (0: spawn every command from Node). */
  shellWorkers?: number;
  /** Where failures that do not fail an attempt go (a scratch directory that would not go away). */
  logger?: Logger;
  /**
   * A directory that outlives the process (the repository's .git/caravan): the shell
   * workers keep their jobs' scripts, output and exit status there, so that after this
   * process is killed, the next one can adopt what its attempts did (reattach) instead of
   * running them again. Without it, workers live in the scratch directory and an attempt in
   * flight when the process dies is lost.
   */
  stateDir?: string;
  /** Whether a run still waits to be recovered: what dead workers left for it is kept until then. */
  runAwaitsRecovery?: (runId: string) => boolean;
  /** Runs a child workflow for `workflow:` tasks. */
  runChild?: (name: string, params: Record<string, unknown>, parent: { runId: string; task: string }, how: { wait: boolean }) => Promise<ChildRunResult>;
}

/**
 * The embedded executor: each attempt runs in this process through the attempt runner (shell
 * commands as child processes in their own process group). It reports on the bus exactly as
 * an agent inside a Nomad allocation would, through the same runner.
 */
export class LocalExecutor implements Executor {
  private readonly running = new Map<string, AbortController>();
  private readonly scratchRoot = join(tmpdir(), `caravan-${process.pid}-${Math.random().toString(16).slice(2, 8)}`);
  private readonly workers: ShellWorkerPool | undefined;
  /** This process's worker directories (see stateDir). */
  private readonly workersRoot: string;
  private readonly runner: AttemptRunner;

  constructor(private readonly bus: Bus, private readonly clock: Clock, private readonly options: LocalExecutorOptions) {
    this.workersRoot = options.stateDir !== undefined ? join(options.stateDir, 'workers', basename(this.scratchRoot)) : join(this.scratchRoot, 'workers');
    this.workers = (options.shellWorkers ?? 0) > 0 ? new ShellWorkerPool(options.shellWorkers!, this.workersRoot, (dir, pid) => notePid(join(dir, 'pid'), pid)) : undefined;
    if (this.workers !== undefined && options.stateDir !== undefined) {
      mkdirSync(this.workersRoot, { recursive: true, mode: 0o700 });
      notePid(join(this.workersRoot, 'owner'), process.pid);
    }
    this.runner = new AttemptRunner({
      events: bus,
      clock,
      registry: options.registry ?? new AgentRegistry(),
      secrets: options.secrets ?? environmentSecrets,
      scratchRoot: this.scratchRoot,
      baseDir: options.baseDir,
      workers: this.workers,
      heartbeatMs: options.heartbeatMs,
      maxLogLines: options.maxLogLines,
      maxLogBytes: options.maxLogBytes,
      logger: options.logger,
      // The engine records a cancel itself, and a closed executor's attempts died with it.
      unreported: () => true,
    });
  }

  start(req: StartRequest): void {
    this.launch(req, undefined);
  }

  /**
   * Adopts an attempt that a dead process of this repository started in a shell worker: if
   * the worker still runs it, it is waited for; if it ended, its end is reported; if no
   * worker has it (it never started, or it was not a shell job) or its worker died without an
   * exit status, it is reported lost and the engine starts it again.
   */
  reattach(req: StartRequest): void {
    const key = attemptKey(req.runId, req.dispatch.instance, req.dispatch.attempt);
    const orphan = this.options.stateDir !== undefined ? findOrphan(join(this.options.stateDir, 'workers'), this.workersRoot, key) : undefined;
    // A worker that died with no exit status took the attempt with it: lost, like one never found.
    if (orphan === undefined || (orphanJobStatus(orphan.job) === undefined && !orphan.worker.alive())) {
      const lost: RunEvent = { runId: req.runId, at: this.clock.now(), type: 'task.failed', task: req.dispatch.instance, attempt: req.dispatch.attempt, error: 'lost: the engine stopped while this attempt was running', retryable: true, lost: true, failure: 'infrastructure' };
      this.bus.publish(eventSubject(req.plan.workflow.metadata.name, req.runId, req.dispatch.instance), lost, { msgId: eventId(lost), origin: 'agent' });
      return;
    }
    this.options.logger?.info('adopting an attempt a dead process left running or finished', { workflow: req.plan.workflow.metadata.name, run: req.runId, task: req.dispatch.instance, attempt: req.dispatch.attempt, dir: orphan.job.dir });
    this.launch(req, (action, io) => adoptShellJob(orphan.job, orphan.worker, action, io, req.logged));
  }

  private launch(req: StartRequest, adopt: Attempt['adopt']): void {
    const { dispatch, plan, runId } = req;
    const key = attemptKey(runId, dispatch.instance, dispatch.attempt);
    const abort = new AbortController();
    this.running.set(key, abort);
    const task = plan.tasks.get(dispatch.task)!;
    void this.runner.run({
      runId,
      workflow: plan.workflow.metadata.name,
      instance: dispatch.instance,
      attempt: dispatch.attempt,
      kind: dispatch.kind,
      task: task.spec,
      context: dispatch.context,
      defaultsEnv: plan.workflow.spec.defaults?.env,
      timeoutMs: task.timeoutMs,
      perform: task.kind === 'workflow' && dispatch.kind === 'task' ? () => this.runChild(req) : undefined,
      adopt,
    }, abort.signal).finally(() => this.running.delete(key));
  }

  cancel(runId: string, instance: string, attempt: number): void {
    this.running.get(attemptKey(runId, instance, attempt))?.abort();
  }

  async close(): Promise<void> {
    for (const a of this.running.values()) a.abort();
    this.runner.close();
    this.workers?.close();
    await rm(this.scratchRoot, { recursive: true, force: true });
    // Closed, this process's attempts are over (killed): nothing is left to adopt.
    await rm(this.workersRoot, { recursive: true, force: true });
    // What dead processes left for runs that were recovered since is not needed any more.
    if (this.options.stateDir !== undefined && this.options.runAwaitsRecovery !== undefined) {
      await sweepOrphanWorkers(this.options.stateDir, this.options.runAwaitsRecovery).catch((err: unknown) => this.options.logger?.warn('could not remove what dead shell workers left', { dir: this.options.stateDir, err }));
    }
  }

  private async runChild(req: StartRequest): Promise<AgentResult> {
    const spec = req.plan.tasks.get(req.dispatch.task)!.spec.workflow!;
    if (this.options.runChild === undefined) return { ok: false, error: `cannot run child workflow '${spec.name}': no run service attached`, retryable: false };
    const params = interpolateDeep(spec.params ?? {}, req.dispatch.context);
    const wait = spec.wait !== false;
    const child = await this.options.runChild(spec.name, params, { runId: req.runId, task: req.dispatch.instance }, { wait });
    // Without waiting, the task is done once the child run has started and is recorded.
    if (!wait && child.status === 'started') return { ok: true, outputs: { runId: child.runId, status: child.status } };
    if (child.status !== 'succeeded') return { ok: false, error: `child run ${child.runId} of '${spec.name}' ${child.status}`, retryable: false };
    return { ok: true, outputs: { ...child.outputs, runId: child.runId, status: child.status } };
  }
}

/** A local executor's scratch directory: `caravan-<pid>-<6 hex digits>` in the system's temp dir. */
const SCRATCH_NAME = /^caravan-(\d+)-[0-9a-f]{1,6}$/;

/**
 * Removes the scratch directories of local executors whose process is gone: a `caravan run`
 * killed with SIGKILL leaves its attempts' directories behind (one of 581 MB was seen).
 * Called when a process opens its executor, so `caravan run` and `caravan recover` clean up
 * after the dead. Returns the directories removed.
 */
export async function sweepScratch(dir: string = tmpdir()): Promise<string[]> {
  const removed: string[] = [];
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    // No temp dir to read: nothing can have been left there.
    return removed;
  }
  for (const name of names) {
    const m = SCRATCH_NAME.exec(name);
    if (m === null) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || processAlive(pid)) continue;
    await rm(join(dir, name), { recursive: true, force: true });
    removed.push(join(dir, name));
  }
  return removed;
}

/** Notes a process as `<pid> <start time>`, so a later reader can tell it from a reused PID. */
function notePid(path: string, pid: number): void {
  writeFileSync(path, `${pid} ${processStartTime(pid) ?? ''}\n`);
}

/** Whether the process noted in a file (see notePid) is still alive; false when none is noted. */
function notedAlive(path: string): boolean {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    // Nothing noted: the directory was being made when its process died.
    return false;
  }
  const [pid, start] = text.trim().split(' ');
  if (pid === undefined || !/^\d+$/.test(pid)) return false;
  return sameProcessAlive(Number(pid), start !== undefined && start !== '' ? Number(start) : undefined);
}

/** The dead processes' worker pools (their owner is gone), excluding this process's own. */
async function deadPools(root: string, own?: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(root);
  } catch {
    // No worker has ever run with this state directory.
    return [];
  }
  return names.map((n) => join(root, n)).filter((p) => p !== own && !notedAlive(join(p, 'owner')));
}

function findOrphan(root: string, own: string, key: string): { job: OrphanJob; worker: OrphanWorker } | undefined {
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    // No worker has ever run with this state directory.
    return undefined;
  }
  for (const name of names) {
    const pool = join(root, name);
    if (pool === own || notedAlive(join(pool, 'owner'))) continue;
    const job = findOrphanJob(pool, key);
    if (job === undefined) continue;
    const pidFile = join(job.dir, 'pid');
    const worker: OrphanWorker = {
      alive: () => notedAlive(pidFile),
      signal: (sig) => {
        const pid = Number(readFileSync(pidFile, 'utf8').split(' ')[0]);
        // The worker leads its own process group: the job and everything it started.
        if (notedAlive(pidFile)) {
          try {
            process.kill(-pid, sig);
          } catch {
            // Gone between the check and the signal.
          }
        }
      },
    };
    return { job, worker };
  }
  return undefined;
}

/**
 * Removes what dead processes' shell workers left in a state directory once nothing can
 * need it: a worker whose job belongs to a run still awaiting recovery (`keep`), or whose
 * worker process still runs the job, stays; the rest goes. Returns the directories removed.
 */
export async function sweepOrphanWorkers(stateDir: string, keep: (runId: string) => boolean): Promise<string[]> {
  const removed: string[] = [];
  for (const pool of await deadPools(join(stateDir, 'workers'))) {
    let kept = 0;
    for (const name of await readdir(pool).catch(() => [] as string[])) {
      const dir = join(pool, name);
      if (name === 'owner') continue;
      const job = lastJobOf(dir);
      // A worker still alive after its job ended is on its way out (its pipe is gone).
      const running = job !== undefined && !job.ended && notedAlive(join(dir, 'pid'));
      if (running || (job !== undefined && keep(job.label.slice(0, job.label.indexOf(':'))))) {
        kept++;
        continue;
      }
      await rm(dir, { recursive: true, force: true });
      removed.push(dir);
    }
    if (kept === 0) {
      await rm(pool, { recursive: true, force: true });
      removed.push(pool);
    }
  }
  return removed;
}
