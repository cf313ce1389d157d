import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { workflowSchema } from '../../engine/spec/validateSchema.js';
import { validateWorkflows } from '../../engine/spec/validateWorkflows.js';

type Json = Record<string, unknown>;

/** Every subschema with its JSON pointer. */
function walk(node: unknown, pointer: string, visit: (s: Json, p: string) => void): void {
  if (node === null || typeof node !== 'object' || Array.isArray(node)) return;
  const s = node as Json;
  visit(s, pointer);
  for (const key of ['properties', '$defs']) {
    const map = s[key] as Record<string, unknown> | undefined;
    if (map) for (const [k, v] of Object.entries(map)) walk(v, `${pointer}/${key}/${k}`, visit);
  }
  for (const key of ['items', 'additionalProperties', 'propertyNames']) {
    if (typeof s[key] === 'object') walk(s[key], `${pointer}/${key}`, visit);
  }
}

const schema = workflowSchema();
const root = fileURLToPath(new URL('../../', import.meta.url));

describe('schemas/workflow.v1.json', () => {
  it('is JSON Schema 2020-12', () => {
    expect(schema['$schema']).toBe('https://json-schema.org/draft/2020-12/schema');
  });

  it('describes every property, so editors can show help for it', () => {
    const missing: string[] = [];
    walk(schema, '#', (s, p) => {
      const props = s['properties'] as Record<string, Json> | undefined;
      for (const [name, sub] of Object.entries(props ?? {})) {
        const ref = sub['$ref'] as string | undefined;
        const target = ref ? (schema['$defs'] as Record<string, Json>)[ref.replace('#/$defs/', '')] : undefined;
        if (typeof sub['description'] !== 'string' && typeof target?.['description'] !== 'string') missing.push(`${p}/properties/${name}`);
      }
    });
    expect(missing).toEqual([]);
  });

  it('closes every object with additionalProperties, so a typo is an error', () => {
    const open: string[] = [];
    walk(schema, '#', (s, p) => {
      const isObject = s['type'] === 'object' || (Array.isArray(s['type']) && s['type'].includes('object'));
      // Free-form values (with:, params of child runs, request bodies) are open by design.
      const freeForm = s['properties'] === undefined && s['additionalProperties'] === undefined && s['propertyNames'] === undefined;
      if (isObject && s['additionalProperties'] === undefined && !freeForm) open.push(p);
    });
    expect(open).toEqual([]);
  });

  it('is referenced by a yaml-language-server line in every example', () => {
    const dir = `${root}workflows`;
    for (const f of readdirSync(dir)) {
      expect(readFileSync(`${dir}/${f}`, 'utf8').split('\n')[0], f).toBe('# yaml-language-server: $schema=../schemas/workflow.v1.json');
    }
  });
});

describe('bundled example workflows', () => {
  it('all validate clean, with no warnings', async () => {
    const report = await validateWorkflows(['workflows'], root);
    expect(report.diagnostics).toEqual([]);
    expect(report.files.length).toBeGreaterThanOrEqual(5);
  });

  it('cover the patterns the docs promise', async () => {
    const report = await validateWorkflows(['workflows'], root);
    const all = report.files.map((f) => f.workflow!);
    const tasks = all.flatMap((w) => w.spec.tasks);
    expect(tasks.some((t) => t.approval !== undefined)).toBe(true);
    expect(tasks.some((t) => t.compensate !== undefined)).toBe(true);
    expect(tasks.some((t) => typeof t.forEach === 'string' && t.forEach.includes('tasks.'))).toBe(true);
    expect(tasks.some((t) => t.workflow !== undefined)).toBe(true);
    expect(all.some((w) => Object.values(w.spec.pools ?? {}).some((p) => p.count === 62))).toBe(true);
  });
});
