import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from '../run/Logger.js';
import { ApiError, fromCaravanError } from './ApiError.js';
import type { ApiBackend } from './ApiBackend.js';
import { eventRoutes, type EventStreamOptions } from './eventRoutes.js';
import type { ApiCaller, ApiTokens } from './ApiTokens.js';
import { IdempotencyKeys } from './IdempotencyKeys.js';
import type { RouteContext } from './RouteContext.js';
import { runRoutes } from './runRoutes.js';
import { syncRoutes } from './syncRoutes.js';
import { workflowRoutes } from './workflowRoutes.js';

/** What a route needs of its caller: any valid token (or none, with open reads), or a role. */
export type Need = 'read' | 'operate' | 'approve';

declare module 'fastify' {
  interface FastifyRequest {
    caller?: ApiCaller;
  }
  interface FastifyContextConfig {
    need?: Need;
  }
}

export interface ApiOptions {
  backend: ApiBackend;
  tokens: ApiTokens;
  /** GET routes answer without a token (mutations still need one). Default false. */
  openReads?: boolean;
  /** Requests per caller (token name; client address for open reads) and window; default 600 a minute. */
  rateLimit?: { max: number; windowMs: number };
  /** Limits of the SSE routes (heartbeat, subscribers, slow clients); defaults in EVENT_STREAM_DEFAULTS. */
  events?: Partial<EventStreamOptions>;
}


export const API_PREFIX = '/api/v1';
const ANONYMOUS: ApiCaller = { name: 'anonymous', roles: new Set(['viewer']) };
const BEARER = /^Bearer +([\x21-\x7e]{1,4096})$/i;

/**
 * The REST API under /api/v1, as an encapsulated fastify context: its own authentication,
 * per-caller rate limit, error body and 404, so the webhook beside it keeps its HMAC and its
 * parsers. Route modules are registered here; the SSE routes go beside them.
 */
export async function registerApi(app: FastifyInstance, options: ApiOptions, logger: Logger): Promise<void> {
  const log = logger.withSecrets(options.tokens.secrets());
  const limit = options.rateLimit ?? { max: 600, windowMs: 60_000 };
  // The plugin is registered at the root (global: false); its limiter is used by hand, after
  // authentication, so that the limit is per token rather than per address.
  const limiter = app.createRateLimit({ max: limit.max, timeWindow: limit.windowMs, keyGenerator: (r: FastifyRequest) => (r.caller !== undefined && r.caller !== ANONYMOUS ? `token:${r.caller.name}` : `ip:${r.ip}`) });
  const context: RouteContext = { backend: options.backend, idempotency: new IdempotencyKeys(options.backend.kv), prefix: API_PREFIX, log };

  await app.register(async (api) => {
    api.addHook('onRequest', async (request, reply) => {
      request.caller = authenticate(request, options);
      const need = request.routeOptions.config?.need ?? 'read';
      authorize(request.caller, need);
      const l = await limiter(request);
      if (!l.isAllowed && l.isExceeded) {
        void reply.header('retry-after', String(l.ttlInSeconds));
        throw new ApiError(429, 'RATE_LIMITED', `too many requests for ${request.caller.name}: at most ${limit.max} in ${limit.windowMs / 1000} s; retry in ${l.ttlInSeconds} s`, { retryAfterSeconds: l.ttlInSeconds });
      }
      if (need !== 'read') await refuseOnFollower(options.backend);
    });
    // JSON only: a text/plain body (fastify parses one by default) is a 415, not a string to validate.
    api.removeContentTypeParser('text/plain');
    // The actions' bodies are optional: no body is an empty one, which the schema then checks.
    api.addHook('preValidation', async (request) => {
      if (request.method === 'POST' && request.body === undefined) request.body = {};
    });
    api.addHook('onResponse', async (request, reply) => {
      log.info('api request', { method: request.method, route: request.routeOptions.url ?? 'unknown', status: reply.statusCode, caller: request.caller?.name, ms: Math.round(reply.elapsedTime) });
    });
    api.setErrorHandler((error: unknown, request, reply) => {
      const e = toApiError(error);
      if (e.status >= 500) log.error('api request failed', { method: request.method, route: request.routeOptions.url, caller: request.caller?.name, err: error });
      return sendApiError(reply, e);
    });
    api.setNotFoundHandler((request, reply) => sendApiError(reply, new ApiError(404, 'NOT_FOUND', `no route ${request.method} ${truncate(request.url.split('?')[0] ?? '', 200)}`)));
    await api.register(async (r) => workflowRoutes(r, context));
    await api.register(async (r) => runRoutes(r, context));
    await api.register(async (r) => syncRoutes(r, context));
    await api.register(async (r) => eventRoutes(r, context, options.events));
  }, { prefix: API_PREFIX });
}

