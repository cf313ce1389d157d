import type { RunEvent } from './RunEvent.js';

/**
 * The port task events travel through: in memory by default, NATS JetStream for real. A
 * subject is `caravan.ev.<workflow>.<run>.<task>`; `msgId` de-duplicates (Nats-Msg-Id).
 */
export interface Bus {
  publish(subject: string, event: RunEvent, options: { msgId: string; origin: 'engine' | 'agent' }): void;
  /** Subscribes to a subject pattern (`*` one token, `>` the rest). Returns an unsubscribe function. */
  subscribe(pattern: string, handler: (event: RunEvent, meta: { subject: string; origin: 'engine' | 'agent' }) => void): () => void;
  close(): Promise<void>;
}

/** Task names may contain characters that are not subject tokens; forEach keys add brackets. */
export function subjectToken(s: string): string {
  return s.replace(/[^A-Za-z0-9_-]/g, (c) => `_${c.charCodeAt(0).toString(16)}`);
}

export function eventSubject(workflow: string, runId: string, task: string | undefined): string {
  return `caravan.ev.${subjectToken(workflow)}.${subjectToken(runId)}.${task === undefined ? '_run' : subjectToken(task)}`;
}

/** Every event of one run. */
export function runSubjects(workflow: string, runId: string): string {
  return `caravan.ev.${subjectToken(workflow)}.${subjectToken(runId)}.>`;
}

export function subjectMatches(pattern: string, subject: string): boolean {
  // The common case (`prefix.>` with no `*`) needs no splitting: it is on every delivery.
  if (pattern.endsWith('.>') && !pattern.includes('*')) return subject.startsWith(pattern.slice(0, -1));
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length) return false;
    if (p[i] !== '*' && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}
