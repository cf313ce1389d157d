import { request } from 'undici';
import { CaravanError } from '../errors/CaravanError.js';
import type { NomadJob } from '../compile/NomadJob.js';
import type { Metrics } from '../run/Metrics.js';

export interface NomadClientOptions {
  /** e.g. http://127.0.0.1:4646 (default: $NOMAD_ADDR). */
  address?: string;
  /** ACL token (default: $NOMAD_TOKEN); sent as X-Nomad-Token, never logged. */
  token?: string;
  namespace?: string;
  region?: string;
  timeoutMs?: number;
  retries?: number;
  /** Counts every HTTP request (each retry too) by outcome: caravan_backend_requests_total{backend="nomad"}. */
  metrics?: Metrics;
}

export class NomadApiError extends CaravanError {
  constructor(readonly status: number, readonly method: string, readonly path: string, message: string) {
    super('NOMAD_API', `Nomad ${method} ${path} answered ${status}: ${message.trim()}`, { data: { status, method, path } });
    this.name = 'NomadApiError';
  }
}

export interface ValidateResult {
  ValidationErrors: string[] | null;
  Error: string;
  Warnings: string;
  DriverConfigValidated: boolean;
}

export interface RegisterResult {
  EvalID: string;
  JobModifyIndex: number;
  Warnings: string;
}

export interface NomadTaskEvent {
  Type: string;
  DisplayMessage: string;
  ExitCode?: number;
  Signal?: number;
  /** e.g. `oom_killed: "true"` on a Terminated event. */
  Details?: Record<string, string> | null;
}

export interface NomadAllocation {
  ID: string;
  JobID: string;
  NodeID?: string;
  ClientStatus: string;
  ClientDescription?: string;
  DesiredStatus?: string;
  DesiredDescription?: string;
  ModifyIndex?: number;
  TaskStates?: Record<string, { State: string; Failed: boolean; Events: NomadTaskEvent[] | null }> | null;
}

export interface NomadEvaluation {
  ID: string;
  JobID: string;
  Status: string;
  StatusDescription?: string;
  TriggeredBy?: string;
  FailedTGAllocs?: Record<string, unknown> | null;
  BlockedEval?: string;
}

export interface NomadJobVersion {
  Version: number;
  Stable: boolean;
  SubmitTime: number;
  JobModifyIndex: number;
  Meta?: Record<string, string> | null;
}

/** The answer to a blocking query: the value and the index to block on next. */
/** A job as Nomad lists it (`GET /v1/jobs?meta=true`, Nomad 1.6 and later). */
export interface NomadJobStub {
  ID: string;
  ParentID: string;
  Type: string;
  Status: string;
  Stop: boolean;
  JobModifyIndex: number;
  ParameterizedJob: boolean;
  Meta?: Record<string, string> | null;
}

export interface Indexed<T> {
  value: T;
  index: number;
}

export interface PlanResult {
  Diff?: { Type: string };
  FailedTGAllocs?: Record<string, unknown> | null;
  JobModifyIndex: number;
  Warnings: string;
}

/**
 * A small typed client for the Nomad HTTP API over undici (Nomad has no official Node
 * client). Every call has a timeout; connection errors and 5xx answers are retried with
 * backoff; any other error is a NomadApiError with the status and the server's message.
 */
export class NomadClient {
  readonly address: string;
  private readonly token: string | undefined;

  constructor(private readonly options: NomadClientOptions = {}) {
    this.address = (options.address ?? process.env['NOMAD_ADDR'] ?? 'http://127.0.0.1:4646').replace(/\/+$/, '');
    this.token = options.token ?? process.env['NOMAD_TOKEN'];
  }

  validateJob(job: NomadJob): Promise<ValidateResult> {
    return this.call('POST', '/v1/validate/job', { Job: job });
  }

  /** Registers a job; with `modifyIndex`, only if the job has not changed since (check-and-set). */
  registerJob(job: NomadJob, modifyIndex?: number): Promise<RegisterResult> {
    return this.call('POST', '/v1/jobs', { Job: job, ...(modifyIndex !== undefined ? { EnforceIndex: true, JobModifyIndex: modifyIndex } : {}) });
  }

  planJob(job: NomadJob): Promise<PlanResult> {
    return this.call('POST', `/v1/job/${encodeURIComponent(job.ID)}/plan`, { Job: job, Diff: true });
  }

  /**
   * Dispatches a parameterized job. The idempotency token makes a repeated dispatch (a
   * restarted controller, a retried request) return the same child instead of a second one.
   */
  dispatchJob(id: string, payload: Uint8Array, meta: Record<string, string>, idempotencyToken: string): Promise<{ DispatchedJobID: string; EvalID: string }> {
    return this.call('POST', `/v1/job/${encodeURIComponent(id)}/dispatch?idempotency_token=${encodeURIComponent(idempotencyToken)}`, { Payload: Buffer.from(payload).toString('base64'), Meta: meta });
  }

  /** Stops a job (a dispatched child included) without purging its history. */
  stopJob(id: string): Promise<{ EvalID: string }> {
    return this.call('DELETE', `/v1/job/${encodeURIComponent(id)}`);
  }

  /**
   * Jobs whose ID starts with `prefix`, with their meta, and the cluster's job index (it
   * moves whenever any job changes: a controller that sees the same index can skip its work).
   */
  listJobs(prefix = ''): Promise<Indexed<NomadJobStub[]>> {
    return this.callIndexed('GET', `/v1/jobs?meta=true${prefix !== '' ? `&prefix=${encodeURIComponent(prefix)}` : ''}`, this.options.timeoutMs ?? 10_000);
  }

