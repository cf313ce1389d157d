import { CaravanError } from '../errors/CaravanError.js';
import type { ContextStore } from '../run/ContextStore.js';
import { attemptKey, attemptToken, type DispatchPayload, type WorkItem } from '../run/protocol.js';
import type { RunPlan } from '../run/RunPlan.js';
import type { WorkQueue } from '../run/WorkQueue.js';
import { compensateJobId, taskJobId } from '../compile/jobId.js';
import { compensationTask } from '../compile/compileWorkflow.js';
import { parseDuration } from '../spec/parseDuration.js';
import { eventSubject, type Bus } from '../run/Bus.js';
import type { Clock } from '../run/Clock.js';
import type { Executor, StartRequest } from '../run/Executor.js';
import { eventId, type FailureKind, type RunEvent } from '../run/RunEvent.js';
import type { NomadAllocation, NomadClient, NomadEvaluation } from './NomadClient.js';
import { allocationFailure } from './allocationFailure.js';
import { placementFailure } from './placementFailure.js';
import { forgetOldest } from '../run/forgetOldest.js';
import { NomadEventStream } from './NomadEventStream.js';

const ENDED = new Set(['complete', 'failed', 'lost']);

export interface NomadExecutorOptions {
  /** NATS servers the agents in allocations report to. */
  natsServers: string[];
  /** Runs what Nomad does not: child workflows (a run of their own, on this engine) and approvals. */
  fallback: Executor;
  /** Where pooled tasks' attempts go, and their cancels; without it, pooled tasks run on the fallback. */
  workQueue?: WorkQueue;
  /** Keeps a context too large for the dispatch payload where the runner can fetch it. */
  contexts?: ContextStore;
  /**
   * Told of failures no run hears about (the composition root logs them): a cancelled child
   * Nomad would not stop, the event stream dropping, a look at Nomad that failed.
   */
  onError?: (err: Error) => void;
}

/** Nomad refuses dispatch payloads over 16 KiB; leave room for the rest of the payload. */
const PAYLOAD_LIMIT = 16 * 1024;

/** The parameterized job an attempt is a dispatch of: the task's, or its compensation's. */
function jobFor(workflow: string, d: { task: string; kind: 'task' | 'compensate' }): string {
  return d.kind === 'compensate' ? compensateJobId(workflow, d.task) : taskJobId(workflow, d.task);
}

/**
 * Runs each attempt of a task as one dispatch of its parameterized batch job. The payload
 * carries the attempt's context; the agent runner in the allocation reports over NATS. The
 * idempotency token (`attemptToken`: `<run>:<task>:<attempt>`, escaped) means a repeated
 * dispatch (after a controller restart) never starts a second child. A compensation is a
 * dispatch of the task's `-compensate` job; a pooled task (or its compensation) is an item
 * on its pool's work queue.
 * Child workflows and approval gates need no process: they go to the fallback executor, which
 * runs a child workflow as a run of its own on this engine, its tasks on Nomad as well.
 */
export class NomadExecutor implements Executor {
  private readonly children = new Map<string, string>();
  /** Attempts whose dispatch Nomad has not answered yet, and those of them cancelled meanwhile. */
  private readonly dispatching = new Set<string>();
  private readonly cancelledWhileDispatching = new Set<string>();
  /** Dispatched children whose allocation has not ended yet, by job ID. */
  private readonly watched = new Map<string, StartRequest>();
  private readonly endedEarly = new Map<string, NomadAllocation>();
  /** Children Nomad could not place yet: the reason last told (task.pending), by job ID. */
  private readonly pendingTold = new Map<string, string>();
  private readonly blockedEarly = new Map<string, NomadEvaluation>();
  private stream: NomadEventStream | undefined;
  /** Each run's plan, to find a cancelled instance's pool. */
  private readonly plans = new Map<string, RunPlan>();
  private closed = false;

