import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { onTestFinished } from 'vitest';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { main } from '../../engine/cli/main.js';

const exec = promisify(execFile);

/** The `caravan` command as installed: it runs the compiled dist/, so build before the tests that use it. */
export const caravanBin = fileURLToPath(new URL('../../bin/caravan.js', import.meta.url));

/** Runs the CLI in-process against a working directory and captures what it prints. */
export async function cli(cwd: string, ...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, { cwd, stdout: (t) => { out += t; }, stderr: (t) => { err += t; } });
  return { code, out, err };
}

/**
 * Runs the built CLI in a process of its own, as a user would, and captures its output and
 * exit code. `env` replaces the whole environment when given.
 */
export async function runBin(argv: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<{ code: number; out: string; err: string }> {
  try {
    const r = await exec(process.execPath, [caravanBin, ...argv], { ...(options.cwd !== undefined ? { cwd: options.cwd } : {}), ...(options.env !== undefined ? { env: options.env } : {}), ...(options.timeoutMs !== undefined ? { timeout: options.timeoutMs } : {}) });
    return { code: 0, out: r.stdout, err: r.stderr };
  } catch (e) {
    // execFile's error for a non-zero exit carries the code and both streams.
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, out: x.stdout, err: x.stderr };
  }
}

/**
 * The built CLI left running in a process of its own (a `caravan run` another command acts
 * on meanwhile): its stdout and stderr together as they come, and its exit code. Killed when
 * the test ends if it is still running.
 */
export function startBin(argv: string[], options: { cwd: string }): { child: ChildProcess; out: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [caravanBin, ...argv], { cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  onTestFinished(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => { out += c.toString(); });
  child.stderr!.on('data', (c: Buffer) => { out += c.toString(); });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, out: () => out, exited };
}

/** Runs `fn` with these variables set (undefined: unset), then puts the environment back. */
export async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(vars)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}
