import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { readJournal } from '../audit/readJournal.js';
import type { LogLine } from '../app/RunQueries.js';
import type { RunStatus } from '../run/RunEvent.js';
import type { RunSnapshot } from '../run/RunSnapshot.js';
import { validateText } from '../spec/validateWorkflows.js';
import { ApiError } from './ApiError.js';
import { apiSchema, responses } from './apiSchemas.js';
import type { RouteContext } from './RouteContext.js';
import { WORKFLOW_NAME } from './workflowRoutes.js';

/** Run ids are safe in paths and subjects: no leading dot, so never `.` or `..`. */
export const RUN_ID = '^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$';
/** A task, or one instance of it (`name[3]`). */
export const TASK_KEY = '^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}(\\[[0-9]{1,6}\\])?$';

const STATUSES: readonly RunStatus[] = ['running', 'paused', 'succeeded', 'failed', 'cancelled'];
const runParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', pattern: RUN_ID } } };
const taskParams = { type: 'object', required: ['id', 'task'], properties: { id: { type: 'string', pattern: RUN_ID }, task: { type: 'string', pattern: TASK_KEY } } };
const controlBody = apiSchema('ControlRequest');


/** Starting runs, reading them, their logs, and the actions on a live run. */
export async function runRoutes(api: FastifyInstance, ctx: RouteContext): Promise<void> {
  const { backend, prefix } = ctx;
  /** Answers already written for in-memory snapshots, dropped with them. */
  const written = new WeakMap<object, string>();
  const urls = (runId: string): { run: string; logs: string } => ({ run: `${prefix}/runs/${runId}`, logs: `${prefix}/runs/${runId}/logs` });

  api.post<{ Params: { name: string }; Body: { params?: Record<string, unknown>; idempotencyKey?: string } | undefined }>('/workflows/:name/runs', {
    config: { need: 'operate' },
    schema: {
      summary: 'Start a run', tags: ['runs'],
      params: { type: 'object', required: ['name'], properties: { name: { type: 'string', pattern: WORKFLOW_NAME } } },
      body: apiSchema('RunStartRequest'),
      response: responses({ 200: 'RunStarted', 201: 'RunStarted' }, [400, 401, 403, 404, 409, 413, 415, 422, 429, 503]),
    },
  }, async (request, reply) => {
    const workflow = request.params.name;
    const params = request.body?.params ?? {};
    const key = request.body?.idempotencyKey;
    const trigger = `api:${request.caller!.name}`;
    const start = async (): Promise<string> => (await backend.startRun(workflow, params, trigger)).runId;
    const { runId, created } = key !== undefined
      ? await ctx.idempotency.once({ caller: request.caller!.name, workflow, key, params }, start)
      : { runId: await start(), created: true };
    ctx.log.info(created ? 'run started over the API' : 'run start repeated with its idempotency key', { workflow, run: runId, caller: request.caller!.name });
    return reply.code(created ? 201 : 200).header('location', urls(runId).run).send({ runId, workflow, created, urls: urls(runId) });
  });

  api.get<{ Querystring: { workflow?: string; status?: RunStatus; since?: string; limit?: string; cursor?: string } }>('/runs', {
    config: { need: 'read' },
    schema: {
      summary: 'Runs, newest first, one page at a time', tags: ['runs'],
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: {
          workflow: { type: 'string', pattern: WORKFLOW_NAME },
          status: { type: 'string', enum: [...STATUSES] },
          since: { type: 'string', format: 'date-time', description: 'Runs started at or after this instant.' },
          limit: { type: 'string', pattern: '^[0-9]{1,3}$', description: 'Page size, 1 to 500 (default 50).' },
          cursor: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,200}$', description: 'nextCursor of the previous page.' },
        },
      },
      response: responses({ 200: 'RunPage' }, [400, 401, 429]),
    },
  }, async (request) => {
    const q = request.query;
    const limit = q.limit !== undefined ? Number(q.limit) : undefined;
    if (limit !== undefined && (limit < 1 || limit > 500)) throw new ApiError(400, 'BAD_REQUEST', 'querystring.limit: must be from 1 to 500', { field: 'querystring.limit' });
    return backend.queries.list({
      ...(q.workflow !== undefined ? { workflow: q.workflow } : {}),
      ...(q.status !== undefined ? { status: q.status } : {}),
      ...(q.since !== undefined ? { since: new Date(q.since).toISOString() } : {}),
      ...(limit !== undefined ? { limit } : {}),
      ...(q.cursor !== undefined ? { cursor: q.cursor } : {}),
    });
  });

  api.get<{ Params: { id: string } }>('/runs/:id', {
    config: { need: 'read' },
    schema: { summary: 'One run: its snapshot (secret params masked)', tags: ['runs'], params: runParams, response: responses({ 200: 'RunDetail' }, [400, 401, 404, 429]) },
  }, async (request, reply) => {
    const view = await backend.queries.get(request.params.id);
    const s = view.snapshot;
    // A run this controller drives comes back as the same snapshot object until its next
    // event: its answer is written once, not once per poll (a 1,000-task run is ~200 KB of JSON).
    let body = view.from === 'memory' ? written.get(s) : undefined;
    if (body === undefined) {
      const nomad = backend.nomadAddress;
      body = JSON.stringify({
        run: s,
        live: view.live !== undefined,
        from: view.from,
        links: {
          self: `${prefix}/runs/${s.runId}`,
          logs: `${prefix}/runs/${s.runId}/logs`,
          // Allocations are not recorded per attempt; the task's Nomad job lists them.
          ...(nomad !== undefined ? { nomadJobs: Object.keys(s.tasks).map((t) => `${nomad.replace(/\/+$/, '')}/ui/jobs/caravan-${s.workflow}-${t}`) } : {}),
        },
      });
      if (view.from === 'memory') written.set(s, body);
    }
    return reply.type('application/json; charset=utf-8').send(body);
  });

  for (const action of ['pause', 'unpause', 'cancel'] as const) {
    api.post<{ Params: { id: string }; Body: { comment?: string } | undefined }>(`/runs/:id/${action}`, {
      config: { need: 'operate' },
      schema: { summary: `${action[0]!.toUpperCase()}${action.slice(1)} a live run`, tags: ['runs'], params: runParams, body: controlBody, response: responses({ 202: 'ControlAccepted' }, [400, 401, 403, 404, 409, 413, 415, 429, 503]) },
    }, async (request, reply) => {
      const { id } = request.params;
      const { snapshot } = await backend.queries.get(id);
      checkRunAction(snapshot, action);
      const by = request.caller!.name;
      await backend.control.send(id, { action, by, ...(request.body?.comment !== undefined ? { reason: request.body.comment } : {}) });
      ctx.log.info('run action over the API', { run: id, action, caller: by });
      return reply.code(202).send({ runId: id, action, by });
    });
  }

  api.post<{ Params: { id: string }; Body: { from?: string; params?: Record<string, unknown> } | undefined }>('/runs/:id/retry', {
    config: { need: 'operate' },
    schema: { summary: 'Retry a finished run: a new run reusing what succeeded (caravan retry)', tags: ['runs'], params: runParams, body: apiSchema('RetryRequest'), response: responses({ 201: 'RetryStarted' }, [400, 401, 403, 404, 409, 413, 415, 422, 429, 503]) },
  }, async (request, reply) => {
    const { id } = request.params;
    const by = request.caller!.name;
    const r = await backend.retryRun(id, { by, ...(request.body?.from !== undefined ? { from: request.body.from } : {}), ...(request.body?.params !== undefined ? { secretParams: request.body.params } : {}) });
    ctx.log.info('run retried over the API', { run: r.runId, retryOf: id, caller: by, reused: r.reused.length, rerun: r.rerun.length });
    return reply.code(201).header('location', urls(r.runId).run).send({ ...r, urls: urls(r.runId) });
  });

  for (const action of ['approve', 'reject'] as const) {
    api.post<{ Params: { id: string; task: string }; Body: { comment?: string } | undefined }>(`/runs/:id/tasks/:task/${action}`, {
      config: { need: 'approve' },
      schema: { summary: `${action === 'approve' ? 'Approve' : 'Reject'} an approval task`, tags: ['runs'], params: taskParams, body: controlBody, response: responses({ 202: 'ControlAccepted' }, [400, 401, 403, 404, 409, 413, 415, 429, 503]) },
    }, async (request, reply) => {
      const { id, task } = request.params;
      const { snapshot } = await backend.queries.get(id);
      const state = snapshot.tasks[task];
      if (state === undefined) throw new ApiError(404, 'TASK_NOT_FOUND', `run ${id} has no task '${task}'`, { runId: id, task });
      if (snapshot.status !== 'running' && snapshot.status !== 'paused') throw new ApiError(409, 'RUN_NOT_LIVE', `run ${id} is ${snapshot.status}: nothing to ${action}`, { runId: id, status: snapshot.status });
      if (state.status !== 'waiting') throw new ApiError(409, 'TASK_NOT_WAITING', `task ${task} of run ${id} is ${state.status}, not waiting for a decision`, { runId: id, task, status: state.status });
      const by = request.caller!.name;
      const approvers = await approversOf(ctx, id, task);
      const comment = request.body?.comment;
      // Sent even when refused: the engine records the refusal (approval.refused) with the caller.
      await backend.control.send(id, { action, task, by, ...(comment !== undefined ? { reason: comment } : {}) });
      if (approvers !== undefined && approvers.length > 0 && !approvers.includes(by)) {
        ctx.log.warn('approval refused: caller not among the approvers', { run: id, task, caller: by });
        throw new ApiError(403, 'NOT_AN_APPROVER', `${by} is not among the approvers of ${task} (${approvers.join(', ')}); the refusal is recorded in the run`, { runId: id, task, approvers });
      }
      ctx.log.info('approval decision over the API', { run: id, task, action, caller: by });
      return reply.code(202).send({ runId: id, action, task, by });
    });
  }

  const logsQuery = { type: 'object', additionalProperties: false, properties: { follow: { type: 'string', enum: ['true', 'false'] }, since: { type: 'string', format: 'date-time', description: 'Only lines written at or after this instant.' } } };
  const logsResponse = { ...responses({ 200: 'LogLines' }, [400, 401, 404, 429]), 200: { description: 'JSON {lines} or, with follow=true, application/x-ndjson: one LogLine per line', content: { 'application/json': { schema: apiSchema('LogLines') }, 'application/x-ndjson': { schema: apiSchema('LogLine') } } } };
  type LogsRequest = FastifyRequest<{ Params: { id: string; task?: string }; Querystring: { follow?: 'true' | 'false'; since?: string } }>;
  /** A run's log lines (of one task, or of all), as JSON, or followed as NDJSON until the run ends. */
  const sendLogs = async (request: LogsRequest, reply: FastifyReply): Promise<unknown> => {
    const { id, task } = request.params;
    const { snapshot } = await backend.queries.get(id);
    if (task !== undefined && !(task.replace(/\[\d+\]$/, '') in snapshot.tasks)) throw new ApiError(404, 'TASK_NOT_FOUND', `run ${id} has no task '${task}'`, { runId: id, task });
    const since = request.query.since !== undefined ? new Date(request.query.since).toISOString() : undefined;
    const keep = (l: LogLine): boolean => since === undefined || l.at >= since;
    if (request.query.follow !== 'true') return { lines: (await backend.queries.logs(id, task)).filter(keep) };
    const abort = new AbortController();
    request.raw.once('close', () => abort.abort());
    const lines = backend.queries.follow(id, task, { signal: abort.signal });
    const body = Readable.from((async function* () {
      for await (const batch of lines) {
        const text = batch.filter(keep).map((l) => JSON.stringify(l) + '\n').join('');
        if (text !== '') yield text;
      }
    })());
    return reply.type('application/x-ndjson; charset=utf-8').send(body);
  };

  api.get<{ Params: { id: string }; Querystring: { follow?: 'true' | 'false'; since?: string } }>('/runs/:id/logs', {
    config: { need: 'read' },
    schema: { summary: 'Every task\'s log lines, in the order recorded; with follow=true, NDJSON lines as they come until the run ends', tags: ['runs'], params: runParams, querystring: logsQuery, response: logsResponse },
  }, sendLogs);

  api.get<{ Params: { id: string; task: string }; Querystring: { follow?: 'true' | 'false'; since?: string } }>('/runs/:id/logs/:task', {
    config: { need: 'read' },
    schema: { summary: 'A task\'s log lines (with its forEach items); with follow=true, NDJSON lines as they come until the run ends', tags: ['runs'], params: taskParams, querystring: logsQuery, response: logsResponse },
  }, sendLogs);
}

