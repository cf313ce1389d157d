/**
 * Copies the Job schema of Nomad's OpenAPI spec (../shared/reference/nomad-openapi-v1.yaml,
 * MPL-2.0) and every schema it references into tests/fixtures/nomad-openapi/, so the
 * compiler's field check does not depend on ../shared. Run: npx tsx scripts/extractNomadJobSchema.ts
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as YAML from 'yaml';

const ref = join(import.meta.dirname, '..', '..', 'shared', 'reference');
const out = join(import.meta.dirname, '..', 'tests', 'fixtures', 'nomad-openapi');
const spec = YAML.parse(readFileSync(join(ref, 'nomad-openapi-v1.yaml'), 'utf8')) as {
  info: { version: string };
  components: { schemas: Record<string, unknown> };
};
const all = spec.components.schemas;
const picked: Record<string, unknown> = {};
const queue = ['Job'];
while (queue.length > 0) {
  const name = queue.pop() as string;
  if (name in picked) continue;
  picked[name] = all[name];
  JSON.stringify(all[name], (k, v: unknown) => {
    if (k === '$ref' && typeof v === 'string') queue.push(v.replace('#/components/schemas/', ''));
    return v;
  });
}
mkdirSync(out, { recursive: true });
const sorted = Object.fromEntries(Object.keys(picked).sort().map((k) => [k, picked[k]]));
writeFileSync(
  join(out, 'job-schemas.json'),
  JSON.stringify({ source: `nomad-openapi-v1.yaml (Nomad OpenAPI ${spec.info.version}), components.schemas reachable from Job`, schemas: sorted }, null, 2) + '\n',
);
copyFileSync(join(ref, 'nomad-openapi-LICENSE'), join(out, 'LICENSE'));
console.log(`${Object.keys(picked).length} schemas written to ${out}`);