  constructor(private readonly nomad: NomadClient, private readonly bus: Bus, private readonly clock: Clock, private readonly options: NomadExecutorOptions) {}

  start(req: StartRequest): void {
    this.plans.set(req.runId, req.plan);
    const task = req.plan.tasks.get(req.dispatch.task)!;
    if (task.kind === 'pool' && this.options.workQueue !== undefined) {
      const wf = req.plan.workflow.metadata.name;
      const d = req.dispatch;
      // A compensation runs in the pool too, as a task of its own.
      const spec = d.kind === 'compensate' ? compensationTask(task.spec) : task.spec;
      const timeoutMs = spec.timeout !== undefined ? parseDuration(spec.timeout) : task.timeoutMs;
      const item: WorkItem = { runId: req.runId, workflow: wf, instance: d.instance, attempt: d.attempt, task: spec, context: d.context, ...(timeoutMs !== undefined ? { timeoutMs } : {}), ...(req.plan.workflow.spec.defaults?.env !== undefined ? { defaultsEnv: req.plan.workflow.spec.defaults.env } : {}) };
      this.options.workQueue.enqueue(wf, task.spec.pool!, item).catch((e: unknown) => this.fail(req, `could not queue the task for pool ${task.spec.pool!}: ${(e as Error).message}`));
      return;
    }
    if (task.kind !== 'agent') {
      this.options.fallback.start(req);
      return;
    }
    void this.dispatch(req);
  }

  reattach(req: StartRequest): void {
    const task = req.plan.tasks.get(req.dispatch.task)!;
    if (task.kind === 'pool' && this.options.workQueue !== undefined) {
      // The item is queued, taken, or done with its report waiting on the stream. Queueing it
      // again with the same message id is dropped by JetStream within its duplicate window.
      this.start(req);
      return;
    }
    if (task.kind !== 'agent') {
      // The fallback (local) cannot adopt an attempt: it is lost with the old process.
      const lost: RunEvent = { runId: req.runId, at: this.clock.now(), type: 'task.failed', task: req.dispatch.instance, attempt: req.dispatch.attempt, error: 'lost: the engine stopped while this attempt was running', retryable: true, lost: true, failure: 'infrastructure' };
      this.bus.publish(eventSubject(req.plan.workflow.metadata.name, req.runId, req.dispatch.instance), lost, { msgId: eventId(lost), origin: 'agent' });
      return;
    }
    void (async () => {
      // A child for this run and attempt may exist already (it may even have finished while
      // no engine listened; its reports wait on the stream): watch it instead of dispatching.
      const wf = req.plan.workflow.metadata.name;
      const parent = jobFor(wf, req.dispatch);
      try {
        const children = await this.nomad.dispatchedChildren(parent);
        for (const c of children) {
          const job = await this.nomad.readJob(c);
          if (job.Meta?.['caravan_run'] === req.runId && job.Meta?.['caravan_attempt'] === String(req.dispatch.attempt)) {
            this.children.set(attemptKey(req.runId, req.dispatch.instance, req.dispatch.attempt), c);
            this.watch(req, c);
            return;
          }
        }
      } catch (e) {
        // Dispatching with the same idempotency token is still safe, but Nomad not answering is worth a line.
        this.report(e, `could not look for the dispatched job of attempt ${attemptKey(req.runId, req.dispatch.instance, req.dispatch.attempt)} under ${parent}; dispatching it again`);
      }
      await this.dispatch(req);
    })();
  }

