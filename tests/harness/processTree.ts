import { readFileSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';

/**
 * Processes as Linux shows them under /proc, for tests that must leave none behind: a
 * process tree is read before it is stopped, because its members are re-parented to init
 * once their parent dies. A process that is gone while being read is simply not listed.
 */

/** Every process below `root`, from /proc (ppid is the 4th field of /proc/<pid>/stat). */
export async function descendants(root: number): Promise<number[]> {
  const parent = new Map<number, number>();
  for (const pid of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid)) continue;
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (Number.isFinite(ppid)) parent.set(Number(pid), ppid);
  }
  const below = (p: number): number[] => [...parent].filter(([, pp]) => pp === p).flatMap(([c]) => [c, ...below(c)]);
  return below(root);
}

/** Processes other than this one whose command line names `text` (a test agent's helpers carry its data directory). */
export async function processesMentioning(text: string): Promise<number[]> {
  const out: number[] = [];
  for (const pid of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    if (readQuietly(`/proc/${pid}/cmdline`).includes(text)) out.push(Number(pid));
  }
  return out;
}

/** Whether `pid` still runs. A zombie still answers signal 0, but holds nothing: it counts as gone. */
export function isAlive(pid: number): boolean {
  try {
    return !readQuietly(`/proc/${pid}/stat`).includes(') Z ') && (process.kill(pid, 0), true);
  } catch {
    // ESRCH: no such process.
    return false;
  }
}

/** `pid` and its command line, for a message naming a process left behind. */
export function describeProcess(pid: number): string {
  return `${pid} ${readQuietly(`/proc/${pid}/cmdline`).split('\0').join(' ').trim()}`;
}

function readQuietly(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    // The process ended meanwhile: nothing to read is the answer.
    return '';
  }
}
