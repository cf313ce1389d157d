import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { InjectRequest } from '../../engine/api/ControllerServer.js';
import { noopLogger } from '../../engine/run/Logger.js';
import { OPERATOR_TOKEN, unboundApi } from '../harness/apiServer.js';
import { workflow } from '../harness/gitRepo.js';

/**
 * Hostile requests against every route: malformed JSON, huge bodies, wrong types, unicode,
 * path traversal and NUL in names and ids, very long ids, duplicate and missing headers.
 * Every answer is below 500, every refusal has the error body, and the server still answers
 * afterwards. The heap is measured around many requests (figures printed, bound loose).
 */

const quick = workflow('quick', '  params:\n    n: { type: integer, required: true }\n  tasks:\n    - { name: hello, run: "true" }\n');

const HOSTILE = [
  '..', '../', '..%2f..%2fetc%2fpasswd', '%2e%2e', '%2e%2e%2f', '%00', 'a%00b', '%ff%fe', '%', '%zz', 'x'.repeat(5000), 'é', '%E2%80%AE', '😀', '%F0%9F%98%80',
  '.', '-', 'quick%20', 'QUICK', '20990101-000000-abcdef', 'hello[0]', 'hello[999999999]', '${{ secrets.x }}', '<script>', "'; DROP TABLE runs;--", '\\..\\..', '%5c..%5c',
];

const segment = fc.oneof(fc.constantFrom(...HOSTILE), fc.string({ maxLength: 40 }).map(encodeURIComponent), fc.string({ unit: 'grapheme', maxLength: 20 }).map(encodeURIComponent));

const BODIES = ['{', '{"params": ', 'null', '[]', '"str"', '1e999', '{"params": null}', '{"params": []}', '{"params": {"n": "x"}}', '{"params": {"__proto__": {"polluted": 1}}}', '{"params": {"constructor": 1}}', '{"comment": 5}', '{"comment": "' + 'c'.repeat(3000) + '"}', '{"idempotencyKey": "../../x"}', '{"idempotencyKey": ""}', '\u0000', '\uFEFF{}', '{"a":' .repeat(2000), 'x'.repeat(1024 * 1024 + 10)];

const body = fc.oneof(fc.constantFrom(...BODIES), fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v) ?? 'null'), fc.string({ maxLength: 200 }));

const headerSet = fc.record({
  authorization: fc.constantFrom<string | string[] | undefined>(`Bearer ${OPERATOR_TOKEN}`, undefined, 'Bearer', 'Bearer ', `bearer ${OPERATOR_TOKEN}`, `Bearer ${OPERATOR_TOKEN} extra`, [`Bearer ${OPERATOR_TOKEN}`, 'Bearer other-token-0123456789abc'], 'Basic dXNlcjpwYXNz', `Bearer ${'y'.repeat(5000)}`),
  contentType: fc.constantFrom<string | string[] | undefined>('application/json', undefined, 'text/plain', 'application/json; charset=latin1', 'application/x-www-form-urlencoded', ['application/json', 'text/plain'], 'multipart/form-data; boundary=x', 'application/json;;;'),
});

const ROUTES: Array<{ method: InjectRequest['method']; path: (s: string[]) => string }> = [
  { method: 'GET', path: () => '/api/v1/workflows' },
  { method: 'GET', path: ([a]) => `/api/v1/workflows/${a}` },
  { method: 'POST', path: ([a]) => `/api/v1/workflows/${a}/runs` },
  { method: 'GET', path: ([a]) => `/api/v1/runs?workflow=${a}&status=${a}&since=${a}&limit=${a}&cursor=${a}` },
  { method: 'GET', path: ([a]) => `/api/v1/runs/${a}` },
  { method: 'POST', path: ([a]) => `/api/v1/runs/${a}/pause` },
  { method: 'POST', path: ([a]) => `/api/v1/runs/${a}/unpause` },
  { method: 'POST', path: ([a]) => `/api/v1/runs/${a}/cancel` },
  { method: 'POST', path: ([a, b]) => `/api/v1/runs/${a}/tasks/${b}/approve` },
  { method: 'POST', path: ([a, b]) => `/api/v1/runs/${a}/tasks/${b}/reject` },
  { method: 'GET', path: ([a, b]) => `/api/v1/runs/${a}/logs/${b}?follow=${a}&since=${b}` },
  { method: 'GET', path: () => '/api/v1/syncs?limit=-1' },
  { method: 'GET', path: ([a]) => `/api/v1/syncs/${a}` },
  { method: 'POST', path: () => '/api/v1/webhooks/github' },
  { method: 'GET', path: ([a]) => `/ready?${a}` },
  { method: 'GET', path: ([a]) => `/openapi.json/${a}` },
  { method: 'GET', path: ([a, b]) => `/api/v1/${a}/${b}` },
];

