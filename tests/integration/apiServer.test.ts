import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterEach, describe, expect, it } from 'vitest';
import { ApiTokens } from '../../engine/api/ApiTokens.js';
import { apiSchema, type ApiSchemaName } from '../../engine/api/apiSchemas.js';
import { controllerBackend } from '../../engine/api/controllerBackend.js';
import { ControllerServer, type InjectRequest, type InjectResponse } from '../../engine/api/ControllerServer.js';
import { startController, type RunningController } from '../../engine/api/startController.js';
import { MemoryLogger } from '../../engine/run/Logger.js';
import { git, tempRepo, workflow } from '../harness/gitRepo.js';
import { until } from '../harness/until.js';

/**
 * The REST API through fastify's inject() over a real controller on a real Git repository
 * (embedded default: local executor, in-memory bus): runs start, are read back, paused,
 * cancelled and approved, and every refusal has its status and error body.
 */

const OPERATOR = 'operator-token-0123456789abcdef';
const ALICE = 'alice-approver-token-0123456789ab';
const BOB = 'bob-approver-token-0123456789abcd';
const VIEWER = 'viewer-token-0123456789abcdefgh';

const quick = workflow('quick', '  params:\n    quarter: { type: string, default: "Q4", pattern: "^Q[1-4]$" }\n    copies: { type: integer, default: 1, minimum: 1 }\n  tasks:\n    - { name: hello, run: "echo hello ${{ params.quarter }}" }\n');
const gated = workflow('gated', '  tasks:\n    - { name: gate, approval: { approvers: [alice], timeout: 1h } }\n    - { name: after, needs: [gate], run: "echo after" }\n');
const slow = workflow('slow', '  tasks:\n    - { name: wait, run: "sleep 30" }\n    - { name: next, needs: [wait], run: "echo next" }\n');
const flaky = workflow('flaky', '  tasks:\n    - { name: prep, run: "echo prep >> prep-count" }\n    - { name: step, needs: [prep], run: "test -e go-ahead" }\n    - { name: after, needs: [step], run: "echo after" }\n');
const broken = 'apiVersion: caravan/v1\nkind: Workflow\nmetadata:\n  name: broken\nspec:\n  tasks:\n    - { name: a, needs: [nope], run: "true" }\n';

const opened: Array<{ server: ControllerServer; ctl: RunningController }> = [];
afterEach(async () => {
  for (const o of opened.splice(0)) {
    await o.server.close();
    await o.ctl.stop();
  }
});

interface Api {
  server: ControllerServer;
  ctl: RunningController;
  logger: MemoryLogger;
  dir: string;
  call(method: InjectRequest['method'], url: string, options?: { token?: string | null; body?: unknown; headers?: Record<string, string> }): Promise<InjectResponse & { json: () => Record<string, unknown> }>;
}

async function openApi(options: { openReads?: boolean; rateLimit?: { max: number; windowMs: number } } = {}): Promise<Api> {
  const dir = await tempRepo({ 'quick.yaml': quick, 'gated.yaml': gated, 'slow.yaml': slow, 'flaky.yaml': flaky, 'broken.yaml': broken });
  const logger = new MemoryLogger();
  const ctl = await startController({ repoDir: dir, intervalMs: 3_600_000, logger });
  const tokens = new ApiTokens([
    { name: 'ops', token: OPERATOR, roles: ['operator'] },
    { name: 'alice', token: ALICE, roles: ['approver'] },
    { name: 'bob', token: BOB, roles: ['approver', 'operator'] },
    { name: 'watcher', token: VIEWER, roles: ['viewer'] },
  ]);
  const server = await ControllerServer.unbound({
    host: '127.0.0.1', port: 0, logger, readiness: async () => ({ ready: true, details: {} }), onPush: () => undefined,
    api: { backend: controllerBackend(ctl.app, ctl.controller, undefined), tokens, ...options },
  });
  opened.push({ server, ctl });
  return {
    server, ctl, logger, dir,
    async call(method, url, o = {}) {
      const token = o.token === undefined ? OPERATOR : o.token;
      const res = await server.inject({
        method, url,
        headers: { ...(token !== null ? { authorization: `Bearer ${token}` } : {}), ...(o.body !== undefined ? { 'content-type': 'application/json' } : {}), ...o.headers },
        ...(o.body !== undefined ? { payload: typeof o.body === 'string' ? o.body : JSON.stringify(o.body) } : {}),
      });
      return { ...res, json: () => JSON.parse(res.body) as Record<string, unknown> };
    },
  };
}

