import type { AddressInfo } from 'node:net';
import rateLimit from '@fastify/rate-limit';
import { verify } from '@octokit/webhooks-methods';
import { fastify, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { registerApi, type ApiOptions } from './registerApi.js';
import { HEALTH_SCHEMA, READY_SCHEMA, WEBHOOK_SCHEMA, registerOpenApi } from './registerOpenApi.js';
import { CaravanError, isCaravanError } from '../errors/CaravanError.js';
import type { Logger } from '../run/Logger.js';
import { noopMetrics, type Metrics, type WebhookOutcome } from '../run/Metrics.js';

/** What a verified GitHub `push` delivery says: enough for the controller to go and look. */
export interface PushNotice {
  ref: string;
  after: string;
  before?: string;
  /** `owner/name`, from `repository.full_name`. */
  repository?: string;
  /** The `X-GitHub-Delivery` header: GitHub's id of this delivery. */
  deliveryId?: string;
}

export interface Readiness {
  ready: boolean;
  details: Record<string, unknown>;
}

/** What GET /metrics serves: PromMetrics, or anything that renders Prometheus text. */
export interface MetricsSource {
  metrics(): Promise<string>;
  readonly contentType: string;
}

export interface ControllerServerOptions {
  host: string;
  /** 0: any free port (read it back from `url`). */
  port: number;
  /** Undefined: the webhook route is off and answers 404 saying how to turn it on. */
  webhookSecret?: string;
  /** Asked on every GET /ready: 200 when ready, 503 when not. */
  readiness: () => Promise<Readiness>;
  /** Called once per verified `push` delivery, before the 202 goes out. */
  onPush: (push: PushNotice) => void;
  logger: Logger;
  /** Largest request body accepted, in bytes; default 1 MiB. Larger: 413. */
  maxBodyBytes?: number;
  /** Webhook requests allowed per client address and window; default 60 a minute. Past it: 429. */
  rateLimit?: { max: number; windowMs: number };
  /** Counts webhook requests by outcome (default: nowhere). */
  metrics?: Metrics;
  /** Served on GET /metrics; undefined: the route answers 404. */
  exposition?: MetricsSource;
  /**
   * Whether GET /metrics is readable without credentials (default true: the Prometheus norm;
   * the text holds counts and workflow names, no secrets). When false, `authorizeMetrics`
   * decides from the Authorization header, and a refused scrape gets 401.
   */
  metricsOpen?: boolean;
  /** Judges a scrape's Authorization header when metricsOpen is false (the HTTP API's bearer tokens). */
  authorizeMetrics?: (authorization: string | undefined) => boolean | Promise<boolean>;
  /** The REST API under /api/v1 (engine/api); undefined: only probes, the webhook and /openapi.json. */
  api?: ApiOptions;
}

/** A request for inject(): what a test needs, without fastify's types. */
export interface InjectRequest {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'HEAD' | 'OPTIONS';
  url: string;
  headers?: Record<string, string | string[]>;
  payload?: string | Buffer | Record<string, unknown>;
}

export interface InjectResponse {
  statusCode: number;
  headers: Record<string, string | string[] | number | undefined>;
  body: string;
}

/** Routes seen by each server's onRoute hook, until the server object takes them. */
const routesOf = new WeakMap<FastifyInstance, Array<{ method: string; url: string }>>();

/** The webhook's path, for the docs and the CLI's messages. */
export const WEBHOOK_PATH = '/api/v1/webhooks/github';

const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
const DEFAULT_RATE_LIMIT = { max: 60, windowMs: 60_000 };
// GitHub gives up on a delivery after 10 s; a client still sending its request after 30 s
// is holding a socket, not delivering a webhook (Node's own limit would be 5 minutes).
const REQUEST_TIMEOUT_MS = 30_000;
// GitHub sends lowercase hex; anything else cannot match and is refused before any HMAC.
const SIGNATURE_FORM = /^sha256=[0-9a-f]{64}$/;

/** Codes of the HTTP error body `{"error": {"code", "message"}}`, stable like CaravanError's. */
type HttpErrorCode =
  | 'NOT_FOUND'
  | 'WEBHOOK_DISABLED'
  | 'SIGNATURE_MISSING'
  | 'SIGNATURE_INVALID'
  | 'BODY_INVALID'
  | 'PAYLOAD_INVALID'
  | 'EVENT_MISSING'
  | 'BODY_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'RATE_LIMITED'
  | 'UNAUTHORIZED'
  | 'BAD_REQUEST'
  | 'INTERNAL';

/** A request the server turns away on purpose; the error handler writes it and logs it. */
class Refusal extends Error {
  constructor(
    readonly status: number,
    readonly code: HttpErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'Refusal';
  }
}

/** The body as the content-type parsers keep it: raw bytes, since the signature covers bytes. */
interface RawBody {
  form: boolean;
  bytes: Buffer;
}

// fatal: bytes that are not UTF-8 would be replaced, and the HMAC would then be over other
// bytes than the ones sent. ignoreBOM: keep a leading BOM, which is part of the signed bytes.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * The HTTP listener of `caravan controller`: liveness, readiness, metrics (GET /metrics, in
 * Prometheus text) and the GitHub push webhook.
 * Fastify stays inside this file, so the process depends on this small class, not on the
 * framework. Every refused webhook request is logged once as a warning with its reason and
 * the client's address, never with the body or the secret.
 */
