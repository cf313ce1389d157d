import { createHmac } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { ControllerServer, type ControllerServerOptions } from '../../engine/api/ControllerServer.js';
import { MemoryLogger } from '../../engine/run/Logger.js';
import { PromMetrics } from '../../engine/telemetry/PromMetrics.js';

/** GET /metrics and the webhook's counts on the controller's listener, over real sockets. */

const SECRET = 'metrics route secret 4b1d';
const HOOK = '/api/v1/webhooks/github';
const servers: ControllerServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function start(options: Partial<ControllerServerOptions> = {}): Promise<{ server: ControllerServer; metrics: PromMetrics }> {
  const metrics = new PromMetrics();
  const server = await ControllerServer.start({
    host: '127.0.0.1',
    port: 0,
    readiness: async () => ({ ready: true, details: {} }),
    onPush: () => undefined,
    logger: new MemoryLogger(),
    metrics,
    exposition: metrics,
    ...options,
  });
  servers.push(server);
  return { server, metrics };
}

function webhookCount(text: string, outcome: string): number | undefined {
  const m = new RegExp(`^caravan_webhooks_total\\{outcome="${outcome}"\\} (\\d+)$`, 'm').exec(text);
  return m === null ? undefined : Number(m[1]);
}

function deliver(url: string, event: string, body: string, secret = SECRET): Promise<Response> {
  return fetch(`${url}${HOOK}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-github-event': event, 'x-github-delivery': 'd-1', 'x-hub-signature-256': `sha256=${createHmac('sha256', secret).update(body).digest('hex')}` },
    body,
  });
}

describe('GET /metrics on the controller listener', () => {
  it('is open by default and answers the registry\'s text with Prometheus\'s content type', async () => {
    const { server, metrics } = await start();
    metrics.runStarted('etl', 'manual');
    const res = await fetch(`${server.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(metrics.contentType);
    expect(await res.text()).toContain('caravan_runs_started_total{workflow="etl",trigger="manual"} 1');
  });

  it('with metricsOpen false, answers 401 unless authorizeMetrics accepts the Authorization header', async () => {
    const seen: Array<string | undefined> = [];
    const { server } = await start({ metricsOpen: false, authorizeMetrics: (a) => { seen.push(a); return a === 'Bearer scrape-token'; } });
    const none = await fetch(`${server.url}/metrics`);
    expect(none.status).toBe(401);
    expect(await none.json()).toMatchObject({ error: { code: 'UNAUTHORIZED' } });
    expect((await fetch(`${server.url}/metrics`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    const ok = await fetch(`${server.url}/metrics`, { headers: { authorization: 'Bearer scrape-token' } });
    expect(ok.status).toBe(200);
    expect(await ok.text()).toContain('# TYPE caravan_leader gauge');
    expect(seen).toEqual([undefined, 'Bearer wrong', 'Bearer scrape-token']);
    // The probes stay open.
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
  });

  it('refuses to start closed with nothing to authorize a scrape, and has no route without a registry', async () => {
    await expect(start({ metricsOpen: false })).rejects.toMatchObject({ code: 'USAGE' });
    const metrics = new PromMetrics();
    const bare = await ControllerServer.start({ host: '127.0.0.1', port: 0, readiness: async () => ({ ready: true, details: {} }), onPush: () => undefined, logger: new MemoryLogger(), metrics });
    servers.push(bare);
    expect((await fetch(`${bare.url}/metrics`)).status).toBe(404);
  });
});

describe('caravan_webhooks_total', () => {
  it('counts each webhook request by outcome: accepted, ping, ignored, refused', async () => {
    const { server, metrics } = await start({ webhookSecret: SECRET });
    const push = JSON.stringify({ ref: 'refs/heads/main', after: '2'.repeat(40) });
    expect((await deliver(server.url, 'push', push)).status).toBe(202);
    expect((await deliver(server.url, 'push', push)).status).toBe(202);
    expect((await deliver(server.url, 'ping', '{"zen":"hi"}')).status).toBe(200);
    expect((await deliver(server.url, 'issues', '{"action":"opened"}')).status).toBe(202);
    expect((await deliver(server.url, 'push', push, 'not the secret')).status).toBe(401);
    const text = await metrics.metrics();
    expect([webhookCount(text, 'accepted'), webhookCount(text, 'ping'), webhookCount(text, 'ignored'), webhookCount(text, 'refused')]).toEqual([2, 1, 1, 1]);
    expect(webhookCount(text, 'disabled')).toBeUndefined();
  });

  it('counts requests to a webhook that is off as disabled', async () => {
    const { server, metrics } = await start();
    expect((await deliver(server.url, 'push', '{}')).status).toBe(404);
    expect(webhookCount(await metrics.metrics(), 'disabled')).toBe(1);
  });
});