const ajv = new Ajv2020({ strict: false, allErrors: true });
function expectSchema(name: ApiSchemaName, body: unknown): void {
  const validate = ajv.compile(apiSchema(name));
  expect(validate(body), JSON.stringify(validate.errors)).toBe(true);
}

function expectError(res: InjectResponse, status: number, code: string): Record<string, unknown> {
  expect(res.statusCode, res.body).toBe(status);
  expect(String(res.headers['content-type'])).toMatch(/^application\/json/);
  const body = JSON.parse(res.body) as { error: { code: string; message: string; details: Record<string, unknown> } };
  expect(body.error.code).toBe(code);
  expect(body.error.message.length).toBeGreaterThan(0);
  expectSchema('Error', body);
  return body.error.details;
}

async function runOver(api: Api, runId: string): Promise<Record<string, unknown>> {
  let run: Record<string, unknown> = {};
  await until(`run ${runId} to end`, async () => {
    run = (await api.call('GET', `/api/v1/runs/${runId}`)).json()['run'] as Record<string, unknown>;
    return run['status'] !== 'running' && run['status'] !== 'paused';
  });
  return run;
}

/** The run's final record on the audit branch (written just after the run ends). */
async function recorded(api: Api, runId: string): Promise<{ events: Array<{ type: string; by?: string }> }> {
  let events: Array<{ type: string; by?: string }> = [];
  await until(`run ${runId} to be recorded as over`, async () => {
    const r = await api.ctl.app.audit.readRun(runId);
    events = (r?.events ?? []) as Array<{ type: string; by?: string }>;
    return r !== undefined && r.run.status !== 'running' && r.run.status !== 'paused';
  });
  return { events };
}

describe('workflows', () => {
  it('lists every workflow file at the synced commit with its validity, diagnostics, version and last run', async () => {
    const api = await openApi();
    const head = (await git(api.dir, 'rev-parse', 'HEAD')).trim();
    const res = await api.call('GET', '/api/v1/workflows', { token: VIEWER });
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expectSchema('WorkflowList', body);
    expect(body['commit']).toBe(head);
    const rows = body['workflows'] as Array<Record<string, unknown>>;
    expect(rows.map((w) => w['name']).sort()).toEqual(['broken', 'flaky', 'gated', 'quick', 'slow']);
    const bad = rows.find((w) => w['name'] === 'broken')!;
    expect(bad['valid']).toBe(false);
    expect((bad['diagnostics'] as Array<{ severity: string; line: number }>).some((d) => d.severity === 'error' && d.line > 0)).toBe(true);
    const good = rows.find((w) => w['name'] === 'quick')!;
    expect(good).toMatchObject({ valid: true, version: head, lastRun: null, lastSync: { commit: head, status: 'partial' } });
  });

  it('one workflow comes with its DAG as nodes and edges; an unknown one is 404 and a bad name 400', async () => {
    const api = await openApi();
    const res = await api.call('GET', '/api/v1/workflows/gated');
    expect(res.statusCode).toBe(200);
    expectSchema('WorkflowDetail', res.json());
    expect(res.json()['dag']).toEqual({ nodes: [{ id: 'gate', kind: 'approval' }, { id: 'after', kind: 'run' }], edges: [{ from: 'gate', to: 'after' }], mermaid: expect.stringMatching(/^flowchart TD\n/) });
    // The same picture as caravan graph draws.
    const mermaid = (res.json()['dag'] as { mermaid: string }).mermaid;
    expect(mermaid).toContain('{{"gate<br/>approval');
    expect(mermaid).toContain('  n1 --> n2\n');
    expectError(await api.call('GET', '/api/v1/workflows/nothing'), 404, 'WORKFLOW_NOT_FOUND');
    expect(expectError(await api.call('GET', '/api/v1/workflows/Bad_Name'), 400, 'BAD_REQUEST')['field']).toBe('params.name');
  });
});

