import type { FastifyInstance } from 'fastify';
import type { RunSummary } from '../app/RunQueries.js';
import type { FileResult } from '../spec/validateWorkflows.js';
import type { TaskSpec } from '../spec/Workflow.js';
import { buildGraphPicture } from '../compile/GraphPicture.js';
import { renderMermaid } from '../compile/renderMermaid.js';
import { ApiError } from './ApiError.js';
import type { LastSync } from './ApiBackend.js';
import { responses } from './apiSchemas.js';
import type { RouteContext } from './RouteContext.js';

/** metadata.name: a DNS label, as the workflow schema requires. */
export const WORKFLOW_NAME = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';

interface WorkflowSummary {
  name: string | null;
  file: string;
  valid: boolean;
  version: string | null;
  diagnostics: FileResult['diagnostics'];
  lastSync: LastSync | null;
  lastRun: RunSummary | null;
}

const nameParams = { type: 'object', required: ['name'], properties: { name: { type: 'string', pattern: WORKFLOW_NAME } } };

/** GET /workflows, GET /workflows/{name}: the workflows at the synced commit, with their DAG. */
export async function workflowRoutes(api: FastifyInstance, { backend }: RouteContext): Promise<void> {
  const summary = async (f: FileResult, commit: string | undefined): Promise<WorkflowSummary> => {
    const last = backend.lastSync();
    const lastRun = f.name !== undefined ? ((await backend.queries.list({ workflow: f.name, limit: 1 })).runs[0] ?? null) : null;
    return { name: f.name ?? null, file: f.file, valid: f.workflow !== undefined, version: commit ?? null, diagnostics: f.diagnostics, lastSync: last ?? null, lastRun };
  };

  api.get('/workflows', {
    config: { need: 'read' },
    schema: { summary: 'Workflows at the synced commit', tags: ['workflows'], response: responses({ 200: 'WorkflowList' }, [401, 429]) },
  }, async () => {
    const { commit, files } = await backend.workflows();
    const workflows: WorkflowSummary[] = [];
    for (const f of files) workflows.push(await summary(f, commit));
    return { commit: commit ?? null, workflows };
  });

  api.get<{ Params: { name: string } }>('/workflows/:name', {
    config: { need: 'read' },
    schema: { summary: 'One workflow, with its DAG', tags: ['workflows'], params: nameParams, response: responses({ 200: 'WorkflowDetail' }, [400, 401, 404, 429]) },
  }, async (request) => {
    const { commit, files } = await backend.workflows();
    const f = files.find((x) => x.name === request.params.name);
    if (f === undefined) throw new ApiError(404, 'WORKFLOW_NOT_FOUND', `no workflow '${request.params.name}' at ${commit?.slice(0, 12) ?? 'the synced commit (none yet)'}`, { workflow: request.params.name });
    const tasks = f.workflow?.spec.tasks ?? [];
    return {
      workflow: await summary(f, commit),
      ...(f.workflow?.metadata.description !== undefined ? { description: f.workflow.metadata.description } : {}),
      params: maskSecretDefaults(f.workflow?.spec.params ?? {}),
      dag: {
        nodes: tasks.map((t) => ({ id: t.name, kind: kindOf(t), ...(t.pool !== undefined ? { pool: t.pool } : {}), ...(t.forEach !== undefined ? { forEach: true } : {}) })),
        edges: tasks.flatMap((t) => (t.needs ?? []).map((n) => ({ from: n, to: t.name }))),
        // The picture `caravan graph` draws, with onFailure, finally and compensation too.
        ...(f.workflow !== undefined ? { mermaid: renderMermaid(buildGraphPicture(f.workflow)) } : {}),
      },
    };
  });
}

function kindOf(t: TaskSpec): 'run' | 'approval' | 'workflow' | 'http' | 'other' {
  if (t.approval !== undefined) return 'approval';
  if (t.workflow !== undefined) return 'workflow';
  if (t.http !== undefined) return 'http';
  if (t.run !== undefined) return 'run';
  return 'other';
}

/** A secret param's default is a secret like its value: shown as `***`. */
function maskSecretDefaults(params: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(params)) {
    const spec = v as Record<string, unknown>;
    out[k] = spec['secret'] === true && 'default' in spec ? { ...spec, default: '***' } : spec;
  }
  return out;
}