  /** IDs of the dispatched children of a parameterized job. */
  async dispatchedChildren(parent: string): Promise<string[]> {
    const jobs = await this.call<Array<{ ID: string; ParentID: string }>>('GET', `/v1/jobs?prefix=${encodeURIComponent(`${parent}/dispatch-`)}`);
    return jobs.filter((j) => j.ParentID === parent).map((j) => j.ID);
  }

  jobAllocations(id: string): Promise<NomadAllocation[]> {
    return this.call('GET', `/v1/job/${encodeURIComponent(id)}/allocations`);
  }

  /**
   * A blocking query on a job's allocations: answers when they change after `index`, or
   * after `waitS` seconds with the same index (Nomad adds up to 1/16 of jitter).
   */
  async watchJobAllocations(id: string, index: number, waitS = 30): Promise<Indexed<NomadAllocation[]>> {
    return this.callIndexed('GET', `/v1/job/${encodeURIComponent(id)}/allocations?index=${Math.max(1, index)}&wait=${waitS}s`, (waitS + 10) * 1000);
  }

  allocation(id: string): Promise<NomadAllocation> {
    return this.call('GET', `/v1/allocation/${encodeURIComponent(id)}`);
  }

  evaluation(id: string): Promise<NomadEvaluation> {
    return this.call('GET', `/v1/evaluation/${encodeURIComponent(id)}`);
  }

  jobEvaluations(id: string): Promise<NomadEvaluation[]> {
    return this.call('GET', `/v1/job/${encodeURIComponent(id)}/evaluations`);
  }

  async jobVersions(id: string): Promise<NomadJobVersion[]> {
    const r = await this.call<{ Versions: NomadJobVersion[] }>('GET', `/v1/job/${encodeURIComponent(id)}/versions`);
    return r.Versions;
  }

  /**
   * Opens `GET /v1/event/stream` for the topics (e.g. `Allocation:*`) from `index`; the body is
   * newline-delimited JSON. Used by NomadEventStream, which reconnects.
   */
  async openEventStream(topics: string[], index: number, signal: AbortSignal): Promise<AsyncIterable<Buffer>> {
    const url = this.url(`/v1/event/stream?${topics.map((t) => `topic=${encodeURIComponent(t)}`).join('&')}&index=${index}`);
    // No body timeout: Nomad sends a `{}` heartbeat every 10 s; NomadEventStream watches it.
    const res = await request(url, { method: 'GET', headers: this.headers(), signal, headersTimeout: this.options.timeoutMs ?? 10_000, bodyTimeout: 0 }).catch((e: unknown) => {
      this.options.metrics?.backendRequest('nomad', 'error');
      throw e;
    });
    this.options.metrics?.backendRequest('nomad', res.statusCode < 500 ? 'ok' : 'error');
    if (res.statusCode !== 200) {
      const text = await res.body.text();
      throw new NomadApiError(res.statusCode, 'GET', '/v1/event/stream', text);
    }
    return res.body;
  }

  readJob(id: string): Promise<NomadJob & { JobModifyIndex: number; Version: number; Stop?: boolean }> {
    return this.call('GET', `/v1/job/${encodeURIComponent(id)}`);
  }

  deregisterJob(id: string, purge = false): Promise<{ EvalID: string }> {
    return this.call('DELETE', `/v1/job/${encodeURIComponent(id)}${purge ? '?purge=true' : ''}`);
  }

  private url(path: string): URL {
    const url = new URL(this.address + path.replace(/\?.*$/, ''));
    const query = path.includes('?') ? path.slice(path.indexOf('?') + 1) : '';
    for (const [k, v] of new URLSearchParams(query)) url.searchParams.append(k, v);
    if (this.options.namespace !== undefined) url.searchParams.set('namespace', this.options.namespace);
    if (this.options.region !== undefined) url.searchParams.set('region', this.options.region);
    return url;
  }

  private headers(): Record<string, string> {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (this.token !== undefined) headers['x-nomad-token'] = this.token;
    return headers;
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    return (await this.callIndexed<T>(method, path, this.options.timeoutMs ?? 10_000, body)).value;
  }

  private async callIndexed<T>(method: string, path: string, timeoutMs: number, body?: unknown): Promise<Indexed<T>> {
    const url = this.url(path);
    const headers = this.headers();
    const retries = this.options.retries ?? 3;
    for (let attempt = 0; ; attempt++) {
      let answered = false;
      try {
        const res = await request(url, { method: method as 'GET', headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}), headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
        const text = await res.body.text();
        answered = true;
        // A 4xx is Nomad working (a CAS conflict, a missing job): the caller's news, not the backend's.
        this.options.metrics?.backendRequest('nomad', res.statusCode < 500 ? 'ok' : 'error');
        if (res.statusCode >= 200 && res.statusCode < 300) {
          const index = Number(res.headers['x-nomad-index'] ?? 0);
          return { value: (text === '' ? {} : JSON.parse(text)) as T, index: Number.isFinite(index) ? index : 0 };
        }
        if (res.statusCode >= 500 && attempt < retries && !/validation failed|error occurred/i.test(text)) {
          await backoff(attempt);
          continue;
        }
        throw new NomadApiError(res.statusCode, method, path, text);
      } catch (e) {
        if (e instanceof NomadApiError) throw e;
        // No answer (refused, timed out, reset): counted here; an answer was counted above.
        if (!answered) this.options.metrics?.backendRequest('nomad', 'error');
        if (attempt >= retries) throw new CaravanError('NOMAD_UNREACHABLE', `cannot reach Nomad at ${this.address}: ${(e as Error).message}`, { cause: e });
        await backoff(attempt);
      }
    }
  }
}

function backoff(attempt: number): Promise<void> {
  return new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** attempt)));
}