  private async dispatch(req: StartRequest): Promise<void> {
    const wf = req.plan.workflow.metadata.name;
    const d = req.dispatch;
    const payload: DispatchPayload = { runId: req.runId, workflow: wf, instance: d.instance, attempt: d.attempt, kind: d.kind, context: d.context, nats: this.options.natsServers };
    const meta: Record<string, string> = { caravan_run: req.runId, caravan_attempt: String(d.attempt) };
    if (d.index !== undefined) meta['caravan_item'] = String(d.index);
    const key = attemptKey(req.runId, d.instance, d.attempt);
    this.dispatching.add(key);
    try {
      let bytes = new TextEncoder().encode(JSON.stringify(payload));
      if (bytes.length > PAYLOAD_LIMIT) {
        // Upstream outputs and params can outgrow the payload: the runner fetches them.
        if (this.options.contexts === undefined) throw new CaravanError('INTERNAL', `the attempt's context is ${bytes.length} bytes, over Nomad's 16 KiB dispatch payload, and no context store is configured`);
        await this.options.contexts.put(key, JSON.stringify(d.context));
        const byRef: DispatchPayload = { ...payload, contextRef: key };
        delete byRef.context;
        bytes = new TextEncoder().encode(JSON.stringify(byRef));
      }
      const r = await this.nomad.dispatchJob(jobFor(wf, d), bytes, meta, attemptToken(req.runId, d.instance, d.attempt));
      this.children.set(key, r.DispatchedJobID);
      this.watch(req, r.DispatchedJobID);
      // Cancelled before Nomad answered: the child exists now, so stop it as cancel() would have.
      if (this.cancelledWhileDispatching.delete(key)) this.stop(r.DispatchedJobID, key);
    } catch (e) {
      this.cancelledWhileDispatching.delete(key);
      this.fail(req, `dispatch to Nomad failed: ${(e as Error).message}`);
    } finally {
      this.dispatching.delete(key);
    }
  }

  private fail(req: StartRequest, error: string, failure: FailureKind = 'infrastructure'): void {
    const wf = req.plan.workflow.metadata.name;
    const failed: RunEvent = { runId: req.runId, at: this.clock.now(), type: 'task.failed', task: req.dispatch.instance, attempt: req.dispatch.attempt, error, retryable: true, failure };
    // Same id as the agent's own failure report: if both arrive, JetStream keeps one.
    this.bus.publish(eventSubject(wf, req.runId, req.dispatch.instance), failed, { msgId: eventId(failed), origin: 'agent' });
  }

  /**
   * Watches the child's allocation, through Nomad's event stream (one connection for all
   * attempts), for failures the runner inside cannot report: it never started (driver
   * failure, bad config), or it was killed, OOM killed or lost with its node.
   */
  private watch(req: StartRequest, child: string): void {
    if (this.closed) return;
    this.stream ??= new NomadEventStream(this.nomad, {
      topics: ['Allocation:*', 'Evaluation:*'],
      onEvent: (e) => {
        const a = e.Payload['Allocation'] as NomadAllocation | undefined;
        if (a !== undefined) this.onAllocation(a);
        const ev = e.Payload['Evaluation'] as NomadEvaluation | undefined;
        if (ev !== undefined) this.onEvaluation(ev);
      },
      // Nomad buffers few events, so a (re)connected stream may have missed an ending: read
      // the watched children's allocations once.
      onConnected: () => void this.catchUp(),
      // The stream reconnects by itself, with backoff; each failure is still worth a line.
      onError: (e) => this.report(e, 'Nomad\'s event stream failed; reconnecting'),
    });
    this.watched.set(child, req);
    const blocked = this.blockedEarly.get(child);
    if (blocked !== undefined) {
      this.blockedEarly.delete(child);
      this.onEvaluation(blocked);
    }
    const early = this.endedEarly.get(child);
    if (early !== undefined) {
      this.endedEarly.delete(child);
      this.settle(child, early);
    }
  }