describe('starting runs', () => {
  it('201 with the run id and URLs; the run is read back, and its logs', async () => {
    const api = await openApi();
    const res = await api.call('POST', '/api/v1/workflows/quick/runs', { body: { params: { quarter: 'Q2' } } });
    expect(res.statusCode, res.body).toBe(201);
    const started = res.json();
    expectSchema('RunStarted', started);
    const runId = started['runId'] as string;
    expect(started).toMatchObject({ workflow: 'quick', created: true, urls: { run: `/api/v1/runs/${runId}`, logs: `/api/v1/runs/${runId}/logs` } });
    expect(res.headers['location']).toBe(`/api/v1/runs/${runId}`);
    const run = await runOver(api, runId);
    expect(run).toMatchObject({ runId, workflow: 'quick', status: 'succeeded', trigger: 'api:ops', params: { quarter: 'Q2', copies: 1 } });
    const detail = (await api.call('GET', `/api/v1/runs/${runId}`, { token: VIEWER })).json();
    expectSchema('RunDetail', detail);
    const logs = await api.call('GET', `/api/v1/runs/${runId}/logs/hello`, { token: VIEWER });
    expect(logs.json()['lines']).toMatchObject([{ task: 'hello', stream: 'stdout', line: 'hello Q2' }]);
    expectSchema('LogLines', logs.json());
    const later = new Date(Date.now() + 3_600_000).toISOString();
    expect((await api.call('GET', `/api/v1/runs/${runId}/logs/hello?since=${encodeURIComponent(later)}`)).json()['lines']).toEqual([]);
    expectError(await api.call('GET', `/api/v1/runs/${runId}/logs/nope`), 404, 'TASK_NOT_FOUND');
    // The logs URL the start answered with is a route: every task's lines.
    const all = await api.call('GET', (started['urls'] as { logs: string }).logs, { token: VIEWER });
    expect(all.statusCode, all.body).toBe(200);
    expect(all.json()['lines']).toMatchObject([{ task: 'hello', line: 'hello Q2' }]);
  });

  it('the same idempotency key returns the same run (200) and does not start another; other params with it are 409', async () => {
    const api = await openApi();
    const body = { params: { quarter: 'Q1' }, idempotencyKey: 'deploy-42' };
    const first = await api.call('POST', '/api/v1/workflows/quick/runs', { body });
    expect(first.statusCode).toBe(201);
    const again = await api.call('POST', '/api/v1/workflows/quick/runs', { body });
    expect(again.statusCode).toBe(200);
    expect(again.json()).toMatchObject({ runId: first.json()['runId'], created: false });
    await runOver(api, first.json()['runId'] as string);
    const runs = (await api.call('GET', '/api/v1/runs?workflow=quick')).json()['runs'] as unknown[];
    expect(runs).toHaveLength(1);
    expectError(await api.call('POST', '/api/v1/workflows/quick/runs', { body: { ...body, params: { quarter: 'Q3' } } }), 409, 'IDEMPOTENCY_KEY_REUSED');
    // Another caller's key of the same name is another key.
    const bobs = await api.call('POST', '/api/v1/workflows/quick/runs', { body, token: BOB });
    expect(bobs.statusCode).toBe(201);
    expect(bobs.json()['runId']).not.toBe(first.json()['runId']);
    await runOver(api, bobs.json()['runId'] as string);
  });

  it('params are checked against the workflow: 422 naming the param; unknown body fields and wrong types are 400 naming the field', async () => {
    const api = await openApi();
    const bad = expectError(await api.call('POST', '/api/v1/workflows/quick/runs', { body: { params: { quarter: 'Q9' } } }), 422, 'PARAM_INVALID');
    expect(bad['params']).toEqual(['quarter']);
    expect(expectError(await api.call('POST', '/api/v1/workflows/quick/runs', { body: { params: { nope: 1 } } }), 422, 'PARAM_INVALID')['params']).toEqual(['nope']);
    expect(expectError(await api.call('POST', '/api/v1/workflows/quick/runs', { body: { params: 'x' } }), 400, 'BAD_REQUEST')['field']).toBe('body.params');
    expect(expectError(await api.call('POST', '/api/v1/workflows/quick/runs', { body: { idempotencyKey: 7 } }), 400, 'BAD_REQUEST')['field']).toBe('body.idempotencyKey');
    expect(expectError(await api.call('POST', '/api/v1/workflows/quick/runs', { body: { extra: true } }), 400, 'BAD_REQUEST')['field']).toBe('body.extra');
    expectError(await api.call('POST', '/api/v1/workflows/quick/runs', { body: '{"params": ' }), 400, 'BODY_INVALID');
    expectError(await api.call('POST', '/api/v1/workflows/broken/runs', { body: {} }), 422, 'WORKFLOW_INVALID');
    expectError(await api.call('POST', '/api/v1/workflows/absent/runs', { body: {} }), 404, 'WORKFLOW_NOT_FOUND');
    expect((await api.call('GET', '/api/v1/runs')).json()['runs']).toEqual([]);
  });
});

