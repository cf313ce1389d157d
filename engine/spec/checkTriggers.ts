import { Cron } from 'croner';
import type { PendingDiagnostic } from './Diagnostic.js';
import { parseDuration } from './parseDuration.js';
import { asArray, asRecord, asString } from './shape.js';

/**
 * The shortest catch-up window. The controller wakes a little after each scheduled time, so
 * a time up to this late counts as on time under every catch-up policy (docs/triggers.md); a
 * shorter window would drop runs that were merely a few seconds late.
 */
export const MIN_CATCHUP_WINDOW_MS = 60_000;

const MACROS = new Set(['@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight', '@hourly']);

/** Cron expressions, time zones, catch-up windows and push path globs: the schema cannot judge these. */
export function checkTriggers(spec: Record<string, unknown>): PendingDiagnostic[] {
  const out: PendingDiagnostic[] = [];
  asArray(spec['triggers']).forEach((t, i) => {
    const trigger = asRecord(t);
    const schedule = asRecord(trigger?.['schedule']);
    if (schedule !== undefined) {
      const base = ['spec', 'triggers', i, 'schedule'];
      const cron = asString(schedule['cron']);
      const tz = asString(schedule['timezone']);
      let tzOk = true;
      if (tz !== undefined) {
        try {
          new Intl.DateTimeFormat('en', { timeZone: tz });
        } catch {
          // Intl's RangeError only says the zone is unknown: the diagnostic says so with the path.
          tzOk = false;
          out.push(err('TIMEZONE_INVALID', `'${tz}' is not an IANA time zone (such as UTC or Europe/Berlin)`, [...base, 'timezone']));
        }
      }
      if (cron !== undefined) {
        const problem = cronProblem(cron, tzOk ? tz : undefined);
        if (problem !== undefined) out.push(err('CRON_INVALID', `cron '${cron}' ${problem}`, [...base, 'cron']));
      }
      out.push(...catchupProblems(schedule, base));
    }
    const push = asRecord(trigger?.['push']);
    if (push !== undefined) {
      asArray(push['paths']).forEach((p, j) => {
        const glob = asString(p);
        if (glob === undefined) return;
        const problem = globProblem(glob);
        if (problem !== undefined) {
          out.push(err('PATH_GLOB_INVALID', `path glob '${glob}' ${problem}`, ['spec', 'triggers', i, 'push', 'paths', j]));
        }
      });
    }
  });
  return out;
}

function cronProblem(cron: string, timezone: string | undefined): string | undefined {
  const trimmed = cron.trim();
  if (!MACROS.has(trimmed.toLowerCase())) {
    const fields = trimmed.split(/\s+/).length;
    if (fields !== 5) return `has ${fields} fields; use five (minute hour day-of-month month day-of-week) or a macro such as @daily`;
  }
  try {
    const job = new Cron(trimmed, { paused: true, ...(timezone !== undefined ? { timezone } : {}) });
    if (job.nextRun() === null) return 'never fires';
    return undefined;
  } catch (e) {
    const msg = e instanceof Error ? e.message.replace(/^CronPattern:\s*/, '') : String(e);
    return `is not valid: ${msg.charAt(0).toLowerCase()}${msg.slice(1)}`;
  }
}

function catchupProblems(schedule: Record<string, unknown>, base: Array<string | number>): PendingDiagnostic[] {
  const text = asString(schedule['catchupWindow']);
  // Malformed durations are the schema's to report (SCHEMA_FORMAT), once.
  const ms = text === undefined ? undefined : parseDuration(text);
  if (ms === undefined) return [];
  const path = [...base, 'catchupWindow'];
  if (schedule['catchup'] === 'none') {
    return [{ severity: 'warning', code: 'CATCHUP_WINDOW_UNUSED', message: `catchupWindow ${text} has no effect with catchup: none; remove it, or use catchup: last or all`, path }];
  }
  if (ms < MIN_CATCHUP_WINDOW_MS) {
    return [err('CATCHUP_WINDOW_TOO_SHORT', `catchupWindow ${text} is shorter than 1m, the lateness every scheduled time is allowed anyway; use at least 1m`, path)];
  }
  return [];
}

function globProblem(glob: string): string | undefined {
  if (glob.startsWith('/')) return 'must be relative to the repository root (no leading /)';
  if (glob.split('/').some((seg) => seg === '..')) return "must not contain '..'";
  if (glob.includes('\\')) return "must use '/' as the separator";
  return undefined;
}

function err(code: PendingDiagnostic['code'], message: string, path: Array<string | number>): PendingDiagnostic {
  return { severity: 'error', code, message, path };
}
