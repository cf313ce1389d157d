import { createHmac } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { ControllerServer, type ControllerServerOptions, type PushNotice, type Readiness } from '../../engine/api/ControllerServer.js';
import { MemoryLogger } from '../../engine/run/Logger.js';

/**
 * The controller's HTTP listener over real sockets: every request goes through fetch to a
 * server on a free port, so body limits, raw-body signatures and rate limits are exercised
 * the way GitHub reaches them.
 */

const SECRET = 'It is a secret to everybody 7f3a';
const HOOK = '/api/v1/webhooks/github';
const BEFORE = '1'.repeat(40);
const AFTER = '2'.repeat(40);

const servers: ControllerServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

interface Started {
  server: ControllerServer;
  pushes: PushNotice[];
  logger: MemoryLogger;
}

async function start(options: Partial<ControllerServerOptions> = {}): Promise<Started> {
  const pushes: PushNotice[] = [];
  const logger = new MemoryLogger();
  const server = await ControllerServer.start({
    host: '127.0.0.1',
    port: 0,
    webhookSecret: SECRET,
    readiness: async () => ({ ready: true, details: {} }),
    onPush: (p) => pushes.push(p),
    logger,
    ...options,
  });
  servers.push(server);
  return { server, pushes, logger };
}

function sign(body: string | Uint8Array, secret = SECRET, algorithm: 'sha256' | 'sha1' = 'sha256'): string {
  return `${algorithm}=${createHmac(algorithm, secret).update(body).digest('hex')}`;
}

function pushBody(fields: Record<string, unknown> = {}): string {
  return JSON.stringify({ ref: 'refs/heads/main', before: BEFORE, after: AFTER, repository: { full_name: 'acme/pipelines' }, pusher: { name: 'ada' }, ...fields });
}