describe('secrets', () => {
  it('a secret param is masked in the run, its list row and the log; the value is in no answer or log line', async () => {
    const api = await openApi();
    const secret = 'hunter2-very-secret-value-7731';
    const wf = workflow('vault', '  params:\n    password: { type: string, secret: true }\n  tasks:\n    - { name: use, run: "echo using ${{ params.password }}" }\n');
    await writeFile(join(api.dir, 'workflows', 'vault.yaml'), wf);
    await git(api.dir, 'add', '-A');
    await git(api.dir, 'commit', '-q', '-m', 'vault');
    await api.ctl.controller.syncNow('test');
    const res = await api.call('POST', '/api/v1/workflows/vault/runs', { body: { params: { password: secret } } });
    expect(res.statusCode, res.body).toBe(201);
    const runId = res.json()['runId'] as string;
    const run = await runOver(api, runId);
    expect(run['params']).toEqual({ password: '***' });
    const answers = [
      (await api.call('GET', `/api/v1/runs/${runId}`)).body,
      (await api.call('GET', `/api/v1/runs/${runId}/logs/use`)).body,
      (await api.call('GET', '/api/v1/runs')).body,
      (await api.call('GET', '/api/v1/workflows/vault')).body,
    ];
    expect(answers[1]).toContain('using ***');
    for (const a of answers) expect(a).not.toContain(secret);
    expect(JSON.stringify(api.logger.lines())).not.toContain(secret);
  });
});

