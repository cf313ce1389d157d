import type { GitAuditStore } from '../audit/GitAuditStore.js';
import { readJournal } from '../audit/readJournal.js';
import { checkRunId } from '../audit/updateRef.js';
import { CaravanError } from '../errors/CaravanError.js';
import type { RunStatus } from '../run/RunEvent.js';
import { buildRunPlan } from '../run/RunPlan.js';
import type { RunSnapshot } from '../run/RunSnapshot.js';
import { snapshotRun } from '../run/RunState.js';
import { applyRunEvent, initialRunState } from '../run/reduceRun.js';
import { validateText } from '../spec/validateWorkflows.js';
import type { LiveRun, LiveRuns } from './LiveRuns.js';

/** Filters for listing runs; every field optional. */
export interface RunFilter {
  workflow?: string;
  status?: RunStatus;
  /** Only runs started at or after this instant (ISO 8601). */
  since?: string;
  /** Page size (default 50, at most 500). */
  limit?: number;
  /** Where the previous page ended (its nextCursor). */
  cursor?: string;
}

/** One row of a run list. */
export interface RunSummary {
  runId: string;
  workflow: string;
  status: RunStatus;
  startedAt: string;
  durationMs?: number;
  /** Executing on this machine now. */
  live: boolean;
  /**
   * Where the run is recorded: on the audit branch, or only in this machine's journal (live
   * before its first checkpoint, or its Git write failed: `caravan recover` writes it).
   */
  recorded: 'git' | 'journal';
}

export interface RunPage {
  runs: RunSummary[];
  /** Pass as `cursor` for the next page; absent on the last page. */
  nextCursor?: string;
}

/** A run as it stands, and where that view comes from. */
export interface RunView {
  snapshot: RunSnapshot;
  live: LiveRun | undefined;
  /**
   * `memory`: a run this process drives, as it stands; `journal`: replayed from the live
   * run's journal (ahead of Git); `audit`: the last checkpoint on caravan/runs.
   */
  from: 'memory' | 'journal' | 'audit';
}

/** One log line of a task attempt. */
export interface LogLine {
  task: string;
  attempt: number;
  stream: 'stdout' | 'stderr';
  line: string;
  /** When the line was written: its event's time, ISO 8601 (UTC). */
  at: string;
}

export interface FollowOptions {
  /** How often a live run's journal is read again (default 250 ms). */
  pollMs?: number;
  /** Stops following (the generator returns). */
  signal?: AbortSignal;
}

/**
 * The read side the CLI (and the coming HTTP API) share: runs from the Git audit branch,
 * live runs from their journal, which is ahead of the last checkpoint.
 */
export class RunQueries {
  /** Runs this process drives (the application's supervisor), read from memory. */
  private inProcess: ((runId: string) => { snapshot: RunSnapshot; live: LiveRun } | undefined) | undefined;

  constructor(private readonly audit: GitAuditStore, private readonly live: LiveRuns, private readonly parallelism = 32) {}

  /** Set by the application once it supervises runs: their reads skip the journal. */
  readFromMemory(current: (runId: string) => { snapshot: RunSnapshot; live: LiveRun } | undefined): void {
    this.inProcess = current;
  }

  /** Runs newest first (run ids start with their UTC start time), filtered, one page at a time. */
  async list(filter: RunFilter = {}): Promise<RunPage> {
    const limit = Math.min(Math.max(1, filter.limit ?? 50), 500);
    const after = filter.cursor !== undefined ? decodeCursor(filter.cursor) : undefined;
    const live = new Map((await this.live.list()).map((r) => [r.runId, r]));
    const onGit = await this.audit.listRuns(filter.workflow);
    const known = new Set(onGit.map((r) => r.runId));
    const ids: Array<{ runId: string; workflow?: string }> = [...onGit];
    for (const runId of await this.live.journalIds()) if (!known.has(runId)) ids.push({ runId });
    ids.sort((a, b) => (a.runId < b.runId ? 1 : a.runId > b.runId ? -1 : 0));
    const runs: RunSummary[] = [];
    let nextCursor: string | undefined;
    for (const r of ids) {
      if (after !== undefined && r.runId >= after) continue;
      const s = r.workflow !== undefined ? (await this.audit.readRun(r.runId, r.workflow))?.run : await this.journalSnapshot(r.runId);
      if (s === undefined) continue;
      if (filter.workflow !== undefined && s.workflow !== filter.workflow) continue;
      if (filter.status !== undefined && s.status !== filter.status) continue;
      if (filter.since !== undefined && s.startedAt < filter.since) continue;
      if (runs.length === limit) {
        nextCursor = encodeCursor(runs[runs.length - 1]!.runId);
        break;
      }
      runs.push({ runId: r.runId, workflow: s.workflow, status: s.status, startedAt: s.startedAt, ...(s.durationMs !== undefined ? { durationMs: s.durationMs } : {}), live: live.has(r.runId), recorded: r.workflow !== undefined ? 'git' : 'journal' });
    }
    return nextCursor !== undefined ? { runs, nextCursor } : { runs };
  }

