import { maskSecrets } from '../../agents/maskSecrets.js';
import { mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentResult } from '../../agents/AgentType.js';
import { AgentRegistry } from '../../agents/builtinAgents.js';
import { ShellWorkerPool } from '../../agents/ShellWorkerPool.js';
import { environmentSecrets, prepareAction, type SecretResolver } from '../../agents/prepareAction.js';
import { eventSubject, type Bus } from '../run/Bus.js';
import type { Clock } from '../run/Clock.js';
import type { Executor, StartRequest } from '../run/Executor.js';
import { interpolateDeep } from '../run/evaluate.js';
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
  heartbeatMs?: number;
  /** Long-lived shells that run commands (0: spawn every command from Node). */
  shellWorkers?: number;
  /** Runs a child workflow for `workflow:` tasks. */
  runChild?: (name: string, params: Record<string, unknown>, parent: { runId: string; task: string }) => Promise<ChildRunResult>;
}

/**
 * The embedded executor: each attempt runs in this process through the agent registry
 * (shell commands as child processes in their own process group). It reports on the bus
 * exactly as an agent inside a Nomad allocation would.
 */
export class LocalExecutor implements Executor {
  private readonly running = new Map<string, AbortController>();
  /** Attempts that report heartbeats, and the one timer that sends them all. */
  private readonly beating = new Map<string, () => void>();
  private beat: ReturnType<Clock['setTimer']> | undefined;
  private readonly registry: AgentRegistry;
  private readonly scratchRoot = join(tmpdir(), `caravan-${process.pid}-${Math.random().toString(16).slice(2, 8)}`);
  private readonly workers: ShellWorkerPool | undefined;

  constructor(private readonly bus: Bus, private readonly clock: Clock, private readonly options: LocalExecutorOptions) {
    this.registry = options.registry ?? new AgentRegistry();
    this.workers = (options.shellWorkers ?? 0) > 0 ? new ShellWorkerPool(options.shellWorkers!, join(this.scratchRoot, 'workers')) : undefined;
  }

  start(req: StartRequest): void {
    const key = `${req.runId}:${req.dispatch.instance}:${req.dispatch.attempt}`;
    const abort = new AbortController();
    this.running.set(key, abort);
    void this.execute(req, abort.signal).finally(() => this.running.delete(key));
  }

  cancel(runId: string, instance: string, attempt: number): void {
    this.running.get(`${runId}:${instance}:${attempt}`)?.abort();
  }

  async close(): Promise<void> {
    for (const a of this.running.values()) a.abort();
    if (this.beat !== undefined) this.clock.clearTimer(this.beat);
    this.beat = undefined;
    this.workers?.close();
    await rm(this.scratchRoot, { recursive: true, force: true });
  }

  /** One timer for every running attempt, rather than one each: cheap at 10,000 attempts. */
  private armHeartbeat(): void {
    if (this.beat !== undefined) return;
    this.beat = this.clock.setTimer(() => {
      this.beat = undefined;
      for (const send of this.beating.values()) send();
      if (this.beating.size > 0) this.armHeartbeat();
    }, this.options.heartbeatMs ?? 5000);
  }

  private publish(req: StartRequest, e: RunEvent, subject = eventSubject(req.plan.workflow.metadata.name, req.runId, req.dispatch.instance)): void {
    this.bus.publish(subject, e, { msgId: eventId(e), origin: 'agent' });
  }

  private async execute(req: StartRequest, signal: AbortSignal): Promise<void> {
    const { dispatch, plan, runId } = req;
    const task = plan.tasks.get(dispatch.task)!;
    const base = { runId, task: dispatch.instance, attempt: dispatch.attempt };
    const subject = eventSubject(plan.workflow.metadata.name, runId, dispatch.instance);
    this.publish(req, { ...base, type: 'task.started', at: this.clock.now() }, subject);
    const maxLines = this.options.maxLogLines ?? 1000;
    let logged = 0;
    let dropped = 0;
    let secrets: string[] = [];
    const log = (stream: 'stdout' | 'stderr', line: string): void => {
      if (logged >= maxLines) {
        dropped++;
        return;
      }
      logged++;
      this.publish(req, { ...base, type: 'task.log', at: this.clock.now() + logged / 1000, stream, line: maskSecrets(line, secrets) });
    };
    const beatKey = `${runId}:${dispatch.instance}:${dispatch.attempt}`;
    this.beating.set(beatKey, () => this.publish(req, { ...base, type: 'task.heartbeat', at: this.clock.now() }));
    this.armHeartbeat();
    let result: AgentResult;
    let scratch: string | undefined;
    try {
      if (task.kind === 'workflow' && dispatch.kind === 'task') {
        result = await this.runChild(req);
      } else {
        const defaults = plan.workflow.spec.defaults ?? {};
        const prepared = prepareAction(task.spec, dispatch.kind, dispatch.context, { ...(defaults.env !== undefined ? { env: defaults.env } : {}), ...(task.timeoutMs !== undefined ? { timeoutMs: task.timeoutMs } : {}) }, this.options.secrets ?? environmentSecrets);
        secrets = prepared.secrets;
        const agent = this.registry.get(prepared.action.agent);
        if (agent === undefined) {
          result = { ok: false, error: `unknown agent type '${prepared.action.agent}' (known: ${this.registry.names().join(', ')})`, retryable: false };
        } else {
          if (agent.name === 'shell' && this.workers === undefined) {
            scratch = join(this.scratchRoot, `${runId}-${dispatch.instance.replace(/[^A-Za-z0-9_-]/g, '_')}-${dispatch.attempt}`);
            await mkdir(scratch, { recursive: true });
          }
          result = await agent.run(prepared.action, { log, signal, scratchDir: scratch ?? this.scratchRoot, baseDir: this.options.baseDir, ...(this.workers !== undefined ? { workers: this.workers } : {}) });
        }
      }
    } catch (e) {
      result = { ok: false, error: e instanceof Error ? e.message : String(e), retryable: false };
    } finally {
      this.beating.delete(beatKey);
    }
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
    if (dropped > 0) this.publish(req, { ...base, type: 'task.log', at: this.clock.now() + (logged + 1) / 1000, stream: 'stderr', line: `[caravan] ${dropped} more log lines were not kept (limit ${maxLines} per attempt)` });
    if (signal.aborted) return; // the engine already recorded the cancellation
    const at = this.clock.now();
    if (result.ok) this.publish(req, { ...base, type: 'task.succeeded', at, outputs: result.outputs, ...(result.exitCode !== undefined ? { exitCode: result.exitCode } : {}) }, subject);
    else this.publish(req, { ...base, type: 'task.failed', at, error: result.error, retryable: result.retryable, ...(result.exitCode !== undefined ? { exitCode: result.exitCode } : {}) }, subject);
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
