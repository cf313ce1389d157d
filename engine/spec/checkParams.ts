import type { PendingDiagnostic } from './Diagnostic.js';
import { compilePattern } from './compilePattern.js';
import { asRecord, asString } from './shape.js';

/**
 * Names every plain object already answers to (`__proto__`, `constructor`, `toString`...):
 * as param names they would read as declared when they are not, or replace an object's
 * prototype when a value is stored under them.
 */
export const RESERVED_PARAM_NAMES: ReadonlySet<string> = new Set(['__proto__', 'prototype', ...Object.getOwnPropertyNames(Object.prototype)]);

/**
 * A param's name must not be one of RESERVED_PARAM_NAMES, and its default (and enum values)
 * must themselves be valid values of the param.
 */
export function checkParams(spec: Record<string, unknown>): PendingDiagnostic[] {
  const out: PendingDiagnostic[] = [];
  const params = asRecord(spec['params']) ?? {};
  for (const [name, raw] of Object.entries(params)) {
    const base = ['spec', 'params', name];
    if (RESERVED_PARAM_NAMES.has(name)) {
      out.push({ severity: 'error', code: 'PARAM_NAME_RESERVED', message: `param name '${name}' is reserved (every object has it); choose another name`, path: base, at: 'key' });
      continue;
    }
    const p = asRecord(raw);
    if (p === undefined) continue;
    const pattern = asString(p['pattern']);
    let regex: { test: (value: string) => boolean } | undefined;
    if (pattern !== undefined) {
      const compiled = compilePattern(pattern);
      if (compiled.ok) regex = compiled;
      else out.push({ severity: 'error', code: 'PARAM_PATTERN_INVALID', message: `pattern of param '${name}' is not a valid regular expression: ${compiled.message}`, path: [...base, 'pattern'] });
    }
    if ('default' in p) {
      const problem = valueProblem(p, p['default'], regex);
      if (problem !== undefined) {
        out.push({ severity: 'error', code: 'PARAM_DEFAULT_INVALID', message: `default of param '${name}' ${problem}`, path: [...base, 'default'] });
      }
    }
  }
  return out;
}

/** Why `value` is not acceptable for the param, or undefined if it is. Shared with run-time checks. */
export function valueProblem(p: Record<string, unknown>, value: unknown, regex?: { test: (value: string) => boolean }): string | undefined {
  const type = asString(p['type']);
  if (type !== undefined && !hasType(value, type)) return `must be ${article(type)}, not ${describe(value)}`;
  if (type === 'array') {
    const itemType = asString(asRecord(p['items'])?.['type']);
    if (itemType !== undefined && Array.isArray(value)) {
      const bad = value.findIndex((v) => !hasType(v, itemType));
      if (bad !== -1) return `item ${bad} must be ${article(itemType)}, not ${describe(value[bad])}`;
    }
  }
  const allowed = p['enum'];
  if (Array.isArray(allowed) && !allowed.some((a) => JSON.stringify(a) === JSON.stringify(value))) {
    return `must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, not ${JSON.stringify(value)}`;
  }
  if (typeof value === 'string' && regex !== undefined && !regex.test(value)) {
    return `'${value}' does not match the pattern ${String(p['pattern'])}`;
  }
  if (typeof value === 'number') {
    const min = p['minimum'];
    const max = p['maximum'];
    if (typeof min === 'number' && value < min) return `must be at least ${min}, not ${value}`;
    if (typeof max === 'number' && value > max) return `must be at most ${max}, not ${value}`;
  }
  return undefined;
}

function hasType(v: unknown, type: string): boolean {
  switch (type) {
    case 'string': return typeof v === 'string';
    case 'number': return typeof v === 'number' && Number.isFinite(v);
    case 'integer': return typeof v === 'number' && Number.isInteger(v);
    case 'boolean': return typeof v === 'boolean';
    case 'array': return Array.isArray(v);
    case 'object': return v !== null && typeof v === 'object' && !Array.isArray(v);
    default: return true;
  }
}

function article(type: string): string {
  return type === 'integer' || type === 'array' || type === 'object' ? `an ${type === 'array' ? 'array (list)' : type}` : `a ${type}`;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}
