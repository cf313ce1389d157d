/**
 * Generates docs/workflow-reference.md from schemas/workflow.v1.json, so that the reference
 * cannot drift from what `caravan validate` accepts: tests/unit/workflowReference.test.ts
 * fails when the checked-in page differs from what this script writes.
 *
 * Examples come, in order of preference, from the schema's own `examples`, from the first
 * use of the field in workflows/ (real, validated files), then from a short list of samples
 * per shared definition below. Defaults come from the schema's `default`, else from a
 * "(default X)" in the description, which is how the schema has always stated them.
 *
 *   npx tsx scripts/workflowReference.ts          # rewrite docs/workflow-reference.md
 *   npx tsx scripts/workflowReference.ts --check  # exit 1 when it is stale
 */
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

type Schema = {
  description?: string;
  type?: string | string[];
  $ref?: string;
  enum?: unknown[];
  const?: unknown;
  default?: unknown;
  examples?: unknown[];
  pattern?: string;
  properties?: Record<string, Schema>;
  additionalProperties?: boolean | Schema;
  required?: string[];
  items?: Schema;
  oneOf?: Schema[];
  anyOf?: Schema[];
  minimum?: number;
  maximum?: number;
  maxLength?: number;
  $defs?: Record<string, Schema>;
};

/** A field's first value in the example workflows, keyed by path (`spec.tasks[].retry`). */
export type ExampleIndex = Map<string, { value: unknown; file: string }>;

/** Samples for values whose shape a pattern fixes, when no example workflow uses the field. */
const SAMPLES: Record<string, unknown> = {
  dnsLabel: 'nightly-report',
  taskName: 'build',
  identifier: 'quarter',
  labelKey: 'team',
  envName: 'LOG_LEVEL',
  duration: '30s',
  agentType: 'shell',
  image: 'alpine:3.20',
  expression: '${{ params.quarter }}',
  env: { LOG_LEVEL: 'info' },
  resources: { cpu: 500, memoryMB: 256 },
};

/** Samples for fields no example workflow uses yet, by their last two path segments. */
const PATH_SAMPLES: Record<string, unknown> = {
  'retry.factor': 3,
  'retry.on': ['infrastructure', 'timeout'],
  'retry.when': '${{ attempt.exitCode != 2 }}',
  'circuitBreaker.failures': 3,
};

/** Samples for fields no example workflow uses yet, by field name. */
const FIELD_SAMPLES: Record<string, unknown> = {
  $schema: '../schemas/workflow.v1.json',
  branches: ['main'],
  params: { quarter: 'Q4' },
  cores: 2,
  memoryMaxMB: 1024,
  diskMB: 300,
  jitter: true,
  secret: true,
  args: ['--verbose'],
  with: { query: '${{ params.query }}' },
  workingDir: 'reports',
  maxBytes: 65536,
  circuitBreaker: { failures: 5, cooldown: '30s', scope: 'host' },
};

const ROOT = join(fileURLToPath(new URL('.', import.meta.url)), '..');

/** Every value in the example workflows, by path; maps keyed by user names become `*`. */
export function indexExamples(files: { name: string; text: string }[]): ExampleIndex {
  const index: ExampleIndex = new Map();
  const walk = (value: unknown, path: string, file: string, userKeys: boolean): void => {
    // An empty string shows nothing: the next use of the field is a better example.
    if (path !== '' && !index.has(path) && value !== '' && value !== null) index.set(path, { value, file });
    if (Array.isArray(value)) {
      for (const item of value) walk(item, `${path}[]`, file, false);
    } else if (value !== null && typeof value === 'object') {
      for (const [k, v] of Object.entries(value)) {
        // params, pools and env are maps of names the author chose.
        const key = userKeys ? '*' : k;
        const mapOfNames = ['params', 'pools', 'env', 'labels', 'headers', 'with'].includes(k);
        walk(v, path === '' ? key : `${path}.${key}`, file, mapOfNames);
      }
    }
  };
  for (const f of files) walk(parse(f.text) as unknown, '', f.name, false);
  return index;
}

function defName(ref: string): string {
  return ref.replace('#/$defs/', '');
}

function anchor(title: string): string {
  return title.toLowerCase().replace(/[^a-z0-9 -]/g, '').replace(/ /g, '-');
}

