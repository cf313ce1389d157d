import { formatDuration } from '../audit/RunRecorder.js';
import type { RunEvent } from '../run/RunEvent.js';
import { heldBy, type RunState } from '../run/RunState.js';

export type ProgressMode = 'tty' | 'plain' | 'json';

const ICON: Record<string, string> = { succeeded: '✔', failed: '✖', skipped: '–', cancelled: '⊘', running: '▶', queued: '…', retrying: '↻', waiting: '⏸', pending: ' ' };

/**
 * Shows a run as it happens: a redrawn table of tasks on a terminal, one plain line per
 * step otherwise, or one JSON object per event with --json.
 */
export class RunProgress {
  private lastDraw = 0;
  private drawnLines = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly mode: ProgressMode, private readonly write: (s: string) => void, private readonly now: () => number = Date.now) {}

  onEvent(e: RunEvent, state: RunState): void {
    if (this.mode === 'json') {
      this.write(JSON.stringify(e) + '\n');
      return;
    }
    if (this.mode === 'plain') {
      const line = plainLine(e, state);
      if (line !== undefined) this.write(line + '\n');
      return;
    }
    const t = this.now();
    if (t - this.lastDraw >= 100 || e.type.startsWith('run.')) this.draw(state);
    else if (this.timer === undefined) this.timer = setTimeout(() => { this.timer = undefined; this.draw(state); }, 100);
  }

  finish(state: RunState): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.mode === 'tty') this.draw(state);
  }

  private draw(state: RunState): void {
    this.lastDraw = this.now();
    const lines: string[] = [];
    const groups = [...state.groups.values()];
    const done = groups.filter((g) => ['succeeded', 'failed', 'skipped', 'cancelled'].includes(g.status)).length;
    const width = 24;
    const filled = groups.length === 0 ? width : Math.round((done / groups.length) * width);
    lines.push(`${state.workflow} ${state.runId}  [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${groups.length} tasks  ${state.status}`);
    const shown = groups.filter((g) => g.status !== 'pending').slice(-30);
    for (const g of shown) {
      const instances = g.instances.map((k) => state.instances.get(k)!).filter((i) => i !== undefined);
      const first = instances[0];
      const attempts = first !== undefined && !g.expanded && first.attempt > 1 ? ` (attempt ${first.attempt})` : '';
      const dur = first?.startedAt !== undefined && !g.expanded ? ` ${formatDuration((first.finishedAt ?? this.now()) - first.startedAt)}` : '';
      const fan = g.expanded ? ` ${instances.filter((i) => i.status === 'succeeded').length}/${instances.length} items` : '';
      const held = instances.map((i) => heldBy(state, i)).find((h) => h !== undefined);
      const why = first?.reusedFrom !== undefined && !g.expanded ? `  reused from run ${first.reusedFrom}` : g.status === 'failed' || g.status === 'skipped' ? `  ${(first?.error ?? g.reason ?? '').slice(0, 80)}` : first?.status === 'waiting' ? '  waiting for approval' : first?.status === 'queued' && first.pendingReason !== undefined && !g.expanded ? `  ${first.pendingReason.slice(0, 100)}` : held !== undefined ? `  ${holdText(held)}` : '';
      lines.push(`  ${ICON[g.status] ?? ' '} ${g.name}${fan}${attempts}${dur}${why}`);
    }
    const up = this.drawnLines > 0 ? `\x1b[${this.drawnLines}A` : '';
    this.write(up + lines.map((l) => `\x1b[2K${l}`).join('\n') + '\n');
    this.drawnLines = lines.length;
  }
}