describe('listing runs', () => {
  it('pages newest first with a cursor, and filters by workflow and status', async () => {
    const api = await openApi();
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await api.call('POST', '/api/v1/workflows/quick/runs', { body: {} });
      ids.push(r.json()['runId'] as string);
      // The list reads a recorded run's status from the audit branch: wait for its final record.
      await recorded(api, ids[i]!);
    }
    const page1 = (await api.call('GET', '/api/v1/runs?limit=2')).json();
    expectSchema('RunPage', page1);
    const page2 = (await api.call('GET', `/api/v1/runs?limit=2&cursor=${page1['nextCursor'] as string}`)).json();
    const seen = [...(page1['runs'] as Array<{ runId: string }>), ...(page2['runs'] as Array<{ runId: string }>)].map((r) => r.runId);
    expect(seen).toEqual([...ids].sort().reverse());
    expect(page2['nextCursor']).toBeUndefined();
    expect((await api.call('GET', '/api/v1/runs?status=failed')).json()['runs']).toEqual([]);
    expect(((await api.call('GET', '/api/v1/runs?workflow=quick&status=succeeded')).json()['runs'] as unknown[]).length).toBe(3);
    expect(expectError(await api.call('GET', '/api/v1/runs?limit=0'), 400, 'BAD_REQUEST')['field']).toBe('querystring.limit');
    expect(expectError(await api.call('GET', '/api/v1/runs?status=exploded'), 400, 'BAD_REQUEST')['field']).toBe('querystring.status');
    expect(expectError(await api.call('GET', '/api/v1/runs?since=yesterday'), 400, 'BAD_REQUEST')['field']).toBe('querystring.since');
    expectError(await api.call('GET', '/api/v1/runs?cursor=Li4vLi4v'), 400, 'USAGE');
    expectError(await api.call('GET', '/api/v1/runs/20990101-000000-abcdef'), 404, 'RUN_NOT_FOUND');
  });
});

describe('actions on a run', () => {
  it('pause, unpause and cancel are recorded with the caller; unpausing a running or finished run is 409', async () => {
    const api = await openApi();
    const runId = (await api.call('POST', '/api/v1/workflows/slow/runs', { body: {} })).json()['runId'] as string;
    await until('the run to be live', async () => (await api.call('GET', `/api/v1/runs/${runId}`)).json()['live'] === true);
    expectError(await api.call('POST', `/api/v1/runs/${runId}/unpause`), 409, 'RUN_NOT_PAUSED');
    const paused = await api.call('POST', `/api/v1/runs/${runId}/pause`, { body: { comment: 'lunch' } });
    expect(paused.statusCode, paused.body).toBe(202);
    expectSchema('ControlAccepted', paused.json());
    await until('the run to be paused', async () => ((await api.call('GET', `/api/v1/runs/${runId}`)).json()['run'] as { status: string }).status === 'paused');
    expectError(await api.call('POST', `/api/v1/runs/${runId}/pause`), 409, 'RUN_PAUSED');
    expect((await api.call('POST', `/api/v1/runs/${runId}/unpause`)).statusCode).toBe(202);
    expectError(await api.call('POST', `/api/v1/runs/${runId}/cancel`, { token: ALICE }), 403, 'FORBIDDEN');
    expect((await api.call('POST', `/api/v1/runs/${runId}/cancel`, { body: { comment: 'not today' } })).statusCode).toBe(202);
    const run = await runOver(api, runId);
    expect(run['status']).toBe('cancelled');
    expect(run['cancelReason']).toContain('not today');
    expectError(await api.call('POST', `/api/v1/runs/${runId}/unpause`), 409, 'RUN_NOT_LIVE');
    const stored = await recorded(api, runId);
    const by = stored.events.filter((e) => e.type === 'run.paused' || e.type === 'run.resumed' || e.type === 'run.cancelled').map((e) => (e as { by?: string }).by);
    expect(by).toEqual(['ops', 'ops', 'ops']);
  });

  it('approvers are enforced against the token name: bob is refused (403, recorded), alice approves (recorded), a viewer may not', async () => {
    const api = await openApi();
    const runId = (await api.call('POST', '/api/v1/workflows/gated/runs', { body: {} })).json()['runId'] as string;
    await until('the gate to wait', async () => ((await api.call('GET', `/api/v1/runs/${runId}`)).json()['run'] as { tasks: Record<string, { status: string }> }).tasks['gate']?.status === 'waiting');
    expectError(await api.call('POST', `/api/v1/runs/${runId}/tasks/gate/approve`, { token: OPERATOR }), 403, 'FORBIDDEN');
    expectError(await api.call('POST', `/api/v1/runs/${runId}/tasks/gate/approve`, { token: VIEWER }), 403, 'FORBIDDEN');
    expect(expectError(await api.call('POST', `/api/v1/runs/${runId}/tasks/gate/approve`, { token: BOB }), 403, 'NOT_AN_APPROVER')['approvers']).toEqual(['alice']);
    expectError(await api.call('POST', `/api/v1/runs/${runId}/tasks/nope/approve`, { token: ALICE }), 404, 'TASK_NOT_FOUND');
    expectError(await api.call('POST', `/api/v1/runs/${runId}/tasks/after/approve`, { token: ALICE }), 409, 'TASK_NOT_WAITING');
    const ok = await api.call('POST', `/api/v1/runs/${runId}/tasks/gate/approve`, { token: ALICE, body: { comment: 'ship it' } });
    expect(ok.statusCode, ok.body).toBe(202);
    expect(ok.json()).toEqual({ runId, action: 'approve', task: 'gate', by: 'alice' });
    expect((await runOver(api, runId))['status']).toBe('succeeded');
    const { events } = await recorded(api, runId);
    expect(events.filter((e) => e.type === 'approval.refused').map((e) => (e as { by: string }).by)).toEqual(['bob']);
    expect(events.filter((e) => e.type === 'approval.granted').map((e) => (e as { by: string }).by)).toEqual(['alice']);
    expectError(await api.call('POST', `/api/v1/runs/${runId}/tasks/gate/reject`, { token: ALICE }), 409, 'RUN_NOT_LIVE');
  });
});

