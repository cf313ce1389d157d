import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { request, type Dispatcher } from 'undici';
import { apiSchema, type ApiSchemaName } from '../api/apiSchemas.js';
import type { LogLine, RunSummary } from '../app/RunQueries.js';
import { CaravanError, type ErrorCode } from '../errors/CaravanError.js';
import type { RunStatus } from '../run/RunEvent.js';
import type { RunSnapshot } from '../run/RunSnapshot.js';
import { forTerminal } from './forTerminal.js';

/** POST /workflows/{name}/runs answers this (schemas/api/api.v1.json#/$defs/RunStarted). */
export interface RunStarted {
  runId: string;
  workflow: string;
  created: boolean;
  urls: { run: string; logs: string };
}

/** GET /runs (RunPage). */
export interface RunPage {
  runs: RunSummary[];
  nextCursor?: string;
}

/** GET /runs/{id} (RunDetail). */
export interface RunDetail {
  run: RunSnapshot;
  live: boolean;
  from: 'journal' | 'audit';
  links: { self: string; logs: string; nomadJobs?: string[] };
}

/** What the controller says it did with an action (ControlAccepted). */
export interface ControlAccepted {
  runId: string;
  action: 'pause' | 'unpause' | 'cancel' | 'approve' | 'reject';
  task?: string;
  by: string;
}

export type RemoteAction = ControlAccepted['action'];

export interface RunListQuery {
  workflow?: string;
  status?: RunStatus;
  limit?: number;
  cursor?: string;
}

/** The controller's HTTP API as the CLI uses it; every failure is a CaravanError. */
export interface ApiClient {
  /** The controller's URL as it may be shown: without credentials, query or fragment. */
  readonly where: string;
  startRun(workflow: string, params: Record<string, string>, idempotencyKey: string): Promise<RunStarted>;
  getRun(runId: string, signal?: AbortSignal): Promise<RunDetail>;
  listRuns(query: RunListQuery): Promise<RunPage>;
  logs(runId: string, task: string): Promise<LogLine[]>;
  /** The task's lines as the controller writes them, until the run ends (or `signal`). */
  followLogs(runId: string, task: string, signal?: AbortSignal): AsyncGenerator<LogLine, void, void>;
  act(runId: string, action: RemoteAction, options?: { task?: string; comment?: string }): Promise<ControlAccepted>;
  /** Starts a retry of a finished run in the controller (POST /runs/{id}/retry). */
  retryRun(runId: string, options: { from?: string; params?: Record<string, string> }): Promise<RetryStarted>;
}

export interface RetryStarted {
  runId: string;
  workflow: string;
  retryOf: string;
  reused: string[];
  rerun: Array<{ task: string; why: string }>;
  urls: { run: string; logs: string };
}

export interface ApiClientOptions {
  /** Bearer token; undefined sends none (a controller with open reads answers GETs). */
  token?: string;
  /** Per request: until the answer's headers, and between its body's chunks (default 30 s). */
  timeoutMs?: number;
}

/** A snapshot of 10,000 tasks is a few MB; anything far past that is not an answer to read whole. */
const MAX_BODY_BYTES = 64 * 1024 * 1024;
/** A log line is bounded by the agent; a followed NDJSON line longer than this is refused. */
const MAX_LINE_BYTES = 4 * 1024 * 1024;
/** Codes the API answers with that are the application's own error codes: kept as they are. */
const KNOWN: ReadonlySet<string> = new Set<ErrorCode>(['WORKFLOW_NOT_FOUND', 'RUN_NOT_FOUND', 'TASK_NOT_FOUND', 'PARAM_INVALID', 'WORKFLOW_INVALID', 'RUN_NOT_LIVE', 'RUN_SKIPPED', 'USAGE', 'RUN_ID_INVALID', 'RUN_IN_PROGRESS', 'NOTHING_TO_RETRY']);
const NETWORK_CODES = /^(ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EPIPE|UND_ERR_\w+)$/;