function authenticate(request: FastifyRequest, options: ApiOptions): ApiCaller {
  const header = request.headers.authorization;
  if (header === undefined) {
    if (options.openReads === true && request.method === 'GET') return ANONYMOUS;
    throw new ApiError(401, 'UNAUTHENTICATED', 'this request needs a bearer token: Authorization: Bearer <token>');
  }
  const m = BEARER.exec(header);
  if (m === null) throw new ApiError(401, 'UNAUTHENTICATED', 'the Authorization header must be "Bearer <token>"');
  const caller = options.tokens.authenticate(m[1]!);
  if (caller === undefined) throw new ApiError(401, 'UNAUTHENTICATED', 'unknown token');
  return caller;
}

function authorize(caller: ApiCaller, need: Need): void {
  if (need === 'operate' && !caller.roles.has('operator')) throw new ApiError(403, 'FORBIDDEN', `${caller.name} may not do this: it needs the operator role`, { need: 'operator' });
  if (need === 'approve' && !caller.roles.has('approver')) throw new ApiError(403, 'FORBIDDEN', `${caller.name} may not approve or reject: it needs the approver role`, { need: 'approver' });
}

/** A follower (or a deposed leader) runs nothing: mutations go to the leader, whose address it names. */
async function refuseOnFollower(backend: ApiBackend): Promise<void> {
  const role = backend.role();
  if (role !== 'follower' && role !== 'deposed') return;
  const leader = await backend.leaderAddress().catch(() => undefined);
  throw new ApiError(503, 'NOT_LEADER', `this controller is a ${role}; send the request to the leader${leader !== undefined ? ` at ${leader}` : ' (not known yet)'}`, { role, ...(leader !== undefined ? { leader } : {}) });
}

/** Status, code, message and details for anything a route, a hook or fastify threw. */
export function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  const known = fromCaravanError(error);
  if (known !== undefined) return known;
  const f = error as Partial<FastifyError> & { validation?: Array<{ instancePath: string; message?: string; params?: Record<string, unknown> }>; validationContext?: string };
  if (Array.isArray(f.validation) && f.validation.length > 0) {
    const v = f.validation[0]!;
    const missing = typeof v.params?.['missingProperty'] === 'string' ? `/${v.params['missingProperty']}` : '';
    const extra = typeof v.params?.['additionalProperty'] === 'string' ? `/${v.params['additionalProperty']}` : '';
    const field = `${f.validationContext ?? 'request'}${(v.instancePath + missing + extra).replace(/\//g, '.')}`;
    return new ApiError(400, 'BAD_REQUEST', `${field}: ${extra !== '' ? 'unknown field' : (v.message ?? 'invalid')}`, { field });
  }
  const status = typeof f.statusCode === 'number' ? f.statusCode : 500;
  if (status === 413) return new ApiError(413, 'BODY_TOO_LARGE', 'the body is larger than the server accepts');
  if (status === 415) return new ApiError(415, 'UNSUPPORTED_MEDIA_TYPE', 'the body must be application/json');
  if (f.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || f.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || (f instanceof SyntaxError)) return new ApiError(400, 'BODY_INVALID', 'the body is not valid JSON');
  // fastify's own 4xx messages describe the request (bad length, bad encoding), never secrets.
  if (status >= 400 && status < 500) return new ApiError(status, 'BAD_REQUEST', truncate(f.message ?? 'bad request', 300));
  return new ApiError(500, 'INTERNAL', 'internal error');
}

export function sendApiError(reply: FastifyReply, e: ApiError): FastifyReply {
  if (e.status === 401) void reply.header('www-authenticate', 'Bearer realm="caravan"');
  return reply.code(e.status).type('application/json; charset=utf-8').send({ error: { code: e.code, message: e.message, details: e.details } });
}

function truncate(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n)}…` : s;
}