describe('retrying a run', () => {
  it('201 with the new run, reusing what succeeded and recording the caller; errors for a live run, nothing to retry, an unknown task and a bad id', async () => {
    const api = await openApi();
    const failed = (await api.call('POST', '/api/v1/workflows/flaky/runs', { body: {} })).json()['runId'] as string;
    expect((await runOver(api, failed))['status']).toBe('failed');
    await recorded(api, failed);
    expectError(await api.call('POST', `/api/v1/runs/${failed}/retry`, { token: VIEWER }), 403, 'FORBIDDEN');
    expectError(await api.call('POST', `/api/v1/runs/${failed}/retry`, { body: { from: 'nope' } }), 404, 'TASK_NOT_FOUND');
    expect(expectError(await api.call('POST', '/api/v1/runs/..%2F..%2Fx/retry'), 400, 'BAD_REQUEST')['field']).toBe('params.id');
    await writeFile(join(api.dir, 'go-ahead'), '');
    const res = await api.call('POST', `/api/v1/runs/${failed}/retry`);
    expect(res.statusCode, res.body).toBe(201);
    expectSchema('RetryStarted', res.json());
    const retry = res.json() as { runId: string; retryOf: string; reused: string[]; rerun: Array<{ task: string; why: string }> };
    expect([retry.retryOf, retry.reused, retry.rerun]).toEqual([failed, ['prep'], [{ task: 'step', why: 'failed' }, { task: 'after', why: 'skipped' }]]);
    const run = await runOver(api, retry.runId);
    expect([run['status'], run['retryOf'], run['trigger']]).toEqual(['succeeded', failed, `retry:${failed}:by:ops`]);
    // prep ran once, in the first run: the retry reused it.
    expect(await readFile(join(api.dir, 'prep-count'), 'utf8')).toBe('prep\n');
    await recorded(api, retry.runId);
    expectError(await api.call('POST', `/api/v1/runs/${retry.runId}/retry`), 409, 'NOTHING_TO_RETRY');
    const slowRun = (await api.call('POST', '/api/v1/workflows/slow/runs', { body: {} })).json()['runId'] as string;
    await until('the slow run to be live', async () => (await api.call('GET', `/api/v1/runs/${slowRun}`)).json()['live'] === true);
    expectError(await api.call('POST', `/api/v1/runs/${slowRun}/retry`), 409, 'RUN_IN_PROGRESS');
    await api.call('POST', `/api/v1/runs/${slowRun}/cancel`);
    await runOver(api, slowRun);
  });
});