  /**
   * An evaluation that could not place a child (no node with room, or none that fits its
   * constraints) leaves it blocked until Nomad finds room: the run is told why, as the
   * attempt's task.pending, instead of showing a task queued without a word.
   */
  private onEvaluation(ev: NomadEvaluation): void {
    const reason = placementFailure(ev);
    if (reason === undefined) return;
    const req = this.watched.get(ev.JobID);
    if (req === undefined) {
      if (ev.JobID.includes('/dispatch-')) {
        this.blockedEarly.set(ev.JobID, ev);
        forgetOldest(this.blockedEarly, 1000);
      }
      return;
    }
    if (this.pendingTold.get(ev.JobID) === reason) return;
    this.pendingTold.set(ev.JobID, reason);
    const wf = req.plan.workflow.metadata.name;
    const pending: RunEvent = { runId: req.runId, at: this.clock.now(), type: 'task.pending', task: req.dispatch.instance, attempt: req.dispatch.attempt, reason };
    this.bus.publish(eventSubject(wf, req.runId, req.dispatch.instance), pending, { msgId: eventId(pending), origin: 'agent' });
  }

  private onAllocation(a: NomadAllocation): void {
    if (!ENDED.has(a.ClientStatus)) return;
    if (this.watched.has(a.JobID)) {
      this.settle(a.JobID, a);
      return;
    }
    // The event can beat the dispatch's answer; keep it a while for watch().
    if (a.JobID.includes('/dispatch-')) {
      this.endedEarly.set(a.JobID, a);
      forgetOldest(this.endedEarly, 1000);
    }
  }

  private settle(child: string, a: NomadAllocation): void {
    const req = this.watched.get(child);
    if (req === undefined) return;
    this.watched.delete(child);
    this.pendingTold.delete(child);
    const failure = allocationFailure(a);
    if (failure !== undefined) this.fail(req, failure.message, failure.byTask === true ? 'exit' : 'infrastructure');
  }

  private async catchUp(): Promise<void> {
    for (const child of [...this.watched.keys()]) {
      try {
        const allocations = await this.nomad.jobAllocations(child);
        const done = allocations.find((a) => ENDED.has(a.ClientStatus));
        if (done !== undefined) this.settle(child, done);
        else if (allocations.length === 0) {
          // Not placed yet: say why, if Nomad says it cannot.
          for (const ev of await this.nomad.jobEvaluations(child)) this.onEvaluation(ev);
        }
      } catch (e) {
        // The next connection catches up again.
        this.report(e, `could not read the allocations of ${child}`);
      }
    }
  }

  cancel(runId: string, instance: string, attempt: number): void {
    const key = attemptKey(runId, instance, attempt);
    const child = this.children.get(key);
    if (child === undefined && this.dispatching.has(key)) {
      // The dispatch is on its way: its child is stopped as soon as Nomad names it.
      this.cancelledWhileDispatching.add(key);
      return;
    }
    if (child === undefined) {
      const plan = this.plans.get(runId);
      // Instance keys: `task`, `task[i]`, and `<either>:compensate` for a compensation.
      const task = plan?.tasks.get(instance.replace(/:compensate$/, '').replace(/\[\d+\]$/, ''));
      if (plan !== undefined && task?.kind === 'pool' && task.spec.pool !== undefined && this.options.workQueue !== undefined) {
        this.options.workQueue.cancel(plan.workflow.metadata.name, task.spec.pool, { runId, instance, attempt });
        return;
      }
      this.options.fallback.cancel(runId, instance, attempt);
      return;
    }
    this.stop(child, key);
  }

  private stop(child: string, key: string): void {
    // The run has moved on either way; a child left running costs the cluster, so say so.
    void this.nomad.stopJob(child).catch((e: unknown) => this.report(e, `could not stop ${child} (cancelled attempt ${key})`));
  }

  /** Hands a failure nobody waits for to onError, keeping the Nomad client's code (API error or unreachable). */
  private report(e: unknown, what: string): void {
    const code = e instanceof CaravanError ? e.code : 'NOMAD_API';
    this.options.onError?.(new CaravanError(code, `${what}: ${(e as Error).message}`, { cause: e }));
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.stream?.close();
    await this.options.fallback.close();
  }
}
