import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import type { ErrorObject, ValidateFunction } from 'ajv';
import { packageRoot } from '../packageRoot.js';
import type { DiagnosticCode, PendingDiagnostic } from './Diagnostic.js';
import { closest, describePath } from './describePath.js';
import { explainBadName } from './explainBadName.js';

const compiled = new Map<string, ValidateFunction>();

export type SchemaName = 'workflow.v1.json' | 'approval.v1.json' | 'controller-deploy.v1.json';

/** A JSON Schema shipped in schemas/. */
export function loadSchema(name: SchemaName): Record<string, unknown> {
  return JSON.parse(readFileSync(join(packageRoot(), 'schemas', name), 'utf8')) as Record<string, unknown>;
}

/** The JSON Schema of caravan/v1 workflows. */
export function workflowSchema(): Record<string, unknown> {
  return loadSchema('workflow.v1.json');
}

function validator(name: SchemaName): ValidateFunction {
  let v = compiled.get(name);
  if (v === undefined) {
    const ajv = new Ajv2020({
      allErrors: true,
      verbose: true,
      strict: true,
      strictTypes: false,
      allowUnionTypes: true,
    });
    v = ajv.compile(loadSchema(name));
    compiled.set(name, v);
  }
  return v;
}

/**
 * Validates a parsed document against a schema in schemas/ (the workflow schema unless
 * named) and turns ajv's errors into diagnostics a pipeline author can act on: the offending
 * key or value, what was expected, and a "did you mean" for typos.
 */
