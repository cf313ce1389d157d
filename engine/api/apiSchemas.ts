import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../packageRoot.js';

/** A JSON Schema as a plain object. */
export type JsonSchema = Record<string, unknown>;

/** The definitions of schemas/api/api.v1.json; a name here that the file lacks fails at startup. */
export type ApiSchemaName =
  | 'Error'
  | 'WorkflowList'
  | 'WorkflowDetail'
  | 'RunStartRequest'
  | 'RunStarted'
  | 'RunPage'
  | 'RunDetail'
  | 'ControlRequest'
  | 'RetryRequest'
  | 'RetryStarted'
  | 'ControlAccepted'
  | 'LogLines'
  | 'LogLine'
  | 'SyncList'
  | 'SyncReport'
  | 'Health'
  | 'Ready'
  | 'RunEventMessage';

let loaded: { api: JsonSchema; snapshot: JsonSchema } | undefined;

function files(): { api: JsonSchema; snapshot: JsonSchema } {
  loaded ??= {
    api: JSON.parse(readFileSync(join(packageRoot(), 'schemas', 'api', 'api.v1.json'), 'utf8')) as JsonSchema,
    snapshot: JSON.parse(readFileSync(join(packageRoot(), 'schemas', 'run-snapshot.v1.json'), 'utf8')) as JsonSchema,
  };
  return loaded;
}

/**
 * One definition of schemas/api/api.v1.json with every reference inlined: its own `#/$defs/`
 * and the run snapshot's schema (schemas/run-snapshot.v1.json, the one run.json is checked
 * against). Fastify's validator and @fastify/swagger then see self-contained schemas, so
 * neither has to resolve references across files (and the OpenAPI document needs none).
 */
export function apiSchema(name: ApiSchemaName): JsonSchema {
  const { api } = files();
  const defs = api['$defs'] as Record<string, JsonSchema>;
  const def = defs[name];
  if (def === undefined) throw new Error(`schemas/api/api.v1.json has no definition ${name}`);
  return inline(def, defs, 0) as JsonSchema;
}

function inline(node: unknown, defs: Record<string, JsonSchema>, depth: number): unknown {
  // The schemas are ours and not recursive; the bound only turns a mistake into an error.
  if (depth > 32) throw new Error('schemas/api/api.v1.json: references nest too deep (a cycle?)');
  if (Array.isArray(node)) return node.map((n) => inline(n, defs, depth));
  if (typeof node !== 'object' || node === null) return node;
  const o = node as JsonSchema;
  const ref = o['$ref'];
  if (typeof ref === 'string') {
    if (ref === '../run-snapshot.v1.json') return snapshotSchema();
    const m = /^#\/\$defs\/(\w+)$/.exec(ref);
    if (m === null || defs[m[1]!] === undefined) throw new Error(`schemas/api/api.v1.json: cannot resolve $ref ${ref}`);
    return inline(defs[m[1]!], defs, depth + 1);
  }
  const out: JsonSchema = {};
  for (const [k, v] of Object.entries(o)) out[k] = inline(v, defs, depth);
  return out;
}

/** The run snapshot's schema, its own definitions inlined, without the draft and id keywords. */
function snapshotSchema(): JsonSchema {
  const { snapshot } = files();
  const defs = (snapshot['$defs'] ?? {}) as Record<string, JsonSchema>;
  const rest: JsonSchema = {};
  for (const [k, v] of Object.entries(snapshot)) if (k !== '$schema' && k !== '$id' && k !== '$defs') rest[k] = v;
  return inline(rest, defs, 0) as JsonSchema;
}

/** A response map for a route: the success schema, and the error body for every listed status. */
export function responses(ok: Record<number, ApiSchemaName>, errors: readonly number[]): Record<number, JsonSchema> {
  const out: Record<number, JsonSchema> = {};
  for (const [status, name] of Object.entries(ok)) out[Number(status)] = apiSchema(name);
  const error = apiSchema('Error');
  for (const status of errors) out[status] = { ...error, description: ERROR_MEANING[status] ?? 'error' };
  return out;
}

const ERROR_MEANING: Record<number, string> = {
  400: 'a field of the request is malformed (details.field names it)',
  401: 'no bearer token, or an unknown one',
  403: 'the token lacks the role, or the caller is not among the approvers',
  404: 'no such workflow, run, task or sync',
  409: 'the run is not in a state for this action, or the idempotency key was used for other params',
  413: 'the body is larger than the limit',
  415: 'the body is not JSON',
  422: 'params do not match the workflow (details.params names them), or the workflow is invalid',
  429: 'too many requests for this token; see Retry-After',
  503: 'this controller is a follower: send mutations to the leader (details.leader)',
};
