import { createHash } from 'node:crypto';

/**
 * A run's workflow was not the one at the commit the run is recorded with: the file had
 * changes not committed (or was not committed at all). The record then says so, with the
 * SHA-256 of the definition as run, instead of letting the commit stand for it.
 */
export interface WorkflowDirty {
  /** SHA-256 (hex) of the workflow file as run, which the record keeps as workflow.yaml. */
  sha256: string;
}

/**
 * Whether `source`, read from `file` (relative to the repository root) in the working tree,
 * differs from that file at `commit`; undefined when it is exactly what the commit holds.
 * Without a commit (a repository with no commit yet) nothing is committed: dirty.
 */
export async function workflowDirty(store: { readFileAt(commit: string, file: string): Promise<Uint8Array | undefined> }, commit: string | undefined, file: string, source: string): Promise<WorkflowDirty | undefined> {
  const committed = commit !== undefined ? await store.readFileAt(commit, file) : undefined;
  if (committed !== undefined && new TextDecoder().decode(committed) === source) return undefined;
  return { sha256: createHash('sha256').update(source, 'utf8').digest('hex') };
}