/** 409 for an action the run's state makes meaningless. */
function checkRunAction(s: RunSnapshot, action: 'pause' | 'unpause' | 'cancel'): void {
  const over = s.status !== 'running' && s.status !== 'paused';
  if (over) throw new ApiError(409, 'RUN_NOT_LIVE', `run ${s.runId} is ${s.status}: it cannot be ${action === 'cancel' ? 'cancelled' : `${action}d`}`, { runId: s.runId, status: s.status });
  if (action === 'unpause' && s.status !== 'paused') throw new ApiError(409, 'RUN_NOT_PAUSED', `run ${s.runId} is not paused`, { runId: s.runId, status: s.status });
  if (action === 'pause' && s.status === 'paused') throw new ApiError(409, 'RUN_PAUSED', `run ${s.runId} is paused already`, { runId: s.runId, status: s.status });
}

/** The `approvers` of an approval task, from the workflow the run runs (its journal, else its record). */
async function approversOf(ctx: RouteContext, runId: string, task: string): Promise<readonly string[] | undefined> {
  const source = (await readJournal(ctx.backend.journalPath(runId)))?.header.workflowSource ?? (await ctx.backend.audit.readRun(runId))?.workflowSource;
  if (source === undefined) return undefined;
  const parsed = validateText(`${runId}/workflow.yaml`, source);
  const name = task.replace(/\[\d+\]$/, '');
  return parsed.workflow?.spec.tasks.find((t) => t.name === name)?.approval?.approvers;
}