// Shapes are checked, formats not: the CLI reads no date as more than text, and ajv's formats are another package.
const ajv = new Ajv2020({ strict: false, allErrors: false, validateFormats: false });
const validators = new Map<ApiSchemaName, ValidateFunction>();
function validatorFor(name: ApiSchemaName): ValidateFunction {
  let v = validators.get(name);
  if (v === undefined) {
    v = ajv.compile(apiSchema(name));
    validators.set(name, v);
  }
  return v;
}

/**
 * The controller's base URL, checked: http(s) only, and no credentials in it (a URL is shown
 * in messages and in `ps`; the token goes in CARAVAN_TOKEN or --token-file).
 */
export function parseControllerUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new CaravanError('USAGE', `--controller expects an http(s) URL such as http://127.0.0.1:8080, got '${forTerminal(text.slice(0, 200))}'`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new CaravanError('USAGE', `--controller expects an http(s) URL, got a ${url.protocol} one`);
  if (url.username !== '' || url.password !== '') {
    throw new CaravanError('USAGE', `--controller ${shown(url)}: leave credentials out of the URL; the token goes in CARAVAN_TOKEN or a file named by --token-file`);
  }
  url.search = '';
  url.hash = '';
  return url;
}

function shown(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, '')}`;
}

/** An ApiClient over undici for the controller at `base` (from parseControllerUrl). */
export function apiClient(base: URL, options: ApiClientOptions = {}): ApiClient {
  return new HttpApiClient(base, options);
}

class HttpApiClient implements ApiClient {
  readonly where: string;
  private readonly root: string;

  constructor(base: URL, private readonly options: ApiClientOptions) {
    this.where = shown(base);
    this.root = `${base.origin}${base.pathname.replace(/\/+$/, '')}/api/v1`;
  }

  async retryRun(runId: string, options: { from?: string; params?: Record<string, string> }): Promise<RetryStarted> {
    // Not repeated on a lost answer: a retry has no idempotency key, and a second one would start a second run.
    return this.call<RetryStarted>('POST', `/runs/${seg(runId)}/retry`, 'RetryStarted', { body: options });
  }

  async startRun(workflow: string, params: Record<string, string>, idempotencyKey: string): Promise<RunStarted> {
    const body = { params, idempotencyKey };
    // The same key makes a repeated request return the run the first one started, so an
    // answer lost on the way (reset, 502 from a proxy, 429) is asked for again, a few times.
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.call<RunStarted>('POST', `/workflows/${seg(workflow)}/runs`, 'RunStarted', { body });
      } catch (e) {
        const retry = e instanceof CaravanError && (e.data['retryable'] === true);
        if (!retry || attempt >= 4) throw e;
        const after = typeof e.data['retryAfterSeconds'] === 'number' ? Math.min(e.data['retryAfterSeconds'], 10) * 1000 : 250 * 2 ** attempt;
        await new Promise((r) => setTimeout(r, after));
      }
    }
  }

  getRun(runId: string, signal?: AbortSignal): Promise<RunDetail> {
    return this.call<RunDetail>('GET', `/runs/${seg(runId)}`, 'RunDetail', signal !== undefined ? { signal } : {});
  }

  listRuns(q: RunListQuery): Promise<RunPage> {
    const query = new URLSearchParams();
    if (q.workflow !== undefined) query.set('workflow', q.workflow);
    if (q.status !== undefined) query.set('status', q.status);
    if (q.limit !== undefined) query.set('limit', String(q.limit));
    if (q.cursor !== undefined) query.set('cursor', q.cursor);
    const qs = query.toString();
    return this.call<RunPage>('GET', `/runs${qs !== '' ? `?${qs}` : ''}`, 'RunPage');
  }

  async logs(runId: string, task: string): Promise<LogLine[]> {
    return (await this.call<{ lines: LogLine[] }>('GET', `/runs/${seg(runId)}/logs/${seg(task)}`, 'LogLines')).lines;
  }

  async *followLogs(runId: string, task: string, signal?: AbortSignal): AsyncGenerator<LogLine, void, void> {
    // No body timeout: a task may print nothing for an hour; the stream ends with the run.
    const res = await this.send('GET', `/runs/${seg(runId)}/logs/${seg(task)}?follow=true`, { bodyTimeout: 0, ...(signal !== undefined ? { signal } : {}) });
    if (res.statusCode !== 200) throw this.failure(res.statusCode, await readBounded(res.body, MAX_BODY_BYTES), res.headers);
    const validate = validatorFor('LogLine');
    let pending = '';
    try {
      for await (const chunk of res.body) {
        pending += (chunk as Buffer).toString('utf8');
        let nl: number;
        while ((nl = pending.indexOf('\n')) >= 0) {
          const text = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          if (text.trim() === '') continue;
          yield this.checked<LogLine>(parseJson(text, this.where), validate, 'LogLine');
        }
        if (pending.length > MAX_LINE_BYTES) throw new CaravanError('CONTROLLER_API', `the controller at ${this.where} sent a log line over ${MAX_LINE_BYTES} bytes`);
      }
    } catch (e) {
      if (signal?.aborted === true) return;
      throw this.networkError(e);
    }
  }

  act(runId: string, action: RemoteAction, o: { task?: string; comment?: string } = {}): Promise<ControlAccepted> {
    const path = o.task !== undefined ? `/runs/${seg(runId)}/tasks/${seg(o.task)}/${action}` : `/runs/${seg(runId)}/${action}`;
    return this.call<ControlAccepted>('POST', path, 'ControlAccepted', { body: o.comment !== undefined ? { comment: o.comment } : {} });
  }

  private async call<T>(method: 'GET' | 'POST', path: string, schema: ApiSchemaName, o: { body?: unknown; signal?: AbortSignal } = {}): Promise<T> {
    const res = await this.send(method, path, o);
    const text = await readBounded(res.body, MAX_BODY_BYTES).catch((e: unknown) => {
      throw this.networkError(e);
    });
    if (res.statusCode < 200 || res.statusCode >= 300) throw this.failure(res.statusCode, text, res.headers);
    return this.checked<T>(parseJson(text, this.where), validatorFor(schema), schema);
  }

  private async send(method: 'GET' | 'POST', path: string, o: { body?: unknown; signal?: AbortSignal; bodyTimeout?: number }): Promise<Dispatcher.ResponseData> {
    const timeout = this.options.timeoutMs ?? 30_000;
    const headers: Record<string, string> = { accept: 'application/json, application/x-ndjson' };
    if (this.options.token !== undefined) headers['authorization'] = `Bearer ${this.options.token}`;
    if (o.body !== undefined) headers['content-type'] = 'application/json';
    try {
      return await request(`${this.root}${path}`, {
        // undici follows no redirects: a token is never carried to another host.
        method, headers, headersTimeout: timeout, bodyTimeout: o.bodyTimeout ?? timeout,
        ...(o.body !== undefined ? { body: JSON.stringify(o.body) } : {}),
        ...(o.signal !== undefined ? { signal: o.signal } : {}),
      });
    } catch (e) {
      throw this.networkError(e);
    }
  }

  private checked<T>(value: unknown, validate: ValidateFunction, schema: ApiSchemaName): T {
    if (!validate(value)) {
      const first = validate.errors?.[0];
      throw new CaravanError('CONTROLLER_API', `the controller at ${this.where} answered with a body that is not a ${schema}${first !== undefined ? ` (${first.instancePath || '/'} ${first.message ?? ''})` : ''}: is it a Caravan controller of this version?`);
    }
    return value as T;
  }

  private networkError(e: unknown): CaravanError {
    if (e instanceof CaravanError) return e;
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && NETWORK_CODES.test(code)) {
      // A reset or a timeout may come after the request was taken: a retry with the same idempotency key is safe.
      return new CaravanError('CONTROLLER_UNREACHABLE', `cannot reach the controller at ${this.where} (${code})`, { cause: e, data: { controller: this.where, code, retryable: code !== 'ECONNREFUSED' && code !== 'ENOTFOUND' } });
    }
    if ((e as { name?: unknown }).name === 'AbortError') return new CaravanError('INTERRUPTED', 'the request to the controller was stopped', { cause: e });
    return new CaravanError('CONTROLLER_UNREACHABLE', `cannot reach the controller at ${this.where}: ${forTerminal(String((e as Error).message ?? e)).slice(0, 200)}`, { cause: e, data: { controller: this.where } });
  }

  /** The CaravanError for a non-2xx answer: the API's stable code decides, else the status. */
  private failure(status: number, text: string, headers: Dispatcher.ResponseData['headers']): CaravanError {
    let body: { code?: unknown; message?: unknown; details?: unknown } = {};
    try {
      const parsed = JSON.parse(text) as { error?: typeof body };
      if (typeof parsed.error === 'object' && parsed.error !== null) body = parsed.error;
    } catch {
      // Not the API's error body (a proxy's HTML page): the status alone speaks.
    }
    const apiCode = typeof body.code === 'string' ? body.code.slice(0, 64) : `HTTP_${status}`;
    const message = typeof body.message === 'string' ? forTerminal(body.message).slice(0, 500) : `HTTP ${status}`;
    const details = typeof body.details === 'object' && body.details !== null ? (body.details as Record<string, unknown>) : {};
    const data = { controller: this.where, status, apiCode, details };
    const auth = this.options.token === undefined ? 'no token was given: set CARAVAN_TOKEN, or name a file holding it with --token-file' : 'check the token in CARAVAN_TOKEN or --token-file';
    if (status === 401) return new CaravanError('CONTROLLER_UNAUTHORIZED', `the controller at ${this.where} refused the request (${message}); ${auth}`, { data });
    if (status === 403) {
      const need = typeof details['need'] === 'string' ? ` (missing role: ${forTerminal(details['need'])})` : '';
      return new CaravanError('CONTROLLER_FORBIDDEN', `the controller at ${this.where} refused: ${message}${need}`, { data });
    }
    if (status === 503 && apiCode === 'NOT_LEADER') {
      const leader = typeof details['leader'] === 'string' ? forTerminal(details['leader']).slice(0, 300) : undefined;
      return new CaravanError('CONTROLLER_NOT_LEADER', `the controller at ${this.where} is not the leader: ${leader !== undefined ? `use --controller ${leader}` : 'the leader is not known yet; try again shortly'}`, { data: { ...data, ...(leader !== undefined ? { leader } : {}) } });
    }
    if (status === 429) {
      const after = Number(headers['retry-after']);
      return new CaravanError('CONTROLLER_RATE_LIMITED', `the controller at ${this.where}: ${message}`, { data: { ...data, retryable: true, ...(Number.isFinite(after) ? { retryAfterSeconds: after } : {}) } });
    }
    if (KNOWN.has(apiCode)) return new CaravanError(apiCode as ErrorCode, message, { data: { ...data, ...details } });
    if (status === 409 || status === 422) return new CaravanError('CONTROLLER_CONFLICT', message, { data });
    if (status === 400 || status === 413 || status === 415) return new CaravanError('USAGE', `the controller at ${this.where} refused the request: ${message}`, { data });
    return new CaravanError('CONTROLLER_API', `the controller at ${this.where} answered ${status}${apiCode !== `HTTP_${status}` ? ` ${apiCode}` : ''}: ${message}`, { data: { ...data, retryable: status === 502 || status === 503 || status === 504 } });
  }
}

/** A path segment: names and ids are checked by the server too, but never shape the path here. */
function seg(s: string): string {
  return encodeURIComponent(s);
}

function parseJson(text: string, where: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new CaravanError('CONTROLLER_API', `the controller at ${where} answered with a body that is not JSON: is the URL a Caravan controller?`);
  }
}

async function readBounded(body: Dispatcher.ResponseData['body'], max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > max) {
      body.destroy();
      throw new CaravanError('CONTROLLER_API', `the controller's answer is larger than ${max} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}