function describeType(s: Schema): string {
  if (s.$ref !== undefined) {
    const name = defName(s.$ref);
    return `[${name}](#${anchor(name)})`;
  }
  if (s.const !== undefined) return `\`${JSON.stringify(s.const)}\``;
  if (s.enum !== undefined) return s.enum.map((v) => `\`${String(v)}\``).join(' | ');
  const alternatives = s.oneOf ?? s.anyOf;
  if (alternatives !== undefined) return alternatives.map(describeType).join(' or ');
  const types = Array.isArray(s.type) ? s.type : s.type === undefined ? [] : [s.type];
  if (types.includes('array') && s.items !== undefined) return `list of ${describeType(s.items)}`;
  if (types.includes('object') && s.properties === undefined && typeof s.additionalProperties === 'object') {
    return `map of name to ${describeType(s.additionalProperties)}`;
  }
  const bounds = s.minimum !== undefined || s.maximum !== undefined ? ` (${s.minimum ?? ''}..${s.maximum ?? ''})` : '';
  return types.length === 0 ? 'any' : `${types.join(' or ')}${bounds}`;
}

function defaultOf(s: Schema): string {
  if (s.default !== undefined) return `\`${JSON.stringify(s.default)}\``;
  const m = /\(default:? ([^)]+)\)|[Dd]efault(?:s to|:)? `([^`]+)`|^`?([\w.-]+)`? \(default\)/.exec(s.description ?? '');
  const found = m?.[1] ?? m?.[2] ?? m?.[3];
  // "(default 262144, 256 KiB, ...)": the value is what comes before the first comma.
  return found === undefined ? '' : `\`${(found.split(/[,;]/)[0] ?? found).trim()}\``;
}

function inline(value: unknown): string {
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  const one = text.replace(/\s+/g, ' ').trim();
  return one.length > 70 ? `${one.slice(0, 67)}...` : one;
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n+/g, ' ');
}

interface Section {
  title: string;
  path: string;
  schema: Schema;
}

/**
 * The page: one section per object of the schema (the top level, each inline object, each
 * shared definition), each a table of its fields.
 */
