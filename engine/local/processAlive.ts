import { readFileSync } from 'node:fs';

/**
 * Whether a process with this PID exists on this machine (signal 0 checks without sending).
 * EPERM means it exists but belongs to someone else. It says nothing about whether it is the
 * same process as when the PID was noted: see LiveRuns for that.
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The start time of a process from /proc, or undefined where there is no /proc. */
export function processStartTime(pid: number): number | undefined {
  const start = Number(procStat(pid)?.[19]);
  return Number.isFinite(start) ? start : undefined;
}

/**
 * Whether the process noted as (pid, start time) is still the one running: a PID is reused
 * after its process dies, so a noted start time that differs means it is gone. Without a
 * noted start time (or without /proc) the PID alone decides.
 */
export function sameProcessAlive(pid: number, start: number | undefined): boolean {
  if (!processAlive(pid)) return false;
  const stat = procStat(pid);
  // A zombie (killed, not yet reaped by its new parent) answers signal 0 but is dead.
  if (stat !== undefined && (stat[0] === 'Z' || stat[0] === 'X')) return false;
  if (start === undefined || stat === undefined) return true;
  return Number(stat[19]) === start;
}

/** The fields of /proc/<pid>/stat from the third (the state) on, or undefined without /proc. */
function procStat(pid: number): string[] | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    // No such process, or no /proc on this system: the caller decides with what it has.
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}