async function send(server: Awaited<ReturnType<typeof unboundApi>>['server'], route: (typeof ROUTES)[number], segments: string[], h: { authorization: string | string[] | undefined; contentType: string | string[] | undefined }, payload: string | undefined): Promise<{ statusCode: number; body: string }> {
  const headers: Record<string, string | string[]> = {};
  if (h.authorization !== undefined) headers['authorization'] = h.authorization;
  if (h.contentType !== undefined && payload !== undefined) headers['content-type'] = h.contentType;
  return server.inject({ method: route.method, url: route.path(segments), headers, ...(payload !== undefined && route.method === 'POST' ? { payload } : {}) });
}

function expectRefusalOrAnswer(res: { statusCode: number; body: string }, what: string): void {
  expect(res.statusCode, `${what} → ${res.statusCode} ${res.body.slice(0, 300)}`).toBeLessThan(500);
  if (res.statusCode >= 400) {
    const parsed = JSON.parse(res.body) as { error?: { code?: unknown; message?: unknown } };
    expect(typeof parsed.error?.code, what).toBe('string');
    expect(typeof parsed.error?.message, what).toBe('string');
  }
}

describe('fuzzing every endpoint', () => {
  it('hostile names, ids, bodies and headers get a 4xx with the error body (or a 2xx), never a 5xx', async () => {
    const { server } = await unboundApi({ 'quick.yaml': quick }, { webhookSecret: 'webhook secret for fuzzing' });
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...ROUTES), fc.tuple(segment, segment), headerSet, fc.option(body, { nil: undefined }), async (route, segs, h, payload) => {
        const res = await send(server, route, segs, h, payload);
        expectRefusalOrAnswer(res, `${route.method} ${route.path(segs).slice(0, 120)} ${JSON.stringify(h).slice(0, 120)} ${String(payload).slice(0, 80)}`);
      }),
      { numRuns: 600 },
    );
    expect((await server.inject({ method: 'GET', url: '/health' })).statusCode).toBe(200);
    expect(Object.prototype).not.toHaveProperty('polluted');
  });

  it('every hostile segment on every route with a valid token: 4xx with the error body', async () => {
    const { server } = await unboundApi({ 'quick.yaml': quick });
    for (const route of ROUTES) {
      for (const s of HOSTILE) {
        const res = await send(server, route, [s, s], { authorization: `Bearer ${OPERATOR_TOKEN}`, contentType: 'application/json' }, '{}');
        expectRefusalOrAnswer(res, `${route.method} ${route.path([s, s]).slice(0, 120)}`);
      }
    }
  });

  it('the heap stays flat over many refused and answered requests over real sockets', async () => {
    // Over sockets: inject() itself keeps about 10 KiB per request (light-my-request, measured
    // with a bare fastify route), which would hide the server's own figure. A logger that keeps
    // nothing, since a recording one grows by design; a limit that lets every request through.
    const { server } = await unboundApi({ 'quick.yaml': quick }, { logger: noopLogger, listen: true, rateLimit: { max: 1_000_000, windowMs: 60_000 } });
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const round = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) {
        const route = ROUTES[i % ROUTES.length]!;
        const s = HOSTILE[i % HOSTILE.length]!;
        const payload = route.method === 'POST' ? BODIES[i % BODIES.length] : undefined;
        const res = await fetch(`${server.url}${route.path([s, s])}`, {
          method: route.method,
          headers: { ...(i % 3 === 0 ? {} : { authorization: `Bearer ${OPERATOR_TOKEN}` }), ...(payload !== undefined ? { 'content-type': 'application/json' } : {}) },
          ...(payload !== undefined ? { body: payload } : {}),
        }).catch(() => undefined);
        if (res !== undefined) expect(res.status, route.path([s, s]).slice(0, 100)).toBeLessThan(500);
        await res?.arrayBuffer();
      }
    };
    await round(1000);
    gc();
    const before = process.memoryUsage().heapUsed;
    await round(5000);
    gc();
    const after = process.memoryUsage().heapUsed;
    const growthMiB = (after - before) / 1024 / 1024;
    console.log(`api fuzz heap: ${(before / 1048576).toFixed(1)} MiB before, ${(after / 1048576).toFixed(1)} MiB after 5000 more requests (${growthMiB >= 0 ? '+' : ''}${growthMiB.toFixed(2)} MiB)`);
    // Loose: a leak of a few KiB per request would show as tens of MiB.
    expect(growthMiB).toBeLessThan(10);
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
  });
});