async function post(server: ControllerServer, body: string | Uint8Array, headers: Record<string, string>): Promise<Response> {
  return fetch(`${server.url}${HOOK}`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
}

/** A delivery as GitHub sends it: signed with `secret`, a push unless `event` says otherwise. */
async function deliver(server: ControllerServer, body: string | Uint8Array, { event = 'push', secret = SECRET, headers = {} }: { event?: string; secret?: string; headers?: Record<string, string> } = {}): Promise<Response> {
  return post(server, body, { 'x-github-event': event, 'x-github-delivery': 'd-123', 'x-hub-signature-256': sign(body, secret), ...headers });
}

async function expectError(res: Response, status: number, code: string): Promise<string> {
  expect(res.status).toBe(status);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  const body = (await res.json()) as { error: { code: string; message: string } };
  expect(body.error.code).toBe(code);
  expect(typeof body.error.message).toBe('string');
  return body.error.message;
}

describe('the GitHub webhook', () => {
  it('a correctly signed push is answered 202 and handed to onPush once, with its fields', async () => {
    const { server, pushes, logger } = await start();
    const res = await deliver(server, pushBody());
    expect(res.status).toBe(202);
    expect(await res.json()).toMatchObject({ ok: true, event: 'push' });
    expect(pushes).toEqual([{ ref: 'refs/heads/main', after: AFTER, before: BEFORE, repository: 'acme/pipelines', deliveryId: 'd-123' }]);
    const accepted = logger.lines('info').filter((l) => l.msg === 'webhook push accepted');
    expect(accepted).toHaveLength(1);
    expect(accepted[0]!.fields).toMatchObject({ delivery: 'd-123', ref: 'refs/heads/main', after: AFTER });
    expect(logger.lines('warn')).toEqual([]);
  });

  it('verifies the exact bytes sent: non-ASCII text and a BOM are signed and accepted as sent', async () => {
    const { server, pushes } = await start();
    const bytes = Buffer.from(`\uFEFF${pushBody({ ref: 'refs/heads/café-€' })}`, 'utf8');
    const res = await deliver(server, bytes);
    expect(res.status).toBe(202);
    expect(pushes.map((p) => p.ref)).toEqual(['refs/heads/café-€']);
  });

  it('takes a form-encoded delivery, verified over the form body, the JSON in its payload field', async () => {
    const { server, pushes } = await start();
    const form = new URLSearchParams({ payload: pushBody() }).toString();
    const res = await deliver(server, form, { headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    expect(res.status).toBe(202);
    expect(pushes).toEqual([expect.objectContaining({ ref: 'refs/heads/main', after: AFTER })]);
  });

  it('a signature made with another secret is refused 401, logged without the secret or the body', async () => {
    const { server, pushes, logger } = await start();
    const body = pushBody({ marker: 'body-marker-5c1e' });
    const message = await expectError(await deliver(server, body, { secret: 'not the secret' }), 401, 'SIGNATURE_INVALID');
    expect(message).toMatch(/X-Hub-Signature-256/);
    expect(pushes).toEqual([]);
    const warns = logger.lines('warn');
    expect(warns).toHaveLength(1);
    expect(warns[0]!.fields).toMatchObject({ status: 401, code: 'SIGNATURE_INVALID', remote: '127.0.0.1', delivery: 'd-123', event: 'push' });
    expect(typeof warns[0]!.fields.reason).toBe('string');
    const logged = JSON.stringify(logger.entries);
    expect(logged).not.toContain(SECRET);
    expect(logged).not.toContain('body-marker-5c1e');
  });

  it('a body altered by one byte after signing is refused 401', async () => {
    const { server, pushes } = await start();
    const body = pushBody();
    const signature = sign(body);
    const altered = body.replace(AFTER, `3${AFTER.slice(1)}`);
    expect(altered).not.toBe(body);
    expect(altered.length).toBe(body.length);
    await expectError(await post(server, altered, { 'x-github-event': 'push', 'x-hub-signature-256': signature }), 401, 'SIGNATURE_INVALID');
    expect(pushes).toEqual([]);
  });

  it('a delivery without X-Hub-Signature-256 is refused 401', async () => {
    const { server, pushes, logger } = await start();
    const message = await expectError(await post(server, pushBody(), { 'x-github-event': 'push' }), 401, 'SIGNATURE_MISSING');
    expect(message).toMatch(/X-Hub-Signature-256 header is missing/);
    expect(pushes).toEqual([]);
    expect(logger.lines('warn').map((l) => l.fields.status)).toEqual([401]);
  });

  it('a delivery signed with SHA-1 only is refused 401, in either header', async () => {
    const { server, pushes } = await start();
    const body = pushBody();
    const onlySha1 = await post(server, body, { 'x-github-event': 'push', 'x-hub-signature': sign(body, SECRET, 'sha1') });
    expect(await expectError(onlySha1, 401, 'SIGNATURE_MISSING')).toMatch(/SHA-1/);
    const sha1InSha256 = await post(server, body, { 'x-github-event': 'push', 'x-hub-signature-256': sign(body, SECRET, 'sha1') });
    await expectError(sha1InSha256, 401, 'SIGNATURE_INVALID');
    expect(pushes).toEqual([]);
  });

  it('a signed ping is answered 200', async () => {
    const { server, pushes } = await start();
    const res = await deliver(server, JSON.stringify({ zen: 'Keep it logically awesome.', hook_id: 1 }), { event: 'ping' });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true, event: 'ping' });
    expect(pushes).toEqual([]);
  });

  it('another signed event is answered 202 and ignored, saying so', async () => {
    const { server, pushes } = await start();
    const res = await deliver(server, JSON.stringify({ action: 'opened' }), { event: 'issues' });
    expect(res.status).toBe(202);
    expect(await res.json()).toMatchObject({ ok: true, event: 'issues', ignored: true });
    expect(pushes).toEqual([]);
  });

  it('a signed push event whose body is not a push payload is refused 400, naming the field', async () => {
    const { server, pushes } = await start();
    const noAfter = JSON.stringify({ ref: 'refs/heads/main', before: BEFORE });
    expect(await expectError(await deliver(server, noAfter), 400, 'PAYLOAD_INVALID')).toMatch(/\bafter\b/);
    const numericRef = JSON.stringify({ ref: 7, after: AFTER });
    expect(await expectError(await deliver(server, numericRef), 400, 'PAYLOAD_INVALID')).toMatch(/\bref\b/);
    expect(await expectError(await deliver(server, '{"ref": '), 400, 'PAYLOAD_INVALID')).toMatch(/not JSON/);
    expect(pushes).toEqual([]);
  });

  it('a body that is not UTF-8 is refused 400 rather than verified over other bytes', async () => {
    const { server, pushes } = await start();
    const bytes = Buffer.concat([Buffer.from('{"ref":"refs/heads/'), Buffer.from([0xff, 0xfe]), Buffer.from(`","after":"${AFTER}"}`)]);
    await expectError(await deliver(server, bytes), 400, 'BODY_INVALID');
    expect(pushes).toEqual([]);
  });

  it('a content type other than JSON or a form is refused 415', async () => {
    const { server, pushes } = await start();
    await expectError(await deliver(server, pushBody(), { headers: { 'content-type': 'text/plain' } }), 415, 'UNSUPPORTED_MEDIA_TYPE');
    expect(pushes).toEqual([]);
  });

  it('a body over the limit is refused 413 even with a valid signature', async () => {
    const { server, pushes, logger } = await start();
    const body = pushBody({ padding: 'x'.repeat(2 * 1024 * 1024) });
    expect(Buffer.byteLength(body)).toBeGreaterThan(2 * 1024 * 1024);
    await expectError(await deliver(server, body), 413, 'BODY_TOO_LARGE');
    expect(pushes).toEqual([]);
    expect(logger.lines('warn').map((l) => l.fields.status)).toEqual([413]);
  });

  it('honours a smaller maxBodyBytes', async () => {
    const { server, pushes } = await start({ maxBodyBytes: 100 });
    await expectError(await deliver(server, pushBody({ padding: 'x'.repeat(200) })), 413, 'BODY_TOO_LARGE');
    expect(pushes).toEqual([]);
  });

  it('a burst past the rate limit is answered 429 with Retry-After', async () => {
    const { server, logger } = await start({ rateLimit: { max: 3, windowMs: 60_000 } });
    const ping = JSON.stringify({ zen: 'z' });
    for (let i = 0; i < 3; i++) expect((await deliver(server, ping, { event: 'ping' })).status).toBe(200);
    const limited = await deliver(server, ping, { event: 'ping' });
    const retryAfter = Number(limited.headers.get('retry-after'));
    await expectError(limited, 429, 'RATE_LIMITED');
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(logger.lines('warn').map((l) => l.fields.status)).toEqual([429]);
    // Only the webhook is limited: probes still answer.
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
  });

  it('without a secret the route is off: 404 naming CARAVAN_WEBHOOK_SECRET', async () => {
    const { server, pushes, logger } = await start({ webhookSecret: undefined });
    const message = await expectError(await deliver(server, pushBody()), 404, 'WEBHOOK_DISABLED');
    expect(message).toContain('CARAVAN_WEBHOOK_SECRET');
    expect(message).toContain('--webhook-secret-file');
    expect(pushes).toEqual([]);
    expect(logger.lines('warn').map((l) => l.fields.status)).toEqual([404]);
  });

  it('refuses to start with an empty secret', async () => {
    await expect(start({ webhookSecret: '' })).rejects.toMatchObject({ code: 'USAGE' });
  });
});

describe('probes and routing', () => {
  it('GET /health answers 200 {"status":"ok"}', async () => {
    const { server } = await start();
    const res = await fetch(`${server.url}/health`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok' });
  });

  it('GET /ready follows readiness(): 200 when ready, 503 when not or when it throws', async () => {
    let readiness: Readiness | Error = { ready: true, details: { git: 'ok' } };
    const { server, logger } = await start({
      readiness: async () => {
        if (readiness instanceof Error) throw readiness;
        return readiness;
      },
    });
    const ready = await fetch(`${server.url}/ready`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ ready: true, details: { git: 'ok' } });

    readiness = { ready: false, details: { git: 'not fetched yet' } };
    const notReady = await fetch(`${server.url}/ready`);
    expect(notReady.status).toBe(503);
    expect(await notReady.json()).toEqual({ ready: false, details: { git: 'not fetched yet' } });

    readiness = new Error('consul down at 10.0.0.7');
    const failed = await fetch(`${server.url}/ready`);
    expect(failed.status).toBe(503);
    const body = (await failed.json()) as Readiness;
    expect(body.ready).toBe(false);
    expect(JSON.stringify(body)).not.toContain('10.0.0.7');
    expect(logger.lines('error').map((l) => l.msg)).toEqual(['readiness check failed']);
  });

  it('an unknown route is 404 in the error shape', async () => {
    const { server } = await start();
    await expectError(await fetch(`${server.url}/nope`), 404, 'NOT_FOUND');
    await expectError(await fetch(`${server.url}${HOOK}`), 404, 'NOT_FOUND');
  });

  it('close() frees the port: a second server starts on it', async () => {
    const first = await start();
    const port = Number(new URL(first.server.url).port);
    expect(port).toBeGreaterThan(0);
    // A kept-alive connection must not hold the port open.
    expect((await fetch(`${first.server.url}/health`)).status).toBe(200);
    await first.server.close();
    const second = await start({ port });
    expect(second.server.url).toBe(first.server.url);
    expect((await fetch(`${second.server.url}/health`)).status).toBe(200);
  });

  it('a port in use is an IO error naming it', async () => {
    const { server } = await start();
    const port = Number(new URL(server.url).port);
    await expect(start({ port })).rejects.toMatchObject({ code: 'IO', data: { port } });
  });
});