export function renderWorkflowReference(schema: Schema, examples: ExampleIndex): string {
  const defs = schema.$defs ?? {};
  const sections: Section[] = [];
  // Where each shared definition is first used, so its examples can be found by path.
  const defPaths = new Map<string, string>();
  const collect = (s: Schema, path: string, title: string): void => {
    sections.push({ title, path, schema: s });
    for (const [name, prop] of Object.entries(s.properties ?? {})) {
      visitProperty(prop, `${path === '' ? '' : `${path}.`}${name}`, title === 'Workflow' ? name : `${title}.${name}`);
    }
  };
  const visitProperty = (prop: Schema, path: string, title: string): void => {
    const target = prop.items ?? (typeof prop.additionalProperties === 'object' && prop.properties === undefined ? prop.additionalProperties : prop);
    const suffix = prop.items !== undefined ? '[]' : target !== prop ? '.*' : '';
    if (target.$ref !== undefined) {
      const name = defName(target.$ref);
      if (!defPaths.has(name)) {
        defPaths.set(name, path + suffix);
        const def = defs[name];
        if (def?.properties !== undefined) {
          for (const [child, childSchema] of Object.entries(def.properties)) visitProperty(childSchema, `${path}${suffix}.${child}`, `${name}.${child}`);
        }
      }
    } else if (target.properties !== undefined) {
      collect(target, path + suffix, title);
    }
  };
  collect(schema, '', 'Workflow');
  const defSections: Section[] = Object.entries(defs)
    .filter(([, d]) => d.properties !== undefined)
    .map(([name, d]) => ({ title: name, path: defPaths.get(name) ?? '', schema: d }));

  const exampleFor = (prop: Schema, path: string): string => {
    if (prop.examples?.[0] !== undefined) return inline(prop.examples[0]);
    const found = examples.get(path);
    if (found !== undefined) return inline(found.value);
    const lastTwo = path.replace(/\[\]/g, '').split('.').slice(-2).join('.');
    if (PATH_SAMPLES[lastTwo] !== undefined) return inline(PATH_SAMPLES[lastTwo]);
    const ref = prop.$ref ?? prop.items?.$ref;
    if (ref !== undefined && SAMPLES[defName(ref)] !== undefined) return inline(SAMPLES[defName(ref)]);
    const firstOfDef = ref === undefined ? undefined : defs[defName(ref)]?.enum?.[0];
    if (firstOfDef !== undefined) return inline(firstOfDef);
    const name = path.slice(path.lastIndexOf('.') + 1);
    if (FIELD_SAMPLES[name] !== undefined) return inline(FIELD_SAMPLES[name]);
    if (prop.const !== undefined) return inline(prop.const);
    if (prop.enum?.[0] !== undefined) return inline(prop.enum[0]);
    if (prop.default !== undefined) return inline(prop.default);
    return '';
  };

  const table = (section: Section): string[] => {
    const rows = ['| Field | Type | Default | Example | Description |', '|---|---|---|---|---|'];
    const required = new Set(section.schema.required ?? []);
    for (const [name, prop] of Object.entries(section.schema.properties ?? {})) {
      const path = section.path === '' ? name : `${section.path}.${name}`;
      const example = exampleFor(prop, path);
      rows.push(`| \`${name}\`${required.has(name) ? ' (required)' : ''} | ${cell(describeType(prop))} | ${cell(defaultOf(prop))} | ${example === '' ? '' : `\`${cell(example)}\``} | ${cell(prop.description ?? '')} |`);
    }
    return rows;
  };

  const out: string[] = [
    '# Workflow reference',
    '',
    '<!-- Generated from schemas/workflow.v1.json by scripts/workflowReference.ts; do not edit by hand. -->',
    '',
    'Every field of the `caravan/v1` workflow format, generated from',
    '[schemas/workflow.v1.json](../schemas/workflow.v1.json). Examples are taken from the',
    'workflows in [workflows/](../workflows) (or the Argo ports in tests/fixtures/argo) where one uses the field. What the fields do',
    'together is explained in [workflow-spec.md](workflow-spec.md) and',
    '[expressions.md](expressions.md). Regenerate with `npx tsx scripts/workflowReference.ts`.',
    '',
  ];
  for (const section of sections) {
    out.push(`## ${section.title}`, '');
    if (section.schema.description !== undefined) out.push(section.schema.description, '');
    out.push(...table(section), '');
  }
  out.push('## Shared definitions', '');
  for (const section of defSections) {
    out.push(`### ${section.title}`, '');
    if (section.schema.description !== undefined) out.push(section.schema.description, '');
    out.push(...table(section), '');
  }
  const scalars = Object.entries(defs).filter(([, d]) => d.properties === undefined);
  out.push('### Values', '', '| Name | Type | Example | Description |', '|---|---|---|---|');
  for (const [name, d] of scalars) {
    const shape = d.pattern !== undefined ? `string matching \`${d.pattern}\`` : describeType(d);
    const sample = SAMPLES[name] ?? d.enum?.[0];
    out.push(`| <a id="${anchor(name)}"></a>\`${name}\` | ${cell(shape)} | ${sample === undefined ? '' : `\`${cell(inline(sample))}\``} | ${cell(d.description ?? '')} |`);
  }
  out.push('');
  return out.join('\n');
}

/** The page as it should be, from the files in this checkout. */
export function currentWorkflowReference(root = ROOT): string {
  const schema = JSON.parse(readFileSync(join(root, 'schemas/workflow.v1.json'), 'utf8')) as Schema;
  // The examples first, then the Argo ports, which use what the examples do not.
  const files = ['workflows', 'tests/fixtures/argo'].flatMap((dir) =>
    readdirSync(join(root, dir))
      .filter((f) => f.endsWith('.yaml'))
      .sort()
      .map((f) => ({ name: `${dir}/${f}`, text: readFileSync(join(root, dir, f), 'utf8') })),
  );
  return renderWorkflowReference(schema, indexExamples(files));
}

export const REFERENCE_PATH = 'docs/workflow-reference.md';

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const page = currentWorkflowReference();
  const target = join(ROOT, REFERENCE_PATH);
  if (process.argv.includes('--check')) {
    const stale = readFileSync(target, 'utf8') !== page;
    if (stale) process.stderr.write(`${REFERENCE_PATH} is stale: run npx tsx scripts/workflowReference.ts\n`);
    process.exit(stale ? 1 : 0);
  }
  writeFileSync(target, page);
}
