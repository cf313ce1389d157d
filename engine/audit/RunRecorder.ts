import { appendFileSync, closeSync, fstatSync, fsyncSync, ftruncateSync, openSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { CaravanError } from '../errors/CaravanError.js';
import { noopLogger, type Logger } from '../run/Logger.js';
import { noopMetrics, type Metrics } from '../run/Metrics.js';
import type { RunEvent } from '../run/RunEvent.js';
import { snapshotRun, type RunState } from '../run/RunState.js';
import type { GitAuditStore } from './GitAuditStore.js';
import type { WorkflowDirty } from './workflowDirty.js';

export interface RecorderOptions {
  workflow: string;
  runId: string;
  workflowSource?: string;
  workflowCommit?: string;
  /**
   * The workflow as run is not the one at workflowCommit: every audit commit carries
   * `Workflow-Dirty: true`, run.json `workflowDirty` and `workflowSha256`, and the note says so.
   */
  workflowDirty?: WorkflowDirty;
  /** Append-only local record of every event, for resuming between checkpoints. */
  journalPath: string;
  /** Checkpoint after this many new events... */
  everyEvents?: number;
  /** ...or this long after the last checkpoint. */
  everyMs?: number;
  now?: () => number;
  /** Hears a checkpoint that could not be written (it is retried at the next one) and a note that could not be added. */
  logger?: Logger;
  /** Counts checkpoint writes and their duration. */
  metrics?: Metrics;
  /** After each checkpoint, with its commit on caravan/runs (the final one excepted). */
  onCheckpoint?: (commit: string) => void;
  /** Events recorded before this recorder took over (resume). */
  previous?: readonly RunEvent[];
}

/**
 * Records a run: every event goes to a local journal at once, and the run is checkpointed
 * to the Git audit branch every N events or T ms and at the end, never one commit per
 * event. If a checkpoint fails (disk full, ref locked), the events stay in memory and in the
 * journal, and the next checkpoint writes them all.
 */
export class RunRecorder {
  private readonly events: RunEvent[];
  private journalFd: number | undefined;
  private unflushed: string[] = [];
  /** Bytes of whole lines in the journal: a failed append is cut back to this. */
  private journalBytes = 0;
  /** Set while journal appends fail, so that a full disk is logged once, not per event. */
  private journalFailing = false;
  private checkpointed: number;
  private lastCheckpointAt: number;
  private inFlight: Promise<void> | undefined;
  private again = false;
  private lastState: RunState | undefined;
  lastCommit: string | undefined;
  failures = 0;
  /** Set once finish() has written the final record: nothing is written after it. */
  private closed = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly store: GitAuditStore, private readonly options: RecorderOptions) {
    this.events = [...(options.previous ?? [])];
    this.checkpointed = 0;
    this.lastCheckpointAt = this.now();
  }

  private now(): number {
    return this.options.now?.() ?? Date.now();
  }

  /**
   * Starts the journal: a header with the workflow definition (so a run killed before its
   * first checkpoint can still resume), then one line per event. A resumed run starts a
   * fresh journal holding everything so far.
   */
  async open(): Promise<void> {
    try {
      await mkdir(dirname(this.options.journalPath), { recursive: true });
      await rm(this.options.journalPath, { force: true });
      this.journalFd = openSync(this.options.journalPath, 'a');
      const header: JournalHeader = { journal: 1, workflow: this.options.workflow, runId: this.options.runId, ...(this.options.workflowSource !== undefined ? { workflowSource: this.options.workflowSource } : {}), ...(this.options.workflowCommit !== undefined ? { workflowCommit: this.options.workflowCommit } : {}), ...(this.options.workflowDirty !== undefined ? { workflowDirty: this.options.workflowDirty } : {}) };
      const lines = [JSON.stringify(header), ...(this.options.previous ?? []).map((e) => JSON.stringify(e))];
      appendFileSync(this.journalFd, lines.join('\n') + '\n');
      fsyncSync(this.journalFd);
      this.journalBytes = fstatSync(this.journalFd).size;
    } catch (e) {
      // Before any task runs: the run is refused with the reason (a full disk, a read-only .git), not a stack trace.
      if (this.journalFd !== undefined) closeSync(this.journalFd);
      this.journalFd = undefined;
      throw new CaravanError('IO', `cannot write the journal of run ${this.options.runId} (${this.options.journalPath}): ${(e as Error).message}`, { cause: e, data: { journal: this.options.journalPath } });
    }
  }

  /**
   * Writes the events recorded since the last flush with one synchronous append: once the
   * engine starts an attempt, the events that led to it survive a SIGKILL of this process.
   */
  flush(): void {
    if (this.journalFd === undefined || this.unflushed.length === 0) return;
    const text = this.unflushed.join('');
    try {
      appendFileSync(this.journalFd, text);
    } catch (e) {
      // A full disk (or any write error) must not crash the run: the lines stay in memory and
      // the next flush writes them again. A partial line is cut off first, so that the
      // journal holds whole events only and nothing twice.
      try {
        ftruncateSync(this.journalFd, this.journalBytes);
      } catch {
        // The journal keeps a torn last line; readJournal skips a line it cannot parse.
      }
      if (!this.journalFailing) {
        (this.options.logger ?? noopLogger).warn(`journal write failed (events kept in memory; retrying at the next event): ${(e as Error).message}`, { workflow: this.options.workflow, run: this.options.runId, journal: this.options.journalPath, err: e });
      }
      this.journalFailing = true;
      return;
    }
    this.journalBytes += Buffer.byteLength(text);
    if (this.journalFailing) (this.options.logger ?? noopLogger).info(`journal writes work again; ${this.unflushed.length} held events written`, { workflow: this.options.workflow, run: this.options.runId, journal: this.options.journalPath });
    this.journalFailing = false;
    this.unflushed = [];
  }

  record(e: RunEvent, state: RunState): void {
    this.events.push(e);
    this.lastState = state;
    this.unflushed.push(JSON.stringify(e) + '\n');
    const everyMs = this.options.everyMs ?? 2000;
    const due = this.events.length - this.checkpointed >= (this.options.everyEvents ?? 500) || this.now() - this.lastCheckpointAt >= everyMs;
    // A failed checkpoint was logged in write() and is retried by the next one.
    if (due) void this.checkpoint().catch(() => undefined);
    else if (this.timer === undefined && !this.closed) {
      // A quiet run (a long task, no events) still reaches Git within everyMs of its last event.
      this.timer = setTimeout(() => {
        this.timer = undefined;
        // Logged in write(); the next checkpoint retries.
        void this.checkpoint().catch(() => undefined);
      }, Math.max(0, everyMs - (this.now() - this.lastCheckpointAt)));
      this.timer.unref();
    }
  }

  /**
   * Stops writing to Git (the journal is flushed and closed): for a run this process no
   * longer leads, whose record now belongs to the next leader.
   */
  close(): void {
    this.closed = true;
    this.again = false;
    this.clearTimer();
    if (this.journalFd !== undefined) this.closeJournal();
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Writes a checkpoint now (or after the one in flight). */
  checkpoint(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.clearTimer();
    if (this.inFlight !== undefined) {
      this.again = true;
      return this.inFlight;
    }
    this.inFlight = this.write().finally(() => {
      this.inFlight = undefined;
      if (this.again && !this.closed) {
        this.again = false;
        // Logged in write(); the next checkpoint retries.
        void this.checkpoint().catch(() => undefined);
      }
    });
    return this.inFlight;
  }

  private async write(): Promise<void> {
    const state = this.lastState;
    if (state === undefined) return;
    const began = performance.now();
    const metrics = this.options.metrics ?? noopMetrics;
    const count = this.events.length;
    const dirty = this.options.workflowDirty;
    const snapshot = dirty !== undefined ? { ...snapshotRun(state), workflowDirty: true, workflowSha256: dirty.sha256 } : snapshotRun(state);
    const done = [...state.groups.values()].filter((g) => g.status === 'succeeded' || g.status === 'failed' || g.status === 'skipped' || g.status === 'cancelled').length;
    const total = state.groups.size;
    const final = state.status !== 'running' && state.status !== 'paused';
    const duration = state.finishedAt !== undefined ? ` in ${formatDuration(state.finishedAt - state.startedAt)}` : '';
    const summary = final
      ? `${this.options.workflow} ${this.options.runId}: ${state.status}${duration} (${done}/${total} tasks)`
      : `${this.options.workflow} ${this.options.runId}: checkpoint, ${state.status} (${done}/${total} tasks done, ${count} events)`;
    try {
      this.lastCommit = await this.store.writeRun({
        workflow: this.options.workflow,
        runId: this.options.runId,
        run: snapshot,
        events: this.events.slice(0, count),
        ...(this.options.workflowSource !== undefined ? { workflowSource: this.options.workflowSource } : {}),
        ...(this.options.workflowCommit !== undefined ? { workflowCommit: this.options.workflowCommit } : {}),
        ...(dirty !== undefined ? { workflowDirty: true } : {}),
        status: state.status,
        summary,
      });
      metrics.checkpointWritten('written', (performance.now() - began) / 1000);
      this.checkpointed = count;
      this.lastCheckpointAt = this.now();
      if (!final) this.options.onCheckpoint?.(this.lastCommit);
      // The checkpoint itself is an event of the run: it says how much the audit branch holds.
      const marker: RunEvent = { runId: this.options.runId, at: this.lastCheckpointAt, type: 'checkpoint', seq: count };
      this.events.push(marker);
      this.unflushed.push(JSON.stringify(marker) + '\n');
    } catch (e) {
      this.failures++;
      metrics.checkpointWritten('failed', (performance.now() - began) / 1000);
      (this.options.logger ?? noopLogger).warn(`audit checkpoint failed (kept in memory and in ${this.options.journalPath}; retrying): ${(e as Error).message}`, { workflow: this.options.workflow, run: this.options.runId, journal: this.options.journalPath, err: e });
      throw e;
    }
  }

  /**
   * The final checkpoint and the note on the workflow commit. Retries with backoff; if Git
   * still cannot be written, the journal keeps every event and the error says where.
   */
  async finish(state: RunState, retries = 5): Promise<string> {
    this.lastState = state;
    // A checkpoint in flight that fails was logged; the final one below writes everything.
    if (this.inFlight !== undefined) await this.inFlight.catch(() => undefined);
    let lastError: unknown;
    for (let i = 0; i <= retries; i++) {
      try {
        await this.checkpoint();
        lastError = undefined;
        break;
      } catch (e) {
        lastError = e;
        await new Promise((r) => setTimeout(r, 50 * 2 ** i));
      }
    }
    // A checkpoint queued while the final one ran must not write after it.
    this.closed = true;
    this.again = false;
    this.clearTimer();
    // Only waited for, so nothing writes after the final record; its failure was logged.
    if (this.inFlight !== undefined) await this.inFlight.catch(() => undefined);
    this.closeJournal();
    if (lastError !== undefined || this.lastCommit === undefined) {
      throw new CaravanError('AUDIT_WRITE_FAILED', `could not record run ${this.options.runId} in Git: ${(lastError as Error | undefined)?.message ?? 'unknown error'}; every event is kept in ${this.options.journalPath}`, { cause: lastError, data: { journal: this.options.journalPath } });
    }
    if (this.options.workflowCommit !== undefined) {
      const duration = state.finishedAt !== undefined ? ` in ${formatDuration(state.finishedAt - state.startedAt)}` : '';
      // The note hangs on the commit: a run of a definition it does not hold must not pass for one of it.
      const notAsCommitted = this.options.workflowDirty !== undefined ? `, workflow with uncommitted changes, sha256 ${this.options.workflowDirty.sha256.slice(0, 12)}` : '';
      const line = `${new Date(state.startedAt).toISOString()} run ${this.options.runId} of ${this.options.workflow}: ${state.status}${duration} (record ${this.lastCommit.slice(0, 12)} on caravan/runs${notAsCommitted})`;
      try {
        await this.store.appendNote(this.options.workflowCommit, line);
      } catch (e) {
        (this.options.logger ?? noopLogger).warn(`could not add the git note for ${this.options.workflowCommit.slice(0, 12)}: ${(e as Error).message}`, { workflow: this.options.workflow, run: this.options.runId, commit: this.options.workflowCommit, err: e });
      }
    }
    await rm(this.options.journalPath, { force: true });
    return this.lastCommit;
  }

  private closeJournal(): void {
    this.flush();
    if (this.journalFd !== undefined) closeSync(this.journalFd);
    this.journalFd = undefined;
  }
}

/** First line of a journal file. */
export interface JournalHeader {
  journal: 1;
  workflow: string;
  runId: string;
  workflowSource?: string;
  workflowCommit?: string;
  workflowDirty?: WorkflowDirty;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const m = Math.floor(ms / 60_000);
  const s = Math.round((ms % 60_000) / 1000);
  return m < 60 ? `${m}m${s > 0 ? `${s}s` : ''}` : `${Math.floor(m / 60)}h${m % 60 > 0 ? `${m % 60}m` : ''}`;
}
