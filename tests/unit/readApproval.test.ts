import { describe, expect, it } from 'vitest';
import { readApproval } from '../../engine/gitops/readApproval.js';

const body = (s: string): Uint8Array => new TextEncoder().encode(s);
const good = 'apiVersion: caravan/v1\nkind: Approval\ndecision: approve\nby: alice\nreason: tests are green\n';

describe('GitOps approval files', () => {
  it('reads the run and task from the path and the decision from the file', () => {
    expect(readApproval('approvals/20261121-120000-a1b2c3/review.yaml', body(good))).toEqual({
      ok: true,
      approval: { runId: '20261121-120000-a1b2c3', task: 'review', decision: 'approve', by: 'alice', reason: 'tests are green' },
    });
    expect(readApproval('approvals/20261121-120000-a1b2c3/gate[2].yml', body(good.replace('approve', 'reject')))).toMatchObject({ ok: true, approval: { task: 'gate[2]', decision: 'reject' } });
  });

  it.each([
    'approvals/../../etc/passwd.yaml',
    'approvals/20261121-120000-a1b2c3/../x.yaml',
    'approvals/not-a-run/review.yaml',
    'approvals/20261121-120000-a1b2c3/re;view.yaml',
    'elsewhere/20261121-120000-a1b2c3/review.yaml',
  ])('refuses the path %s', (path) => {
    expect(readApproval(path, body(good))).toEqual({
      ok: false,
      diagnostics: [{ file: path, line: 1, col: 1, severity: 'error', code: 'NAME_INVALID', message: 'an approval must be approvals/<run-id>/<task>.yaml, with a run id such as 20261121-120000-a1b2c3 and a task name', path: '' }],
    });
  });

  it('reports schema problems with positions', () => {
    const r = readApproval('approvals/20261121-120000-a1b2c3/review.yaml', body('apiVersion: caravan/v1\nkind: Approval\ndecision: maybe\nby: alice\nreasn: x\n'));
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.diagnostics.map((d) => `${d.line}:${d.col} ${d.code} ${d.message}`)).toEqual([
        "5:1 SCHEMA_UNKNOWN_FIELD unknown field 'reasn' in the approval; did you mean 'reason'?",
        '3:11 SCHEMA_ENUM decision must be one of approve, reject, not "maybe"',
      ]);
    }
  });
});
