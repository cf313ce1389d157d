import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);

/** Runs git in `dir` with a fixed identity (tests never depend on the machine's config). */
export async function git(dir: string, ...args: string[]): Promise<string> {
  const r = await exec('git', ['-c', 'user.name=Test', '-c', 'user.email=test@example.com', '-c', 'commit.gpgsign=false', ...args], { cwd: dir, maxBuffer: 64 * 1024 * 1024 });
  return r.stdout;
}

/** A fresh repository with the given workflow files committed on main. */
export async function repoWith(workflows: Record<string, string>, commit = true): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'caravan-repo-'));
  await git(dir, 'init', '-q', '-b', 'main');
  await mkdir(join(dir, 'workflows'));
  for (const [name, text] of Object.entries(workflows)) await writeFile(join(dir, 'workflows', name), text);
  if (commit) {
    await git(dir, 'add', '-A');
    await git(dir, 'commit', '-q', '-m', 'workflows');
  }
  return dir;
}

export function workflow(name: string, spec: string): string {
  return `apiVersion: caravan/v1\nkind: Workflow\nmetadata:\n  name: ${name}\nspec:\n${spec}`;
}
