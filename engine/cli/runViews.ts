import { formatDuration } from '../audit/RunRecorder.js';
import type { LogLine, RunSummary } from '../app/RunQueries.js';
import type { RunSnapshot } from '../run/RunSnapshot.js';

/**
 * How `caravan runs`, `status` and `logs` print, in-process or from a controller: one place,
 * so the two ways show a run the same.
 */

/** `caravan runs`: the table, with `live` saying where a live run lives. */
export function runsTable(runs: readonly RunSummary[], live: string): string {
  const rows = [['RUN', 'WORKFLOW', 'STATUS', 'STARTED', 'DURATION']];
  for (const r of runs) {
    const where = r.live ? ` (${live})` : r.recorded === 'journal' ? ' (journal only: caravan recover writes it to Git)' : '';
    rows.push([r.runId, r.workflow, `${r.status}${where}`, r.startedAt, r.durationMs !== undefined ? formatDuration(r.durationMs) : '']);
  }
  return table(rows);
}

/**
 * `caravan status`: the heading (written by the command, which knows where the run lives)
 * comes first; this is what follows, with `quoted` for text the run's tasks wrote.
 */
export function printStatus(r: RunSnapshot, where: string, io: { stdout: (s: string) => void }, quoted: (s: string) => void): void {
  io.stdout(`run ${r.runId} of ${r.workflow}: ${r.status}${where}\n`);
  io.stdout(`started ${r.startedAt}${r.durationMs !== undefined ? `, took ${formatDuration(r.durationMs)}` : ''}${r.retryOf !== undefined ? `, a retry of run ${r.retryOf}` : ''}\n`);
  // The record's commit does not hold the definition that ran: say so, as the trailer does.
  if (r.workflowDirty === true) io.stdout(`workflow: as run, with changes not committed (sha256 ${(r.workflowSha256 ?? '').slice(0, 12)}); the record keeps that file\n`);
  if (r.failureReason !== undefined) quoted(`failure: ${r.failureReason}\n`);
  const rows = [['TASK', 'STATUS', 'ATTEMPTS', 'DURATION', 'NOTE']];
  for (const [name, t] of Object.entries(r.tasks)) {
    const held = t.heldBy ?? t.instances?.find((i) => i.heldBy !== undefined)?.heldBy;
    const heldNote = held !== undefined ? `${t.instances !== undefined ? `${t.instances.filter((i) => i.heldBy !== undefined).length} ` : ''}held by circuit breaker ${held.breaker} until ${held.until.slice(11, 19)}` : undefined;
    rows.push([name, t.status, t.instances !== undefined ? `${t.instances.length} items` : String(t.attempts ?? ''), t.durationMs !== undefined ? formatDuration(t.durationMs) : '', (t.reusedFrom !== undefined ? `reused from run ${t.reusedFrom}` : heldNote ?? t.error ?? t.reason ?? t.pendingReason ?? '').slice(0, 80)]);
  }
  quoted(table(rows));
  const active = r.status === 'running' || r.status === 'paused';
  for (const b of active ? (r.breakers ?? []) : []) quoted(`circuit breaker ${b.key}: open after ${b.failures} failure${b.failures === 1 ? '' : 's'}, until ${b.openUntil.slice(11, 19)} (then one probe)\n`);
}

/** `caravan logs`: one line, with its time first when asked. */
export function logLineText(l: LogLine, timestamps: boolean): string {
  return `${timestamps ? `${l.at} ` : ''}${l.task}#${l.attempt} ${l.stream === 'stderr' ? '! ' : ''}${l.line}\n`;
}

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n') + '\n';
}
