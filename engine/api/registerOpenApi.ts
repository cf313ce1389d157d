import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import swagger from '@fastify/swagger';
import type { FastifyInstance } from 'fastify';
import { packageRoot } from '../packageRoot.js';
import { responses } from './apiSchemas.js';

/** Where the document is served. */
export const OPENAPI_PATH = '/openapi.json';

/**
 * Turns on the OpenAPI 3.1 document (@fastify/swagger behind this one function): it must be
 * called before any route is added, since the document is built from the routes' schemas as
 * they are registered, and it serves the document at GET /openapi.json.
 */
export async function registerOpenApi(app: FastifyInstance): Promise<void> {
  const { version } = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Caravan controller API',
        version,
        description: 'REST API of `caravan controller --listen` (docs/api.md). Bearer tokens with roles viewer, operator and approver; every error is {"error": {"code", "message", "details"}}.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
      tags: [
        { name: 'workflows' }, { name: 'runs' }, { name: 'syncs' },
        { name: 'meta', description: 'Probes and this document: no token needed.' },
        { name: 'webhooks', description: 'Authenticated by the HMAC signature, not by a token.' },
      ],
    },
  });
  app.get(OPENAPI_PATH, {
    schema: { summary: 'This document (OpenAPI 3.1)', tags: ['meta'], security: [], response: { 200: { type: 'object', description: 'An OpenAPI 3.1 document' } } },
  }, async () => app.swagger());
}

/** Route schemas of the probes, for the document. */
export const HEALTH_SCHEMA = { summary: 'Liveness: the process is up', tags: ['meta'], security: [], response: responses({ 200: 'Health' }, []) };
export const READY_SCHEMA = { summary: 'Readiness: 200 when ready, 503 with the same body when not', tags: ['meta'], security: [], response: responses({ 200: 'Ready', 503: 'Ready' }, []) };
export const WEBHOOK_SCHEMA = {
  summary: 'GitHub push webhook (X-Hub-Signature-256)', tags: ['webhooks'], security: [],
  response: { 202: { type: 'object', description: 'Accepted: a push to the watched branch makes the controller sync now' }, ...responses({}, [400, 401, 404, 413, 415, 429]) },
};