export function validateSchema(doc: unknown, schema: SchemaName = 'workflow.v1.json'): PendingDiagnostic[] {
  const validate = validator(schema);
  if (validate(doc)) return [];
  const out: PendingDiagnostic[] = [];
  const seen = new Set<string>();
  for (const e of validate.errors ?? []) {
    const d = toDiagnostic(doc, e);
    if (d === undefined) continue;
    const key = `${d.path.join('\u0000')}|${d.code}|${d.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(d);
  }
  return out;
}

function pathOf(doc: unknown, pointer: string): Array<string | number> {
  if (pointer === '') return [];
  const out: Array<string | number> = [];
  let node: unknown = doc;
  for (const raw of pointer.slice(1).split('/')) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(node) && /^\d+$/.test(seg)) {
      out.push(Number(seg));
      node = node[Number(seg)];
    } else {
      out.push(seg);
      node = node !== null && typeof node === 'object' ? (node as Record<string, unknown>)[seg] : undefined;
    }
  }
  return out;
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'number') return Number.isInteger(v) ? 'an integer' : 'a number';
  if (typeof v === 'string') return 'a string';
  if (typeof v === 'boolean') return 'a boolean';
  return typeof v;
}

const typeWords: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  integer: 'an integer',
  boolean: 'a boolean (true or false)',
  array: 'a list',
  object: 'a mapping',
  null: 'null',
};

function show(v: unknown): string {
  const s = JSON.stringify(v);
  if (s === undefined) return String(v);
  return s.length > 60 ? s.slice(0, 57) + '...' : s;
}

function diag(code: DiagnosticCode, message: string, path: Array<string | number>, at: 'key' | 'value' = 'value'): PendingDiagnostic {
  return { severity: 'error', code, message, path, at };
}

/** The $defs entry an error came from, for formats that deserve their own wording. */
function defName(e: ErrorObject): string | undefined {
  const m = /#\/\$defs\/([A-Za-z]+)\/[a-zA-Z]+$/.exec(e.schemaPath);
  return m?.[1];
}

const nameDefs = new Set(['dnsLabel', 'taskName', 'identifier', 'labelKey', 'envName']);

function toDiagnostic(doc: unknown, e: ErrorObject): PendingDiagnostic | undefined {
  const path = pathOf(doc, e.instancePath);
  const where = describePath(doc, path);
  const params = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'required': {
      const field = String(params['missingProperty']);
      return diag('SCHEMA_REQUIRED', `missing required field '${field}' in ${where}`, path);
    }
    case 'additionalProperties': {
      const field = String(params['additionalProperty']);
      const allowed = Object.keys((e.parentSchema?.['properties'] as Record<string, unknown> | undefined) ?? {});
      const hint = closest(field, allowed);
      const tail = hint !== undefined ? `; did you mean '${hint}'?` : allowed.length > 0 ? `; allowed: ${allowed.join(', ')}` : '';
      return diag('SCHEMA_UNKNOWN_FIELD', `unknown field '${field}' in ${where}${tail}`, [...path, field], 'key');
    }
    case 'type': {
      const want = String(params['type']).split(',').map((t) => typeWords[t] ?? t).join(' or ');
      return diag('SCHEMA_TYPE', `${where} must be ${want}, not ${typeName(e.data)}`, path);
    }
    case 'enum': {
      const allowed = (params['allowedValues'] as unknown[]).map((v) => String(v));
      const hint = typeof e.data === 'string' ? closest(e.data, allowed) : undefined;
      const tail = hint !== undefined ? `; did you mean '${hint}'?` : '';
      return diag('SCHEMA_ENUM', `${where} must be one of ${allowed.join(', ')}, not ${show(e.data)}${tail}`, path);
    }
    case 'const':
      return diag('SCHEMA_CONST', `${where} must be ${show(params['allowedValue'])}, not ${show(e.data)}`, path);
    case 'pattern':
      return patternDiagnostic(doc, e, path, where);
    case 'propertyNames':
      // The failing name is reported by the nested error, which carries `propertyName`.
      return undefined;
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      return diag('SCHEMA_RANGE', `${where} must be ${String(params['comparison'])} ${String(params['limit'])}, not ${show(e.data)}`, path);
    case 'minItems':
      return diag('SCHEMA_RANGE', `${where} must have at least ${String(params['limit'])} item(s)`, path);
    case 'maxItems':
      return diag('SCHEMA_RANGE', `${where} must have at most ${String(params['limit'])} items`, path);
    case 'minLength':
      return diag('SCHEMA_RANGE', `${where} must not be empty`, path);
    case 'maxLength':
      return diag('SCHEMA_RANGE', `${where} must be at most ${String(params['limit'])} characters long`, path);
    case 'uniqueItems':
      return diag('SCHEMA_RANGE', `${where} lists ${show((e.data as unknown[])[Number(params['j'])])} twice`, [...path, Number(params['j'])]);
    case 'minProperties':
    case 'maxProperties':
      return propertiesCountDiagnostic(e, path, where);
    default:
      return diag('SCHEMA_FORMAT', `${where} ${e.message ?? 'is invalid'}`, path);
  }
}

function propertiesCountDiagnostic(e: ErrorObject, path: Array<string | number>, where: string): PendingDiagnostic {
  const props = Object.keys((e.parentSchema?.['properties'] as Record<string, unknown> | undefined) ?? {});
  const limit = Number((e.params as { limit?: number }).limit);
  if (props.length > 0 && (limit === 1 || e.keyword === 'maxProperties')) {
    const list = props.join(', ');
    return diag('SCHEMA_RANGE', `${where} must have exactly one of ${list}`, path);
  }
  const word = e.keyword === 'minProperties' ? 'at least' : 'at most';
  return diag('SCHEMA_RANGE', `${where} must have ${word} ${limit} entries`, path);
}

function patternDiagnostic(doc: unknown, e: ErrorObject, path: Array<string | number>, where: string): PendingDiagnostic {
  const def = defName(e);
  const propertyName = (e as ErrorObject & { propertyName?: string }).propertyName;
  const value = propertyName ?? String(e.data);
  const target = propertyName !== undefined ? [...path, propertyName] : path;
  const at = propertyName !== undefined ? 'key' : 'value';
  const subject = propertyName !== undefined
    ? `name '${propertyName}' in ${describePath(doc, path)}`
    : where.includes(`'${value}'`) ? where : where.endsWith("'") ? `${where} ('${value}')` : `${where} '${value}'`;
  if (def !== undefined && nameDefs.has(def)) {
    return diag('NAME_INVALID', `${subject} is not allowed: ${explainBadName(value, def)}`, target, at);
  }
  if (def === 'duration') {
    return diag('SCHEMA_FORMAT', `${subject} is not a duration; write it like 500ms, 90s, 10m, 24h, 7d or 1h30m (at most 5 digits a number: up to 99999d)`, target, at);
  }
  if (path[path.length - 1] === 'subject') {
    return diag('SCHEMA_FORMAT', `${subject} is not a valid NATS subject; use tokens of letters, digits, '-' and '_' separated by '.', '*' for one token and a final '>'`, target, at);
  }
  if (def === 'secretRef') {
    return diag('SCHEMA_FORMAT', `${subject} is not a valid Nomad Variable path or key`, target, at);
  }
  return diag('SCHEMA_FORMAT', `${subject} must match ${String((e.params as { pattern?: string }).pattern)}`, target, at);
}