export class ControllerServer {
  private closing: Promise<void> | undefined;

  private readonly registered: ReadonlyArray<{ method: string; url: string }>;

  private constructor(
    private readonly app: FastifyInstance,
    readonly url: string,
  ) {
    this.registered = routesOf.get(app) ?? [];
  }

  static async start(options: ControllerServerOptions): Promise<ControllerServer> {
    const app = await ControllerServer.build(options);
    try {
      await app.listen({ host: options.host, port: options.port });
    } catch (e) {
      await app.close().catch(() => undefined);
      throw new CaravanError('IO', `the controller cannot listen on ${options.host}:${options.port}: ${(e as Error).message}`, { data: { host: options.host, port: options.port }, cause: e });
    }
    return new ControllerServer(app, urlOf(app.server.address() as AddressInfo));
  }

  /** The same server without a socket: requests go through inject() (tests). */
  static async unbound(options: ControllerServerOptions): Promise<ControllerServer> {
    const app = await ControllerServer.build(options);
    await app.ready();
    return new ControllerServer(app, '');
  }

  /** One request through the whole server without a socket (fastify's inject). */
  async inject(request: InjectRequest): Promise<InjectResponse> {
    const res = await this.app.inject({ method: request.method, url: request.url, ...(request.headers !== undefined ? { headers: request.headers } : {}), ...(request.payload !== undefined ? { payload: request.payload } : {}) });
    return { statusCode: res.statusCode, headers: res.headers, body: res.body };
  }

  /** Every route as registered (method and URL pattern), for checking the OpenAPI document. */
  routes(): Array<{ method: string; url: string }> {
    return [...this.registered];
  }

