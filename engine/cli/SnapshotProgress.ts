import { formatDuration } from '../audit/RunRecorder.js';
import type { InstanceSnapshot, RunSnapshot, TaskSnapshot } from '../run/RunSnapshot.js';

/**
 * Shows a run in a controller as it goes on, from the snapshots followRun reads: the plain
 * progress lines `caravan run` prints in-process (the same words per step), or with `json`
 * one RunSnapshot per line each time it changes. A snapshot is a state, not the events
 * between two reads: a task that started and finished between them shows only as finished,
 * and times are when the change was seen. (With the SSE route the events themselves come.)
 */
export class SnapshotProgress {
  private prev: RunSnapshot | undefined;

  constructor(private readonly mode: 'plain' | 'json', private readonly write: (s: string) => void, private readonly now: () => number = Date.now) {}

  onSnapshot(s: RunSnapshot): void {
    if (this.mode === 'json') {
      this.write(JSON.stringify(s) + '\n');
      return;
    }
    const at = new Date(this.now()).toISOString().slice(11, 19);
    for (const line of changes(this.prev, s)) this.write(`${at} ${line}\n`);
    this.prev = s;
  }
}

/** What changed from one snapshot to the next, in the words of RunProgress's plain lines. */
export function changes(prev: RunSnapshot | undefined, s: RunSnapshot): string[] {
  const out: string[] = [];
  if (prev === undefined) out.push(`run ${s.runId} of ${s.workflow} started`);
  for (const [name, t] of Object.entries(s.tasks)) {
    const before = prev?.tasks[name];
    if (t.instances !== undefined) {
      if (before?.instances === undefined) out.push(`${name} fans out to ${t.instances.length} items`);
      const old = new Map((before?.instances ?? []).map((i) => [i.key, i]));
      for (const i of t.instances) out.push(...step(i.key ?? name, s.runId, i, old.get(i.key)));
      if (before?.status !== t.status && (t.status === 'skipped' || t.status === 'cancelled')) out.push(...step(name, s.runId, t, before));
    } else {
      out.push(...step(name, s.runId, t, before));
    }
  }
  if (prev !== undefined && prev.status !== s.status) {
    if (s.status === 'paused') out.push('run paused');
    else if (s.status === 'running' && prev.status === 'paused') out.push('run resumed');
  }
  if (prev?.status !== s.status) {
    if (s.status === 'succeeded') out.push(`run succeeded${s.durationMs !== undefined ? ` in ${formatDuration(s.durationMs)}` : ''}`);
    if (s.status === 'failed') out.push(`run failed${s.failureReason !== undefined ? `: ${s.failureReason}` : ''}`);
    if (s.status === 'cancelled') out.push(`run cancelled${s.cancelReason !== undefined ? `: ${s.cancelReason}` : ''}`);
  }
  return out;
}

function step(key: string, runId: string, t: Partial<InstanceSnapshot> & Pick<TaskSnapshot, 'status' | 'reason'>, before: (Partial<InstanceSnapshot> & { status: string }) | undefined): string[] {
  const attemptsChanged = (t.attempts ?? 0) !== (before?.attempts ?? 0);
  if (before?.status === t.status && !attemptsChanged) {
    if (t.status === 'queued' && t.pendingReason !== undefined && t.pendingReason !== before.pendingReason) return [`${key} waits: ${t.pendingReason}`];
    return [];
  }
  const attempt = t.attempts ?? 1;
  switch (t.status) {
    case 'queued':
      return t.pendingReason !== undefined ? [`${key} waits: ${t.pendingReason}`] : [];
    case 'running':
      return [`${key} started${attempt > 1 ? ` (attempt ${attempt})` : ''}`];
    case 'retrying':
      return [`${key} failed (attempt ${attempt}): ${t.error ?? ''}`, `${key} will retry (attempt ${attempt + 1})`];
    case 'waiting':
      return [`${key} waits for approval (caravan approve ${runId} ${key})`];
    case 'succeeded':
      return [`${key} succeeded${t.durationMs !== undefined ? ` in ${formatDuration(t.durationMs)}` : ''}`];
    case 'failed':
      return [`${key} failed (attempt ${attempt})${t.error !== undefined ? `: ${t.error}` : ''}`];
    case 'skipped':
      return [`${key} skipped${t.reason !== undefined ? `: ${t.reason}` : ''}`];
    case 'cancelled':
      return [`${key} cancelled${t.reason !== undefined ? `: ${t.reason}` : ''}`];
    default:
      return [];
  }
}