function plainLine(e: RunEvent, state: RunState): string | undefined {
  const at = new Date(e.at).toISOString().slice(11, 19);
  switch (e.type) {
    case 'run.started':
      return `${at} run ${e.runId} of ${e.workflow} started`;
    case 'task.pending':
      return `${at} ${e.task} waits: ${e.reason}`;
    case 'task.started':
      return `${at} ${e.task} started${e.attempt > 1 ? ` (attempt ${e.attempt})` : ''}`;
    case 'task.succeeded': {
      const inst = state.instances.get(e.task);
      const d = inst?.attempts[inst.attempts.length - 1]?.startedAt;
      return `${at} ${e.task} succeeded${d !== undefined ? ` in ${formatDuration(e.at - d)}` : ''}`;
    }
    case 'task.failed':
      return `${at} ${e.task} failed (attempt ${e.attempt}): ${e.error}`;
    case 'task.retry-scheduled': {
      const inst = state.instances.get(e.task);
      const held = inst !== undefined ? heldBy(state, inst) : undefined;
      const wait = held !== undefined && held.until > e.retryAt ? `; ${holdText(held)}` : '';
      return `${at} ${e.task} will retry (attempt ${e.attempt}) in ${formatDuration(e.retryAt - e.at)}${wait}`;
    }
    case 'task.skipped':
      return `${at} ${e.task} skipped: ${e.reason}`;
    case 'task.reused':
      return `${at} ${e.task} reused from run ${e.from}${e.approvedBy !== undefined ? ` (approved by ${e.approvedBy})` : ''}`;
    case 'task.expanded':
      return `${at} ${e.task} fans out to ${e.items.length} items`;
    case 'task.cancelled':
      return `${at} ${e.task} cancelled: ${e.reason}`;
    case 'approval.requested':
      return `${at} ${e.task} waits for approval${e.message !== undefined ? `: ${e.message}` : ''} (caravan approve ${e.runId} ${e.task})`;
    case 'approval.granted':
      return `${at} ${e.task} approved by ${e.by}`;
    case 'approval.rejected':
      return `${at} ${e.task} rejected by ${e.by}${e.reason !== undefined ? `: ${e.reason}` : ''}`;
    case 'approval.refused':
      return `${at} ${e.task}: decision by ${e.by} refused: ${e.reason}`;
    case 'compensation.started':
      return `${at} compensating ${e.task.replace(/:compensate$/, '')}`;
    case 'compensation.finished':
      return `${at} compensation of ${e.task.replace(/:compensate$/, '')} ${e.ok ? 'done' : `failed: ${e.error ?? ''}`}`;
    case 'breaker.opened': {
      // Name what it holds: a retry or a start that waits with no word looks like a hang.
      const held = [...state.retrying, ...state.runnable].map((k) => state.instances.get(k)!).filter((i) => heldBy(state, i)?.key === e.key);
      const lines = [`${at} circuit breaker ${e.key} opened${e.failures !== undefined ? ` after ${e.failures} failure${e.failures === 1 ? '' : 's'}` : ''} until ${clock(e.until)}`];
      for (const i of held.slice(0, 20)) lines.push(`${at} ${i.key} ${holdText({ key: e.key, until: e.until })}`);
      if (held.length > 20) lines.push(`${at} ... and ${held.length - 20} more held by circuit breaker ${e.key}`);
      return lines.join('\n');
    }
    case 'breaker.closed':
      return `${at} circuit breaker ${e.key} closed: its probe succeeded`;
    case 'run.failing':
      return `${at} run failing: ${e.reason}`;
    case 'run.cancelling':
      return `${at} run cancelling by ${e.by}${e.reason !== undefined ? `: ${e.reason}` : ''}; its finally tasks run first`;
    case 'run.finalizing':
      return `${at} main tasks ${e.outcome}; running the finally tasks`;
    case 'run.paused':
    case 'run.resumed':
      return `${at} run ${e.type.slice(4)} by ${e.by}`;
    case 'run.cancelled':
      return `${at} run cancelled by ${e.by}${e.reason !== undefined ? `: ${e.reason}` : ''}`;
    case 'run.succeeded':
      return `${at} run succeeded in ${formatDuration(e.at - state.startedAt)}`;
    case 'run.failed':
      return `${at} run failed: ${e.reason}`;
    default:
      return undefined;
  }
}

function clock(ms: number): string {
  return new Date(ms).toISOString().slice(11, 19);
}

/** How a task waiting for an open breaker is shown, in progress lines and `caravan status`. */
export function holdText(h: { key: string; until: number }): string {
  return `held by circuit breaker ${h.key} until ${clock(h.until)}`;
}