  private static async build(options: ControllerServerOptions): Promise<FastifyInstance> {
    const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    const limit = options.rateLimit ?? DEFAULT_RATE_LIMIT;
    checkOptions(options, maxBodyBytes, limit);
    const log = options.logger;
    const metrics = options.metrics ?? noopMetrics;
    // No logger of fastify's own: what is worth logging goes through our Logger below.
    const app = fastify({
      logger: false,
      bodyLimit: maxBodyBytes,
      requestTimeout: REQUEST_TIMEOUT_MS,
      // Unknown fields are refused, not silently dropped; nothing is coerced (a number where a
      // string belongs is a 400), so query strings are declared as strings.
      ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
      // Requests the router cannot even read (a bad percent-encoding, a bad content type): the
      // same error body as every other refusal, not fastify's own.
      frameworkErrors: (error, _request, reply) => {
        const status = typeof error.statusCode === 'number' && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 400;
        void sendError(reply, status, status === 415 ? 'UNSUPPORTED_MEDIA_TYPE' : 'BAD_REQUEST', status === 415 ? 'unsupported content type' : 'the request URL or headers cannot be read (bad percent-encoding?)');
      },
    });
    const registered: Array<{ method: string; url: string }> = [];
    app.addHook('onRoute', (route) => {
      for (const method of [route.method].flat()) registered.push({ method, url: route.url });
    });
    routesOf.set(app, registered);
    // Response schemas document; they do not filter. Every body is serialised as it is.
    app.setSerializerCompiler(() => (data) => JSON.stringify(data));
    // Nothing here is for a browser to render, cache or frame; no CORS headers are ever sent.
    app.addHook('onSend', async (_request, reply) => {
      void reply.header('x-content-type-options', 'nosniff');
      void reply.header('cache-control', 'no-store');
      void reply.header('x-frame-options', 'DENY');
      void reply.header('content-security-policy', "default-src 'none'; frame-ancestors 'none'");
      void reply.header('referrer-policy', 'no-referrer');
    });

    app.setErrorHandler((error: unknown, request, reply) => {
      const { status, code, message } = describeError(error, reply, maxBodyBytes);
      if (status >= 500) log.error('controller request failed', { method: request.method, url: request.url, err: error });
      if (request.routeOptions.url === WEBHOOK_PATH) {
        metrics.webhookReceived(webhookOutcome(status, code));
        log.warn('webhook refused', { status, code, reason: message, remote: request.ip, ...deliveryFields(request) });
      }
      return sendError(reply, status, code, message);
    });
    app.setNotFoundHandler((request, reply) => sendError(reply, 404, 'NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`));

    // First, so that the document sees every route added after it.
    await registerOpenApi(app);
    await app.register(rateLimit, { global: false });

    app.get('/health', { schema: HEALTH_SCHEMA }, () => ({ status: 'ok' }));
    app.get('/ready', { schema: READY_SCHEMA }, async (_request, reply) => {
      let readiness: Readiness;
      try {
        readiness = await options.readiness();
      } catch (e) {
        // Probes may be public: the reason goes to the log, only the code to the response.
        log.error('readiness check failed', { err: e });
        readiness = { ready: false, details: { error: isCaravanError(e) ? e.code : 'INTERNAL' } };
      }
      return reply.code(readiness.ready ? 200 : 503).send({ ready: readiness.ready, details: readiness.details });
    });

    const exposition = options.exposition;
    if (exposition !== undefined) {
      const authorize = options.authorizeMetrics;
      app.get('/metrics', async (request, reply) => {
        if (options.metricsOpen === false && !(await authorize!(header(request, 'authorization')))) {
          throw new Refusal(401, 'UNAUTHORIZED', 'GET /metrics needs a bearer token here (the controller was started with metrics closed)');
        }
        return reply.type(exposition.contentType).send(await exposition.metrics());
      });
    }

    const secret = options.webhookSecret;
    if (secret === undefined) {
      // onRequest answers before the body is read: a disabled route costs no upload.
      app.post(WEBHOOK_PATH, {
        schema: WEBHOOK_SCHEMA,
        onRequest: async () => {
          throw new Refusal(404, 'WEBHOOK_DISABLED', 'the GitHub webhook is off: give the controller a secret with CARAVAN_WEBHOOK_SECRET or --webhook-secret-file (polling still picks up pushes)');
        },
        handler: () => undefined,
      });
    } else {
      // An encapsulated context, so that its raw-body parsers stay on this route and the later
      // HTTP API keeps fastify's JSON parser.
      await app.register(async (hooks) => {
        hooks.removeAllContentTypeParsers();
        hooks.addContentTypeParser('application/json', { parseAs: 'buffer' }, keepRaw(false));
        hooks.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'buffer' }, keepRaw(true));
        hooks.post(WEBHOOK_PATH, {
          schema: WEBHOOK_SCHEMA,
          bodyLimit: maxBodyBytes,
          // Counted on request, before the body is read or the signature checked: the limit is
          // what stops a client from making us hash megabytes in a loop.
          config: { rateLimit: { max: limit.max, timeWindow: limit.windowMs } },
          handler: async (request, reply) => receiveHook(request, reply, secret, options.onPush, log, metrics),
        });
      });
    }

    if (options.api !== undefined) await registerApi(app, options.api, log);
    return app;
  }

  /** Stops accepting connections, lets requests in flight finish, and frees the port. */
  close(): Promise<void> {
    this.closing ??= this.app.close();
    return this.closing;
  }
}

