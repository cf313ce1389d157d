import picomatch from 'picomatch';
import type { Workflow } from '../spec/Workflow.js';

/** The push triggers of a workflow that a push of `changed` paths to `branch` fires. */
export function pushFires(workflow: Workflow, branch: string, changed: readonly string[]): boolean {
  for (const t of workflow.spec.triggers ?? []) {
    const push = t.push;
    if (push === undefined) continue;
    if (push.branches !== undefined && push.branches.length > 0 && !picomatch.isMatch(branch, push.branches)) continue;
    // No paths: any change on the branch fires it, as in GitHub Actions.
    if (push.paths === undefined || push.paths.length === 0) {
      if (changed.length > 0) return true;
      continue;
    }
    const match = picomatch(push.paths, { dot: true });
    if (changed.some((p) => match(p))) return true;
  }
  return false;
}
