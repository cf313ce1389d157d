import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { compileWorkflow } from '../../engine/compile/compileWorkflow.js';
import { controllerJob } from '../../engine/compile/controllerJob.js';
import type { CompiledJob } from '../../engine/compile/NomadJob.js';
import { validateWorkflows } from '../../engine/spec/validateWorkflows.js';

type Schema = { $ref?: string; type?: string; properties?: Record<string, Schema>; items?: Schema; additionalProperties?: Schema | boolean; format?: string };

const { schemas } = JSON.parse(readFileSync(fileURLToPath(new URL('../fixtures/nomad-openapi/job-schemas.json', import.meta.url)), 'utf8')) as { schemas: Record<string, Schema> };

function resolve(s: Schema): Schema {
  let cur = s;
  while (cur.$ref !== undefined) cur = schemas[cur.$ref.replace('#/components/schemas/', '')]!;
  return cur;
}

function refName(s: Schema): string {
  return s.$ref?.replace('#/components/schemas/', '') ?? '';
}

/** Every path in `value` that the schema does not declare, or declares with another type. */
function problems(value: unknown, schema: Schema, path: string, owner: string, out: string[]): void {
  const s = resolve(schema);
  const type = s.type ?? (s.properties ? 'object' : undefined);
  switch (type) {
    case 'integer':
      if (!Number.isInteger(value)) out.push(`${path}: expected integer, got ${JSON.stringify(value)}`);
      return;
    case 'number':
      if (typeof value !== 'number') out.push(`${path}: expected number`);
      return;
    case 'string':
      if (typeof value !== 'string') out.push(`${path}: expected string, got ${JSON.stringify(value)}`);
      return;
    case 'boolean':
      if (typeof value !== 'boolean') out.push(`${path}: expected boolean`);
      return;
    case 'array':
      if (!Array.isArray(value)) out.push(`${path}: expected array`);
      else value.forEach((v, i) => problems(v, s.items ?? {}, `${path}[${i}]`, refName(s.items ?? {}) || owner, out));
      return;
    case 'object': {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        out.push(`${path}: expected object`);
        return;
      }
      for (const [k, v] of Object.entries(value)) {
        const prop = s.properties?.[k];
        if (prop !== undefined) problems(v, prop, `${path}.${k}`, refName(prop) || owner, out);
        else if (typeof s.additionalProperties === 'object') problems(v, s.additionalProperties, `${path}.${k}`, owner, out);
        else if (s.additionalProperties !== true) out.push(`${path}.${k}: not a field of ${owner}`);
      }
      return;
    }
    default:
      return;
  }
}

async function exampleJobs(): Promise<CompiledJob[]> {
  const report = await validateWorkflows(['workflows'], fileURLToPath(new URL('../../', import.meta.url)));
  return report.files.flatMap((f) => compileWorkflow(f.workflow!, { gitCommit: '0123456789abcdef0123456789abcdef01234567' }));
}

describe("compiled jobs against Nomad's OpenAPI Job schema", () => {
  it('use only field names Nomad knows, with its types (durations as integer nanoseconds)', async () => {
    const jobs = await exampleJobs();
    expect(jobs.length).toBeGreaterThan(10);
    for (const j of jobs) {
      const out: string[] = [];
      problems(j.job, { $ref: '#/components/schemas/Job' }, 'Job', 'Job', out);
      expect(out, j.id).toEqual([]);
    }
  });

  it("the controller's own job too", () => {
    const out: string[] = [];
    problems(controllerJob({ repo: '/srv/x', env: { NATS_URL: 'nats://127.0.0.1:4222' }, args: ['--prune'] }), { $ref: '#/components/schemas/Job' }, 'Job', 'Job', out);
    expect(out).toEqual([]);
  });

  it('the check itself catches a misspelt field and a string duration', () => {
    const out: string[] = [];
    problems({ ID: 'x', TaskGroups: [{ Name: 'g', RestartPolicy: { Attempts: 0, Delay: '15s' }, Taskss: [] }] }, { $ref: '#/components/schemas/Job' }, 'Job', 'Job', out);
    expect(out).toEqual(['Job.TaskGroups[0].RestartPolicy.Delay: expected integer, got "15s"', 'Job.TaskGroups[0].Taskss: not a field of TaskGroup']);
  });
});
