import { readdir, stat } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import { CaravanError } from '../errors/CaravanError.js';

export interface WorkflowFileRef {
  /** Absolute path, for reading. */
  path: string;
  /** Path relative to the working directory when inside it, for messages. */
  display: string;
}

const SKIP_DIRS = new Set(['node_modules', '.git']);

/**
 * Expands files and directories into workflow files. Directories are searched recursively
 * for *.yaml and *.yml (hidden directories and node_modules skipped, symlinked directories
 * not followed, so a link loop cannot hang validation); a file named explicitly is taken
 * whatever its extension. The result is sorted, so output is stable across machines.
 */
export async function findWorkflowFiles(inputs: readonly string[], cwd: string): Promise<WorkflowFileRef[]> {
  const found = new Map<string, WorkflowFileRef>();
  for (const input of inputs) {
    const abs = isAbsolute(input) ? input : resolve(cwd, input);
    let info;
    try {
      info = await stat(abs);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') {
        throw new CaravanError('PATH_NOT_FOUND', `no such file or directory: ${input}`, { data: { path: input }, cause: e });
      }
      throw new CaravanError('IO', `cannot read ${input}: ${(e as Error).message}`, { data: { path: input }, cause: e });
    }
    if (info.isDirectory()) {
      for (const file of await walk(abs)) found.set(file, { path: file, display: display(file, cwd) });
    } else {
      found.set(abs, { path: abs, display: display(abs, cwd) });
    }
  }
  return [...found.values()].sort((a, b) => (a.display < b.display ? -1 : a.display > b.display ? 1 : 0));
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  const stack = [dir];
  while (stack.length > 0) {
    const current = stack.pop() as string;
    let entries;
    try {
      entries = await readdir(current, { withFileTypes: true });
    } catch (e) {
      throw new CaravanError('IO', `cannot list ${current}: ${(e as Error).message}`, { data: { path: current }, cause: e });
    }
    for (const entry of entries) {
      const full = join(current, entry.name);
      if (entry.isDirectory()) {
        if (!entry.name.startsWith('.') && !SKIP_DIRS.has(entry.name)) stack.push(full);
      } else if ((entry.isFile() || entry.isSymbolicLink()) && /\.ya?ml$/i.test(entry.name)) {
        if (entry.isSymbolicLink()) {
          // A dangling link (or one to a directory) is not a workflow file: passed over.
          const target = await stat(full).catch(() => undefined);
          if (target === undefined || !target.isFile()) continue;
        }
        out.push(full);
      }
    }
  }
  return out;
}

function display(abs: string, cwd: string): string {
  const rel = relative(cwd, abs);
  return rel !== '' && !rel.startsWith('..' + sep) && rel !== '..' && !isAbsolute(rel) ? rel.split(sep).join('/') : abs;
}
