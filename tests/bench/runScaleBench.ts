import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface ScaleResult {
  suite: 'run-scale';
  tasks: number;
  peak_rss_mb: number;
  peak_running: number;
}

/** Peak RSS of a process running 10,000 concurrent `sleep` tasks (measured in a child process). */
export function runScaleBench(n = 10_000): ScaleResult {
  const child = fileURLToPath(new URL('./runScaleChild.ts', import.meta.url));
  const out = execFileSync(process.execPath, ['--import', 'tsx', child, String(n), '3s'], { encoding: 'utf8' });
  const r = JSON.parse(out.trim().split('\n').pop()!) as { status: string; tasks: number; peak_running: number; peak_rss_mb: number };
  if (r.status !== 'succeeded') throw new Error(`scale run ${r.status}`);
  return { suite: 'run-scale', tasks: r.tasks, peak_rss_mb: r.peak_rss_mb, peak_running: r.peak_running };
}
