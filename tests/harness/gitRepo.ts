import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { onTestFinished } from 'vitest';

const exec = promisify(execFile);

/** This checkout: its example workflows are the ones the docs and the demo use. */
const checkout = fileURLToPath(new URL('../../', import.meta.url));

/** Runs git in `dir` with a fixed identity (tests never depend on the machine's config). */
export async function git(dir: string, ...args: string[]): Promise<string> {
  const r = await exec('git', ['-c', 'user.name=Test', '-c', 'user.email=test@example.com', '-c', 'commit.gpgsign=false', ...args], { cwd: dir, maxBuffer: 64 * 1024 * 1024 });
  return r.stdout;
}

/**
 * A fresh repository with the given workflow files (under workflows/) committed on main;
 * with `commit` false they are left uncommitted. The caller removes it (see tempRepo).
 */
export async function repoWith(workflows: Record<string, string>, commit = true): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'caravan-repo-'));
  await git(dir, 'init', '-q', '-b', 'main');
  await mkdir(join(dir, 'workflows'));
  for (const [name, text] of Object.entries(workflows)) await writeFile(join(dir, 'workflows', name), text);
  if (commit) await commitAll(dir, 'workflows');
  return dir;
}

/** repoWith for one test: the repository is removed when the test ends, passed or not. */
export async function tempRepo(workflows: Record<string, string>, commit = true): Promise<string> {
  const dir = await repoWith(workflows, commit);
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A fresh repository with this checkout's example workflows/ committed on main. The caller removes it. */
export async function exampleRepo(prefix = 'caravan-examples-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  await git(dir, 'init', '-q', '-b', 'main');
  await cp(join(checkout, 'workflows'), join(dir, 'workflows'), { recursive: true });
  await commitAll(dir, 'workflows');
  return dir;
}

async function commitAll(dir: string, message: string): Promise<void> {
  await git(dir, 'add', '-A');
  await git(dir, 'commit', '-q', '-m', message);
}

/**
 * The text of a workflow file: the v1 header around `spec`, which is the YAML under `spec:`
 * indented by two spaces (`'  tasks:\n    - { name: a, run: "echo a" }\n'`).
 */
export function workflow(name: string, spec: string): string {
  return `apiVersion: caravan/v1\nkind: Workflow\nmetadata:\n  name: ${name}\nspec:\n${spec}`;
}
