import { tmpdir } from 'node:os';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { processAlive } from './processAlive.js';
import type { AgentResult } from '../../agents/AgentType.js';
import { AgentRegistry } from '../../agents/builtinAgents.js';
import { environmentSecrets, type SecretResolver } from '../../agents/prepareAction.js';
import { AttemptRunner } from '../../agents/runAttempt.js';
import { ShellWorkerPool } from '../../agents/ShellWorkerPool.js';
import type { Bus } from '../run/Bus.js';
import type { Clock } from '../run/Clock.js';
import type { Executor, StartRequest } from '../run/Executor.js';
import { interpolateDeep } from '../run/evaluate.js';
import type { Logger } from '../run/Logger.js';
import { attemptKey } from '../run/protocol.js';

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
  /** Runs a child workflow for `workflow:` tasks. */
  runChild?: (name: string, params: Record<string, unknown>, parent: { runId: string; task: string }) => Promise<ChildRunResult>;
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
  private readonly runner: AttemptRunner;

  constructor(bus: Bus, clock: Clock, private readonly options: LocalExecutorOptions) {
    this.workers = (options.shellWorkers ?? 0) > 0 ? new ShellWorkerPool(options.shellWorkers!, join(this.scratchRoot, 'workers')) : undefined;
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
  }

  private async runChild(req: StartRequest): Promise<AgentResult> {
    const spec = req.plan.tasks.get(req.dispatch.task)!.spec.workflow!;
    if (this.options.runChild === undefined) return { ok: false, error: `cannot run child workflow '${spec.name}': no run service attached`, retryable: false };
    const params = interpolateDeep(spec.params ?? {}, req.dispatch.context);
    const child = await this.options.runChild(spec.name, params, { runId: req.runId, task: req.dispatch.instance });
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
