import { createHash } from 'node:crypto';
import { newRunId } from '../audit/updateRef.js';
import { CaravanError } from '../errors/CaravanError.js';
import type { Logger } from '../run/Logger.js';
import type { KeyValue } from '../run/Registry.js';
import type { FileResult } from '../spec/validateWorkflows.js';
import type { Workflow } from '../spec/Workflow.js';
import type { TriggerRuns } from './TriggerRuns.js';
import type { WorkflowFiles } from './WorkflowFiles.js';

/** A message that asks for a run (see engine/nats/EventTriggerSource.ts). */
export interface TriggerMessage {
  workflow: string;
  subject: string;
  /** The publisher's message id (Nats-Msg-Id), else the stream sequence. */
  id: string;
  params: Record<string, unknown>;
  ack(): Promise<void>;
  term(reason: string): Promise<void>;
  nak(delayMs?: number): Promise<void>;
}

/** Where event triggers' messages come from, once opened for the current subjects. */
export interface TriggerMessages {
  events(): AsyncIterable<TriggerMessage>;
  updateSubjects(workflows: Workflow[]): Promise<void>;
  close(): Promise<void>;
}

export interface EventFiringOptions {
  runs: TriggerRuns;
  /** Where each message's run id is kept (Consul KV, or files). */
  kv: KeyValue;
  now: () => number;
  logger: Logger;
  /** Opens the message source for these workflows (NATS). */
  open: (workflows: Workflow[]) => Promise<TriggerMessages>;
}

/**
 * The controller's event triggers: the message source kept on the synced commit's
 * workflows, and each message turned into at most one run.
 */
export class EventFiring {
  /** The valid workflows at the synced commit, by name (what event triggers start). */
  private readonly current = new Map<string, { workflow: Workflow; source: string; commit: string }>();
  private messages: TriggerMessages | undefined;
  private consuming: Promise<void> | undefined;
  private stopped = false;
  /** Messages refused (bad params, unknown workflow): counted for operators. */
  refusedEvents = 0;

  constructor(private readonly options: EventFiringOptions) {}

  async stop(): Promise<void> {
    this.stopped = true;
    await this.messages?.close().catch((e: unknown) => this.options.logger.error('closing the event trigger source failed', { err: e }));
    await this.consuming;
  }

  /**
   * Keeps the event trigger source on the valid workflows of the synced commit (an invalid
   * one keeps its previous version), opening it on the first sync, and consumes it.
   */
  async update(commit: string, files: readonly FileResult[], workflows: WorkflowFiles, fileOf: (workflow: string) => string | undefined): Promise<void> {
    const invalid = new Set(files.filter((f) => f.workflow === undefined).map((f) => f.file));
    for (const [name] of [...this.current]) if (!invalid.has(fileOf(name) ?? '')) this.current.delete(name);
    for (const f of files) if (f.workflow !== undefined) this.current.set(f.workflow.metadata.name, { workflow: f.workflow, source: workflows.source(f.file), commit });
    const current = [...this.current.values()].map((c) => c.workflow);
    if (this.messages === undefined) {
      this.messages = await this.options.open(current);
      this.consuming = this.consume(this.messages);
    } else await this.messages.updateSubjects(current);
  }

  private async consume(source: TriggerMessages): Promise<void> {
    try {
      for await (const m of source.events()) {
        if (this.stopped) {
          await m.nak();
          continue;
        }
        await this.onMessage(m);
      }
    } catch (e) {
      if (!this.stopped) this.options.logger.error('the event trigger source failed; event triggers are not served until the controller restarts', { err: e });
    }
  }

  /**
   * One event message: a run of its workflow with the payload's params. The message id is
   * recorded (check-and-set) with the run id before the run starts, so a redelivered message
   * finds its run and starts nothing new; a payload whose params do not fit the workflow is
   * refused for good (terminated, logged with the reason, counted), never half-started.
   */
  private async onMessage(m: TriggerMessage): Promise<void> {
    const { logger, runs } = this.options;
    const log = { workflow: m.workflow, subject: m.subject, messageId: m.id.slice(0, 128) };
    const target = this.current.get(m.workflow);
    if (target === undefined) {
      this.refusedEvents++;
      await m.term('no such workflow at the synced commit');
      logger.warn('event for a workflow that is not there: refused', log);
      return;
    }
    const key = `caravan/events/${m.workflow}/${createHash('sha256').update(m.id).digest('hex').slice(0, 40)}`;
    try {
      const seen = await this.options.kv.getKey(key);
      let runId: string;
      if (seen !== undefined) {
        runId = seen.value;
        if (await runs.exists(runId)) {
          await m.ack();
          logger.info('event seen before: its run exists, nothing started', { ...log, run: runId });
          return;
        }
      } else {
        runId = newRunId(new Date(this.options.now()));
        if (!(await this.options.kv.putKey(key, runId, { cas: 0 }))) {
          await m.nak(1000);
          return;
        }
      }
      try {
        await runs.startDirect({ workflow: target.workflow, source: target.source }, m.params, { trigger: `event:${m.subject}`, commit: target.commit, runId });
        logger.info('run started by an event', { ...log, run: runId });
        await m.ack();
      } catch (e) {
        if (e instanceof CaravanError && e.code === 'PARAM_INVALID') {
          this.refusedEvents++;
          await this.options.kv.deleteKey(key);
          // Names only: the values are the publisher's, and may be secrets.
          const names = (Array.isArray(e.data?.['params']) ? (e.data['params'] as string[]) : []).map((n) => n.slice(0, 64));
          const reason = `params that do not fit the workflow's declarations: ${names.join(', ') || 'unknown'}`;
          await m.term(reason);
          logger.warn('event refused: its params do not fit the workflow', { ...log, reason });
          return;
        }
        if (e instanceof CaravanError && e.code === 'RUN_SKIPPED') {
          await m.ack();
          logger.info('event run skipped', { ...log, reason: e.message });
          return;
        }
        throw e;
      }
    } catch (e) {
      // Not the message's fault (the audit branch, the registry): it comes back later.
      logger.error('an event could not start its run; it will be delivered again', { ...log, err: e });
      await m.nak(5000).catch(() => undefined);
    }
  }
}
