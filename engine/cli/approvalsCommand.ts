import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CaravanError } from '../errors/CaravanError.js';
import { EXIT, type ExitCode } from './exitCodes.js';
import { findRepoRoot } from '../gitops/readTreeAtRef.js';
import { readApproval, type Approval, type ApprovalResult } from '../gitops/readApproval.js';
import { readBoundedFile } from '../spec/readBoundedFile.js';
import { CaravanApp } from '../app/CaravanApp.js';
import { textLine } from '../spec/formatDiagnostics.js';
import type { Io } from './Io.js';

/**
 * `caravan approvals check|apply`: checks the GitOps approval files under approvals/ and,
 * with apply, hands their decisions to runs live on this machine. The controller does the
 * same for the watched branch.
 */
/** An approval is a few lines of YAML; anything larger is not one. */
const MAX_APPROVAL_BYTES = 64 * 1024;

export async function approvalsCommand(apply: boolean, io: Io): Promise<ExitCode> {
  const root = await findRepoRoot(io.cwd);
  const found: Approval[] = [];
  let invalid = 0;
  let runs: string[];
  try {
    runs = (await readdir(join(root, 'approvals'), { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name).sort();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR') throw new CaravanError('IO', `cannot read approvals/: ${(e as Error).message}`, { cause: e, data: { path: join(root, 'approvals') } });
    io.stdout('no approvals/ directory\n');
    return EXIT.OK;
  }
  for (const run of runs) {
    for (const f of (await readdir(join(root, 'approvals', run))).sort()) {
      const path = `approvals/${run}/${f}`;
      const read = await readBoundedFile(join(root, path), MAX_APPROVAL_BYTES, root);
      const r: ApprovalResult = read.ok ? readApproval(path, read.bytes) : { ok: false, diagnostics: [{ file: path, line: 1, col: 1, severity: 'error', code: read.refusal.kind === 'too-large' ? 'FILE_TOO_LARGE' : 'FILE_REFUSED', message: read.refusal.message, path: '' }] };
      if (r.ok) found.push(r.approval);
      else {
        invalid++;
        for (const d of r.diagnostics) io.stdout(textLine(d));
      }
    }
  }
  io.stdout(`${found.length + invalid} approval file${found.length + invalid === 1 ? '' : 's'}: ${found.length} valid, ${invalid} invalid\n`);
  if (apply) {
    const app = new CaravanApp({ repoDir: root });
    for (const a of found) {
      if ((await app.live.get(a.runId)) === undefined) {
        io.stdout(`${a.runId}/${a.task}: run not live here, skipped\n`);
        continue;
      }
      await app.control.send(a.runId, { action: a.decision === 'approve' ? 'approve' : 'reject', task: a.task, by: a.by, ...(a.reason !== undefined ? { reason: a.reason } : {}) });
      io.stdout(`${a.runId}/${a.task}: ${a.decision} by ${a.by} sent\n`);
    }
  }
  return invalid > 0 ? EXIT.INVALID : EXIT.OK;
}
