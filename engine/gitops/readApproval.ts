import { toJsonPointer, type Diagnostic, type PendingDiagnostic } from '../spec/Diagnostic.js';
import { decodeSource } from '../spec/decodeSource.js';
import { parseYamlSource } from '../spec/parseYamlSource.js';
import { SourceLocator } from '../spec/SourceLocator.js';
import { validateSchema } from '../spec/validateSchema.js';

export interface Approval {
  runId: string;
  /** The approval task (or forEach instance key). */
  task: string;
  decision: 'approve' | 'reject';
  by: string;
  reason?: string;
}

const PATH = /^approvals\/([0-9]{8}-[0-9]{6}-[0-9a-f]{6})\/([A-Za-z0-9][A-Za-z0-9_-]{0,62}(?:\[[0-9]{1,6}\])?)\.ya?ml$/;

export type ApprovalResult = { ok: true; approval: Approval } | { ok: false; diagnostics: Diagnostic[] };

/**
 * Reads a GitOps approval: `approvals/<run-id>/<task>.yaml` on the watched branch. The path
 * names the run and the task (checked strictly, so a file can never point elsewhere); the
 * body is checked against schemas/approval.v1.json.
 */
export function readApproval(path: string, bytes: Uint8Array): ApprovalResult {
  const at = (message: string, code: Diagnostic['code'], line = 1, col = 1, pointer = ''): ApprovalResult => ({ ok: false, diagnostics: [{ file: path, line, col, severity: 'error', code, message, path: pointer }] });
  const m = PATH.exec(path);
  if (m === null) return at('an approval must be approvals/<run-id>/<task>.yaml, with a run id such as 20261121-120000-a1b2c3 and a task name', 'NAME_INVALID');
  const decoded = decodeSource(bytes);
  if (!decoded.ok) return at(decoded.diagnostic.message, decoded.diagnostic.code, decoded.diagnostic.line, decoded.diagnostic.col);
  const parsed = parseYamlSource(decoded.text);
  if (parsed.value === undefined) {
    const d = parsed.diagnostics[0]!;
    return at(d.message, d.code, d.line, d.col);
  }
  const problems: PendingDiagnostic[] = validateSchema(parsed.value, 'approval.v1.json');
  if (problems.length > 0) {
    const locator = new SourceLocator(decoded.text);
    return {
      ok: false,
      diagnostics: problems.map((p) => ({ file: path, ...locator.locate(p), severity: p.severity, code: p.code, message: p.message.replace(/the workflow/g, 'the approval'), path: toJsonPointer(p.path) })),
    };
  }
  const v = parsed.value as { decision: 'approve' | 'reject'; by: string; reason?: string };
  return { ok: true, approval: { runId: m[1]!, task: m[2]!, decision: v.decision, by: v.by, ...(v.reason !== undefined ? { reason: v.reason } : {}) } };
}
