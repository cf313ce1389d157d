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