describe('syncs', () => {
  it('lists the sync reports and reads one by commit', async () => {
    const api = await openApi();
    const head = (await git(api.dir, 'rev-parse', 'HEAD')).trim();
    const list = (await api.call('GET', '/api/v1/syncs')).json();
    expectSchema('SyncList', list);
    expect(list['syncs']).toMatchObject([{ commit: head, status: 'partial' }]);
    const one = await api.call('GET', `/api/v1/syncs/${head}`);
    expect(one.json()).toMatchObject({ commit: head, status: 'partial', invalid: [{ file: 'workflows/broken.yaml' }] });
    expectError(await api.call('GET', `/api/v1/syncs/${'0'.repeat(40)}`), 404, 'SYNC_NOT_FOUND');
    expectError(await api.call('GET', '/api/v1/syncs/HEAD'), 400, 'BAD_REQUEST');
  });
});

describe('authentication, roles and limits', () => {
  it('reads and mutations need a token unless reads are opened; a bad token is 401 with WWW-Authenticate', async () => {
    const api = await openApi();
    const none = await api.call('GET', '/api/v1/runs', { token: null });
    expectError(none, 401, 'UNAUTHENTICATED');
    expect(none.headers['www-authenticate']).toMatch(/^Bearer/);
    expectError(await api.call('GET', '/api/v1/runs', { token: 'x'.repeat(32) }), 401, 'UNAUTHENTICATED');
    expectError(await api.call('GET', '/api/v1/runs', { token: null, headers: { authorization: `Basic ${OPERATOR}` } }), 401, 'UNAUTHENTICATED');
    expectError(await api.call('POST', '/api/v1/workflows/quick/runs', { token: VIEWER, body: {} }), 403, 'FORBIDDEN');
    const open = await openApi({ openReads: true });
    expect((await open.call('GET', '/api/v1/runs', { token: null })).statusCode).toBe(200);
    expectError(await open.call('POST', '/api/v1/workflows/quick/runs', { token: null, body: {} }), 401, 'UNAUTHENTICATED');
  });

  it('the rate limit is per token: 429 with Retry-After for one, the other goes on', async () => {
    const api = await openApi({ rateLimit: { max: 3, windowMs: 60_000 } });
    for (let i = 0; i < 3; i++) expect((await api.call('GET', '/api/v1/syncs', { token: VIEWER })).statusCode).toBe(200);
    const limited = await api.call('GET', '/api/v1/syncs', { token: VIEWER });
    expectError(limited, 429, 'RATE_LIMITED');
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    expect((await api.call('GET', '/api/v1/syncs', { token: OPERATOR })).statusCode).toBe(200);
  });

  it('bodies over the limit are 413, other content types 415; API answers carry the security headers and no CORS', async () => {
    const api = await openApi();
    expectError(await api.call('POST', '/api/v1/workflows/quick/runs', { body: JSON.stringify({ params: { quarter: 'x'.repeat(2 * 1024 * 1024) } }) }), 413, 'BODY_TOO_LARGE');
    expectError(await api.server.inject({ method: 'POST', url: '/api/v1/workflows/quick/runs', headers: { authorization: `Bearer ${OPERATOR}`, 'content-type': 'text/plain' }, payload: 'hi' }), 415, 'UNSUPPORTED_MEDIA_TYPE');
    const res = await api.call('GET', '/api/v1/runs', { headers: { origin: 'https://evil.example' } });
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.headers['x-powered-by']).toBeUndefined();
    expect(res.headers['access-control-allow-origin']).toBeUndefined();
    const preflight = await api.server.inject({ method: 'OPTIONS', url: '/api/v1/runs', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } });
    expect(preflight.statusCode).toBeGreaterThanOrEqual(400);
    expect(preflight.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('no token appears in any log line, whatever the request', async () => {
    const api = await openApi();
    await api.call('GET', '/api/v1/runs');
    await api.call('GET', '/api/v1/runs', { token: `${OPERATOR}x` });
    await api.call('POST', '/api/v1/workflows/quick/runs', { token: VIEWER, body: {} });
    await api.call('GET', `/api/v1/runs/${OPERATOR}`);
    await api.call('GET', `/api/v1/workflows/${ALICE}`);
    const lines = JSON.stringify(api.logger.lines());
    expect(lines).toContain('api request');
    for (const t of [OPERATOR, ALICE, BOB, VIEWER]) expect(lines).not.toContain(t);
  });
});

describe('a follower', () => {
  it('refuses mutations with 503 naming the leader, and still answers reads', async () => {
    const api = await openApi();
    const backend = { ...controllerBackend(api.ctl.app, api.ctl.controller, undefined), role: () => 'follower' as const, leaderAddress: async () => 'http://leader.example:8080' };
    const logger = new MemoryLogger();
    const server = await ControllerServer.unbound({ host: '127.0.0.1', port: 0, logger, readiness: async () => ({ ready: true, details: {} }), onPush: () => undefined, api: { backend, tokens: new ApiTokens([{ name: 'ops', token: OPERATOR, roles: ['operator'] }]) } });
    try {
      const res = await server.inject({ method: 'POST', url: '/api/v1/workflows/quick/runs', headers: { authorization: `Bearer ${OPERATOR}`, 'content-type': 'application/json' }, payload: '{}' });
      expect(expectError(res, 503, 'NOT_LEADER')).toEqual({ role: 'follower', leader: 'http://leader.example:8080' });
      expect((await server.inject({ method: 'GET', url: '/api/v1/workflows', headers: { authorization: `Bearer ${OPERATOR}` } })).statusCode).toBe(200);
    } finally {
      await server.close();
    }
  });
});

describe('tokens file', () => {
  it('reads names, tokens, token files and roles; problems name the file, line and field', async () => {
    const api = await openApi();
    const file = join(api.dir, 'tokens.yaml');
    await writeFile(join(api.dir, 'ci.token'), `${BOB}\n`);
    await writeFile(file, `- name: ops\n  token: ${OPERATOR}\n  role: operator\n- name: ci\n  tokenFile: ci.token\n  role: [viewer, approver]\n`);
    const tokens = await ApiTokens.load(file, {});
    expect(tokens.authenticate(OPERATOR)).toMatchObject({ name: 'ops' });
    expect([...tokens.authenticate(BOB)!.roles]).toEqual(['viewer', 'approver']);
    expect(tokens.authenticate(ALICE)).toBeUndefined();
    const env = await ApiTokens.load(undefined, { CARAVAN_API_TOKEN: ALICE });
    expect(env.authenticate(ALICE)).toMatchObject({ name: 'admin' });
    await writeFile(file, `- name: ops\n  token: ${OPERATOR}\n  role: admin\n`);
    await expect(ApiTokens.load(file, {})).rejects.toThrow(`${file}:3: field role of 'ops' must be one of viewer, operator, approver`);
    await writeFile(file, `- name: ops\n  token: short\n  role: viewer\n`);
    await expect(ApiTokens.load(file, {})).rejects.toThrow(`${file}:2: token of 'ops': a token must be`);
    await writeFile(file, `- name: ops\n  token: ${OPERATOR}\n  roles: viewer\n`);
    await expect(ApiTokens.load(file, {})).rejects.toThrow(`${file}:3: unknown field 'roles'`);
    await writeFile(file, `- name: ops\n  token: ${OPERATOR}\n  role: viewer\n- name: ops2\n  token: ${OPERATOR}\n  role: viewer\n`);
    await expect(ApiTokens.load(file, {})).rejects.toThrow('same secret');
    await expect(ApiTokens.load(file, {})).rejects.not.toThrow(OPERATOR);
  });
});