function checkOptions(options: ControllerServerOptions, maxBodyBytes: number, limit: { max: number; windowMs: number }): void {
  if (options.webhookSecret === '') throw new CaravanError('USAGE', 'the webhook secret is empty: set CARAVAN_WEBHOOK_SECRET (or --webhook-secret-file) to a non-empty value, or leave it unset to turn the webhook off');
  if (options.metricsOpen === false && options.exposition !== undefined && options.authorizeMetrics === undefined) {
    throw new CaravanError('USAGE', 'metrics are closed (metricsOpen false) but nothing can authorize a scrape: give authorizeMetrics, or leave /metrics open');
  }
  if (!Number.isSafeInteger(maxBodyBytes) || maxBodyBytes < 1) throw new CaravanError('USAGE', `maxBodyBytes must be a positive integer, not ${maxBodyBytes}`);
  if (!Number.isSafeInteger(limit.max) || limit.max < 1 || !Number.isSafeInteger(limit.windowMs) || limit.windowMs < 1) {
    throw new CaravanError('USAGE', `the webhook rate limit must be positive integers, not ${limit.max} per ${limit.windowMs} ms`);
  }
}

async function receiveHook(request: FastifyRequest, reply: FastifyReply, secret: string, onPush: (push: PushNotice) => void, log: Logger, metrics: Metrics): Promise<FastifyReply> {
  checkSignatureForm(request);
  const body = request.body as RawBody | undefined;
  if (body === undefined || body.bytes.length === 0) throw new Refusal(400, 'BODY_INVALID', 'the request has no body to check the signature against');
  let text: string;
  try {
    text = utf8.decode(body.bytes);
  } catch {
    throw new Refusal(400, 'BODY_INVALID', 'the body is not UTF-8 text, so its signature cannot be checked');
  }
  // verify() HMACs the string as UTF-8, which gives back exactly the bytes received: the
  // decoding above is strict and keeps a BOM. It compares in constant time.
  if (!(await verify(secret, text, header(request, 'x-hub-signature-256')!))) {
    throw new Refusal(401, 'SIGNATURE_INVALID', 'X-Hub-Signature-256 does not match the body: check that the webhook secret is the controller\'s');
  }

  // Verified from here on. The headers are not covered by the signature, only the body is.
  const event = header(request, 'x-github-event');
  const deliveryId = header(request, 'x-github-delivery');
  if (event === undefined) throw new Refusal(400, 'EVENT_MISSING', 'the X-GitHub-Event header is missing');
  if (event === 'ping') {
    metrics.webhookReceived('ping');
    log.info('webhook ping accepted', { event, delivery: deliveryId, remote: request.ip });
    return reply.code(200).send({ ok: true, event: 'ping' });
  }
  if (event !== 'push') {
    metrics.webhookReceived('ignored');
    log.info('webhook event ignored', { event, delivery: deliveryId, remote: request.ip });
    return reply.code(202).send({ ok: true, event, ignored: true, message: `the controller acts on push events only; this ${event} event was ignored` });
  }

  const push = readPush(parsePayload(text, body.form));
  const notice: PushNotice = { ...push, ...(deliveryId !== undefined ? { deliveryId } : {}) };
  // onPush first: if it throws, the delivery is answered 500 (GitHub shows it as failed and
  // it can be redelivered) and not logged as accepted.
  onPush(notice);
  metrics.webhookReceived('accepted');
  log.info('webhook push accepted', { event, delivery: deliveryId, ref: notice.ref, after: notice.after, repository: notice.repository, remote: request.ip });
  return reply.code(202).send({ ok: true, event: 'push', ...(deliveryId !== undefined ? { deliveryId } : {}) });
}

/** A content-type parser that parses nothing: JSON is read only once the signature holds. */
function keepRaw(form: boolean) {
  // parseAs 'buffer' always hands over a Buffer; the types just do not say so.
  return (_request: FastifyRequest, body: string | Buffer, done: (err: Error | null, body?: RawBody) => void): void => done(null, { form, bytes: typeof body === 'string' ? Buffer.from(body) : body });
}

/** Refuses what is not a `sha256=` signature before reading anything else of the request. */
function checkSignatureForm(request: FastifyRequest): void {
  const signature = header(request, 'x-hub-signature-256');
  if (signature === undefined) {
    const sha1Only = header(request, 'x-hub-signature') !== undefined;
    throw new Refusal(401, 'SIGNATURE_MISSING', sha1Only
      ? 'only an X-Hub-Signature (SHA-1) header was sent; the controller requires X-Hub-Signature-256: give the webhook a secret in GitHub'
      : 'the X-Hub-Signature-256 header is missing: give the webhook a secret in GitHub');
  }
  if (!SIGNATURE_FORM.test(signature)) throw new Refusal(401, 'SIGNATURE_INVALID', 'X-Hub-Signature-256 is not of the form sha256=<64 hex digits>');
}

