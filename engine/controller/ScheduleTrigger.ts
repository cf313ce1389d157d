import { createHash } from 'node:crypto';
import { Cron } from 'croner';
import { CaravanError } from '../errors/CaravanError.js';
import { MIN_CATCHUP_WINDOW_MS } from '../spec/checkTriggers.js';
import { parseDuration } from '../spec/parseDuration.js';
import type { ScheduleCatchup, ScheduleOverlap } from '../spec/Workflow.js';

/** What the controller needs of a `schedule` trigger (a `Trigger['schedule']` is one). */
export interface ScheduleSpec {
  cron: string;
  timezone?: string;
  overlap?: ScheduleOverlap;
  catchup?: ScheduleCatchup;
  catchupWindow?: string;
}

/**
 * Defaults of the optional fields. `last` within an hour, not Temporal's `all` within a
 * year: after an outage a pipeline should run once and be current, not replay a backlog
 * that competes for the same cluster (docs/triggers.md).
 */
export const SCHEDULE_DEFAULTS = { overlap: 'skip', catchup: 'last', catchupWindow: '1h', timezone: 'UTC' } as const;

/** The most runs `catchup: all` returns at once, so a long outage cannot start a flood. */
export const MAX_CATCHUP_FIRES = 100;

/**
 * A scheduled time at most this late is on time, under every policy: the controller wakes a
 * little after each time, and that must not count as missing it.
 */
export const ON_TIME_MS = MIN_CATCHUP_WINDOW_MS;

/**
 * The scheduled times in (lastFire, now] that should fire now, oldest first.
 *
 * - `lastFire` undefined (first sight: a new schedule, or its state was lost): nothing in the
 *   past fires, whether or not an earlier controller ran it; the result is `[now]` if `now` is
 *   itself a scheduled time to the millisecond, else `[]`. The caller records a baseline
 *   (`now`) so that the next call has a `lastFire`.
 * - `none`: the most recent time in (lastFire, now], if it is at most {@link ON_TIME_MS} late.
 * - `last`: the most recent time in (lastFire, now], if it is at most `catchupWindow` late.
 * - `all`: every time in (lastFire, now] at most `catchupWindow` late; when there are more
 *   than {@link MAX_CATCHUP_FIRES}, only that many of the most recent.
 *
 * A window shorter than ON_TIME_MS counts as ON_TIME_MS (validation rejects one anyway).
 * Times the result leaves out are skipped for good once the caller records the newest time
 * it acted on (or `now`) as the next `lastFire`.
 */
export function dueFires(spec: ScheduleSpec, lastFire: Date | undefined, now: Date): Date[] {
  const cron = cronOf(spec);
  if (lastFire === undefined) {
    const latest = previousFire(cron, new Date(now.getTime() + 1));
    return latest !== undefined && latest.getTime() === now.getTime() ? [latest] : [];
  }
  const catchup = spec.catchup ?? SCHEDULE_DEFAULTS.catchup;
  const windowMs = catchup === 'none' ? ON_TIME_MS : Math.max(windowOf(spec), ON_TIME_MS);
  const oldest = Math.max(lastFire.getTime() + 1, now.getTime() - windowMs);
  const limit = catchup === 'all' ? MAX_CATCHUP_FIRES : 1;
  // Backwards from now: the newest times are the ones kept, and at most `limit` steps are taken
  // however long the window (a week of an every-minute schedule is 10,080 times).
  const due: Date[] = [];
  for (let t = previousFire(cron, new Date(now.getTime() + 1)); t !== undefined && t.getTime() >= oldest && due.length < limit; t = previousFire(cron, t)) {
    due.push(t);
  }
  return due.reverse();
}

/** The first scheduled time strictly after `after`; undefined if there is none (before year 3000). */
export function nextFire(spec: ScheduleSpec, after: Date): Date | undefined {
  return cronOf(spec).nextRun(after) ?? undefined;
}

/**
 * The run id of the run for a scheduled time: newRunId's format (YYYYMMDD-HHMMSS-<6 hex>,
 * engine/audit/updateRef.ts) with the scheduled time in UTC and, instead of random hex, the
 * start of sha256(`<workflow>@<ISO time>`). Every controller that fires the same time of the
 * same workflow names the run the same, which is what lets a duplicate be recognised.
 */
export function scheduledRunId(workflow: string, at: Date): string {
  const p = (n: number): string => String(n).padStart(2, '0');
  const stamp = `${at.getUTCFullYear()}${p(at.getUTCMonth() + 1)}${p(at.getUTCDate())}-${p(at.getUTCHours())}${p(at.getUTCMinutes())}${p(at.getUTCSeconds())}`;
  const hex = createHash('sha256').update(`${workflow}@${at.toISOString()}`).digest('hex').slice(0, 6);
  return `${stamp}-${hex}`;
}

/**
 * Croner in the workflow's zone (UTC unless given, never the controller's local zone), five
 * fields only. `no-wildcard` makes every job without `*` or a step in minute and hour a
 * fixed-time job, as in Vixie cron: on DST days it runs once at each of its times (after a
 * gap at the first valid time, in a repeated hour at the first pass), so `30 2,14 * * *`
 * behaves like `30 2 * * *`. Jobs with `*` or a step keep to elapsed time instead: both
 * passes of a repeated hour, nothing in a gap. See docs/triggers.md#daylight-saving-time.
 */
function cronOf(spec: ScheduleSpec): Cron {
  const timezone = spec.timezone ?? SCHEDULE_DEFAULTS.timezone;
  try {
    // Croner checks the zone only when it evaluates a time, with a less direct message.
    new Intl.DateTimeFormat('en', { timeZone: timezone });
    return new Cron(spec.cron.trim(), { paused: true, mode: '5-part', fixedTimeRule: 'no-wildcard', timezone });
  } catch (e) {
    // Validation rejects these first; a spec that skipped it must not fire at a guessed time.
    throw new CaravanError('WORKFLOW_INVALID', `schedule '${spec.cron}'${spec.timezone !== undefined ? ` (${spec.timezone})` : ''} cannot be evaluated: ${(e as Error).message}`, { cause: e, data: { cron: spec.cron, timezone: spec.timezone } });
  }
}

function windowOf(spec: ScheduleSpec): number {
  const text = spec.catchupWindow ?? SCHEDULE_DEFAULTS.catchupWindow;
  const ms = parseDuration(text);
  if (ms === undefined) throw new CaravanError('WORKFLOW_INVALID', `catchupWindow '${text}' is not a duration such as 30m or 1h`, { data: { catchupWindow: text } });
  return ms;
}

/** The latest scheduled time strictly before `before`. */
function previousFire(cron: Cron, before: Date): Date | undefined {
  return cron.previousRuns(1, before)[0];
}
