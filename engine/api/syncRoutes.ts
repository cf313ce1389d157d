import type { FastifyInstance } from 'fastify';
import { ApiError } from './ApiError.js';
import { responses } from './apiSchemas.js';
import type { RouteContext } from './RouteContext.js';

/** A commit id: SHA-1, or SHA-256 in a repository that uses it. */
const COMMIT = '^([0-9a-f]{40}|[0-9a-f]{64})$';

interface SyncRow {
  commit: string;
  status: string;
  startedAt: string;
  durationMs?: number;
  message?: string;
  author?: string;
}

/** GET /syncs, GET /syncs/{commit}: the controller's sync reports from the audit branch. */
export async function syncRoutes(api: FastifyInstance, { backend }: RouteContext): Promise<void> {
  api.get<{ Querystring: { limit?: string } }>('/syncs', {
    config: { need: 'read' },
    schema: {
      summary: 'Sync reports, newest first', tags: ['syncs'],
      querystring: { type: 'object', additionalProperties: false, properties: { limit: { type: 'string', pattern: '^[0-9]{1,3}$', description: 'At most this many, 1 to 500 (default 50).' } } },
      response: responses({ 200: 'SyncList' }, [400, 401, 429]),
    },
  }, async (request) => {
    const limit = request.query.limit !== undefined ? Number(request.query.limit) : 50;
    if (limit < 1 || limit > 500) throw new ApiError(400, 'BAD_REQUEST', 'querystring.limit: must be from 1 to 500', { field: 'querystring.limit' });
    const rows: SyncRow[] = [];
    for (const commit of await backend.audit.listSyncs()) {
      const r = (await backend.audit.readSync(commit)) as Partial<SyncRow> | undefined;
      if (r === undefined || typeof r.startedAt !== 'string') continue;
      rows.push({ commit, status: String(r.status), startedAt: r.startedAt, ...(typeof r.durationMs === 'number' ? { durationMs: r.durationMs } : {}), ...(typeof r.message === 'string' ? { message: r.message } : {}), ...(typeof r.author === 'string' ? { author: r.author } : {}) });
    }
    rows.sort((a, b) => (a.startedAt < b.startedAt ? 1 : a.startedAt > b.startedAt ? -1 : 0));
    return { syncs: rows.slice(0, limit) };
  });

  api.get<{ Params: { commit: string } }>('/syncs/:commit', {
    config: { need: 'read' },
    schema: {
      summary: 'The sync report of one commit', tags: ['syncs'],
      params: { type: 'object', required: ['commit'], properties: { commit: { type: 'string', pattern: COMMIT } } },
      response: responses({ 200: 'SyncReport' }, [400, 401, 404, 429]),
    },
  }, async (request) => {
    const report = await backend.audit.readSync(request.params.commit);
    if (report === undefined) throw new ApiError(404, 'SYNC_NOT_FOUND', `no sync report for commit ${request.params.commit}`, { commit: request.params.commit });
    return report;
  });
}