/** GitHub sends the JSON as the body, or form-encoded in a `payload` field. */
function parsePayload(text: string, form: boolean): unknown {
  // A BOM is signed like any byte, but JSON.parse does not take it (RFC 8259 lets us drop it).
  let json = text.startsWith('\uFEFF') ? text.slice(1) : text;
  if (form) {
    const field = new URLSearchParams(text).get('payload');
    if (field === null) throw new Refusal(400, 'PAYLOAD_INVALID', 'a form-encoded webhook body must carry the JSON in a payload field');
    json = field;
  }
  try {
    return JSON.parse(json) as unknown;
  } catch {
    throw new Refusal(400, 'PAYLOAD_INVALID', form ? 'the payload field is not JSON' : 'the body is not JSON');
  }
}

function readPush(payload: unknown): Omit<PushNotice, 'deliveryId'> {
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) throw new Refusal(400, 'PAYLOAD_INVALID', 'the push payload is not a JSON object');
  const p = payload as Record<string, unknown>;
  for (const field of ['ref', 'after'] as const) {
    if (typeof p[field] !== 'string' || p[field] === '') throw new Refusal(400, 'PAYLOAD_INVALID', `the push payload has no string field ${field}`);
  }
  const repository = typeof p.repository === 'object' && p.repository !== null ? (p.repository as Record<string, unknown>).full_name : undefined;
  return {
    ref: p.ref as string,
    after: p.after as string,
    ...(typeof p.before === 'string' ? { before: p.before } : {}),
    ...(typeof repository === 'string' ? { repository } : {}),
  };
}

/** A refused or failed webhook request's outcome, from the answer it got. */
function webhookOutcome(status: number, code: HttpErrorCode): WebhookOutcome {
  if (code === 'WEBHOOK_DISABLED') return 'disabled';
  if (status === 429) return 'rate_limited';
  return status >= 500 ? 'error' : 'refused';
}

/** Status, code and message for any error a route or fastify raised. */
function describeError(error: unknown, reply: FastifyReply, maxBodyBytes: number): { status: number; code: HttpErrorCode; message: string } {
  if (error instanceof Refusal) return { status: error.status, code: error.code, message: error.message };
  const status = typeof (error as { statusCode?: unknown }).statusCode === 'number' ? (error as { statusCode: number }).statusCode : 500;
  switch (status) {
    case 413:
      return { status, code: 'BODY_TOO_LARGE', message: `the body is larger than ${maxBodyBytes} bytes` };
    case 415:
      return { status, code: 'UNSUPPORTED_MEDIA_TYPE', message: 'the content type must be application/json or application/x-www-form-urlencoded' };
    case 429:
      return { status, code: 'RATE_LIMITED', message: `too many webhook requests from this address; retry in ${String(reply.getHeader('retry-after') ?? '?')} s` };
  }
  // fastify's own 4xx messages describe the request (bad length, bad encoding), never secrets.
  if (status >= 400 && status < 500) return { status, code: 'BAD_REQUEST', message: (error as Error).message };
  return { status: 500, code: 'INTERNAL', message: 'internal error' };
}

function sendError(reply: FastifyReply, status: number, code: HttpErrorCode, message: string): FastifyReply {
  return reply.code(status).type('application/json; charset=utf-8').send({ error: { code, message } });
}

/** One header as a string: Node joins repeated ones, so a list here is not a GitHub header. */
function header(request: FastifyRequest, name: string): string | undefined {
  const value = request.headers[name];
  return typeof value === 'string' ? value : undefined;
}

function deliveryFields(request: FastifyRequest): Record<string, string> {
  const event = header(request, 'x-github-event');
  const delivery = header(request, 'x-github-delivery');
  return { ...(event !== undefined ? { event } : {}), ...(delivery !== undefined ? { delivery } : {}) };
}

/** A URL a client on this machine can use: a wildcard address is reached over loopback. */
function urlOf(address: AddressInfo): string {
  const host = address.address === '0.0.0.0' ? '127.0.0.1' : address.address === '::' ? '::1' : address.address;
  return `http://${host.includes(':') ? `[${host}]` : host}:${address.port}`;
}