  /**
   * One run: a live run's journal replayed (ahead of Git), else its last record on
   * caravan/runs, else a journal that never reached Git (the run's Git write failed).
   */
  async get(runId: string): Promise<RunView> {
    const here = this.inProcess?.(checkRunId(runId));
    if (here !== undefined) return { ...here, from: 'memory' };
    const live = await this.live.get(runId);
    const fromJournal = live !== undefined ? await this.journalSnapshot(runId) : undefined;
    if (fromJournal !== undefined) return { snapshot: fromJournal, live, from: 'journal' };
    const stored = await this.audit.readRun(runId);
    if (stored !== undefined) return { snapshot: stored.run, live, from: 'audit' };
    const journalOnly = await this.journalSnapshot(runId);
    if (journalOnly !== undefined) return { snapshot: journalOnly, live, from: 'journal' };
    throw new CaravanError('RUN_NOT_FOUND', `no run ${runId} on caravan/runs or in the local journal`, { data: { runId } });
  }

  /**
   * A run's recorded log lines, of one task (and its forEach items) or of all: a live run's
   * from its journal (ahead of the last checkpoint), else from the audit branch, else from
   * the journal of a run that never reached it.
   */
  async logs(runId: string, task?: string): Promise<LogLine[]> {
    const live = (await this.live.get(runId)) !== undefined;
    const journal = live ? await readJournal(this.live.journalPath(runId)) : undefined;
    const events = journal?.events ?? (await this.audit.readRun(runId))?.events ?? (await readJournal(this.live.journalPath(runId)))?.events;
    if (events === undefined) throw new CaravanError('RUN_NOT_FOUND', `no run ${runId} on caravan/runs or in the local journal`, { data: { runId } });
    const out: LogLine[] = [];
    for (const e of events) {
      if (e.type !== 'task.log') continue;
      if (task !== undefined && e.task !== task && !e.task.startsWith(`${task}[`)) continue;
      out.push({ task: e.task, attempt: e.attempt, stream: e.stream, line: e.line, at: new Date(e.at).toISOString() });
    }
    return out;
  }

  /**
   * A run's log lines as they are recorded: first those recorded so far, then, while the run
   * is live on this machine, each batch of new ones, until the run is no longer live (it
   * ended, or its process died). Whether it is live is asked before each read, so the last
   * read comes after the end and no line is missed; lines are never yielded twice, as the
   * journal and the records on the audit branch hold the events in the same order.
   */
  async *follow(runId: string, task?: string, options: FollowOptions = {}): AsyncGenerator<LogLine[], void, void> {
    let shown = 0;
    for (;;) {
      const live = (await this.live.get(runId)) !== undefined;
      const lines = await this.logs(runId, task);
      // A recovered run's journal is rewritten: read in between, only the checkpoint is seen.
      if (lines.length > shown) yield lines.slice(shown);
      shown = Math.max(shown, lines.length);
      if (!live || options.signal?.aborted === true) return;
      await pause(options.pollMs ?? 250, options.signal);
    }
  }

  /**
   * The workflow file a run executes, as recorded with it: a live run's journal header, else
   * workflow.yaml on caravan/runs, else a journal that never reached Git. Undefined when the
   * run was recorded without it; RUN_NOT_FOUND when there is no such run.
   */
  async definition(runId: string): Promise<string | undefined> {
    const journal = await readJournal(this.live.journalPath(runId));
    if ((await this.live.get(runId)) !== undefined && journal?.header.workflowSource !== undefined) return journal.header.workflowSource;
    const stored = await this.audit.readRun(runId);
    if (stored !== undefined) return stored.workflowSource ?? journal?.header.workflowSource;
    if (journal !== undefined) return journal.header.workflowSource;
    throw new CaravanError('RUN_NOT_FOUND', `no run ${runId} on caravan/runs or in the local journal`, { data: { runId } });
  }

  /** A live run's state as of its last journaled event; undefined without a usable journal. */
  async journalSnapshot(runId: string): Promise<RunSnapshot | undefined> {
    const journal = await readJournal(this.live.journalPath(runId));
    const source = journal?.header.workflowSource;
    if (journal === undefined || source === undefined) return undefined;
    const parsed = validateText(`${runId}/workflow.yaml`, source);
    if (parsed.workflow === undefined) return undefined;
    const plan = buildRunPlan(parsed.workflow, { maxParallel: this.parallelism });
    const state = initialRunState(plan, runId);
    for (const e of journal.events) applyRunEvent(state, plan, e);
    return snapshotRun(state);
  }
}

/** Waits `ms`, or less if `signal` aborts. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
  });
}

function encodeCursor(runId: string): string {
  return Buffer.from(runId, 'utf8').toString('base64url');
}

function decodeCursor(cursor: string): string {
  const runId = Buffer.from(cursor, 'base64url').toString('utf8');
  if (!/^[A-Za-z0-9_.-]{1,128}$/.test(runId)) throw new CaravanError('USAGE', `not a cursor from a previous page: '${cursor}'`, { data: { cursor } });
  return runId;
}
