import { Ajv2020 } from 'ajv/dist/2020.js';
import { describe, expect, it } from 'vitest';
import { OPERATOR_TOKEN, unboundApi } from '../harness/apiServer.js';
import { workflow } from '../harness/gitRepo.js';

/**
 * The OpenAPI document against the server: every route fastify registered is documented,
 * every documented operation is served, and every schema in it compiles as JSON Schema 2020-12
 * (the dialect of OpenAPI 3.1).
 */

const quick = workflow('quick', '  tasks:\n    - { name: hello, run: "echo hello" }\n');

/** `/runs/:id` as OpenAPI writes it: `/runs/{id}`. */
function openApiPath(url: string): string {
  return url.replace(/:(\w+)/g, '{$1}');
}

describe('GET /openapi.json', () => {
  it('documents every registered route, and the server serves every documented operation', async () => {
    const { server } = await unboundApi({ 'quick.yaml': quick }, { webhookSecret: 'a webhook secret for the document' });
    const res = await server.inject({ method: 'GET', url: '/openapi.json' });
    expect(res.statusCode).toBe(200);
    const doc = JSON.parse(res.body) as { openapi: string; paths: Record<string, Record<string, { responses?: Record<string, unknown>; security?: unknown[] }>>; components: { securitySchemes: Record<string, unknown> } };
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.components.securitySchemes['bearer']).toEqual({ type: 'http', scheme: 'bearer' });

    // HEAD routes are fastify's automatic twins of the GET routes.
    const routes = server.routes().filter((r) => r.method !== 'HEAD');
    expect(routes.length).toBeGreaterThan(15);
    const registered = new Set(routes.map((r) => `${r.method.toLowerCase()} ${openApiPath(r.url)}`));
    const documented = new Set(Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m} ${path}`)));
    expect([...registered].filter((r) => !documented.has(r))).toEqual([]);
    expect([...documented].filter((d) => !registered.has(d))).toEqual([]);

    for (const op of documented) {
      const [method, path] = op.split(' ') as [string, string];
      // The stream of every run's events never ends: asked with a bad filter, it answers at once.
      const query = path === '/api/v1/events' ? '?workflow=Not_A_Name' : '';
      const url = path.replace('{name}', 'quick').replace('{id}', '20990101-000000-abcdef').replace('{task}', 'hello').replace('{commit}', 'a'.repeat(40)) + query;
      const r = await server.inject({ method: method.toUpperCase() as 'GET' | 'POST', url, headers: { authorization: `Bearer ${OPERATOR_TOKEN}`, 'content-type': 'application/json' }, ...(method === 'post' ? { payload: '{}' } : {}) });
      // Served: whatever the answer, it is not the router's "no such route".
      expect(r.body, op).not.toMatch(/"no route /);
      const responses = doc.paths[path]![method]!.responses ?? {};
      expect(Object.keys(responses), `${op} documents its status ${r.statusCode}`).toContain(String(r.statusCode));
    }
  });

  it('every schema in the document compiles as JSON Schema 2020-12', async () => {
    const { server } = await unboundApi({ 'quick.yaml': quick });
    const doc = JSON.parse((await server.inject({ method: 'GET', url: '/openapi.json' })).body) as { paths: Record<string, Record<string, unknown>> };
    const ajv = new Ajv2020({ strict: false });
    let compiled = 0;
    const walk = (node: unknown): void => {
      if (typeof node !== 'object' || node === null) return;
      const o = node as Record<string, unknown>;
      if (typeof o['schema'] === 'object' && o['schema'] !== null) {
        ajv.compile(o['schema'] as object);
        compiled++;
      }
      for (const v of Object.values(o)) walk(v);
    };
    walk(doc.paths);
    expect(compiled).toBeGreaterThan(40);
  });
});
