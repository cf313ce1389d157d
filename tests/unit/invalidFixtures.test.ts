import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { textLine } from '../../engine/spec/formatDiagnostics.js';
import { MAX_FILE_BYTES, validateWorkflows } from '../../engine/spec/validateWorkflows.js';

const dir = fileURLToPath(new URL('../fixtures/invalid/', import.meta.url));

async function lines(...paths: string[]): Promise<string[]> {
  const report = await validateWorkflows(paths, dir);
  return report.diagnostics.map((d) => textLine(d).trimEnd());
}

/** Each fixture and the exact diagnostics it must produce, in order. */
const expected: Record<string, string[]> = {
  'alias-bomb.yaml': [
    'alias-bomb.yaml:2:8: error YAML_ALIAS_LIMIT: aliases expand too far (more than 100 weighted alias uses); this looks like a "billion laughs" document',
  ],
  'api-version.yaml': [
    'api-version.yaml:1:13: error API_VERSION_UNSUPPORTED: apiVersion \'caravan/v2\' is not supported; this Caravan reads \'caravan/v1\'',
  ],
  'comments-only.yaml': [
    'comments-only.yaml:1:1: error FILE_EMPTY: file is empty; expected a Workflow mapping with apiVersion, kind, metadata and spec',
  ],
  'cron-invalid.yaml': [
    'cron-invalid.yaml:7:25: error CRON_INVALID: cron \'61 * * * *\' is not valid: invalid value for minute: 61',
    'cron-invalid.yaml:7:49: error TIMEZONE_INVALID: \'Mars/Olympus\' is not an IANA time zone (such as UTC or Europe/Berlin)',
  ],
  'cycle.yaml': [
    'cycle.yaml:8:15: error DAG_CYCLE: dependency cycle: a -> b -> c -> a',
  ],
  'deep-nesting.yaml': [
    'deep-nesting.yaml:1:67: error YAML_TOO_DEEP: collections are nested more than 64 levels deep',
  ],
  'duration.yaml': [
    'duration.yaml:9:16: error SCHEMA_FORMAT: timeout of task \'a\' (\'10 minutes\') is not a duration; write it like 500ms, 90s, 10m, 24h, 7d or 1h30m (at most 5 digits a number: up to 99999d)',
  ],
  'empty.yaml': [
    'empty.yaml:1:1: error FILE_EMPTY: file is empty; expected a Workflow mapping with apiVersion, kind, metadata and spec',
  ],
  'encoding-latin1.yaml': [
    'encoding-latin1.yaml:5:19: error FILE_ENCODING: invalid UTF-8 byte 0xE9; save the file as UTF-8 (it may be Latin-1 or Windows-1252)',
  ],
  'encoding-utf16.yaml': [
    'encoding-utf16.yaml:1:1: error FILE_ENCODING: file is encoded as UTF-16 LE; save it as UTF-8',
  ],
  'expr-not-upstream.yaml': [
    'expr-not-upstream.yaml:11:21: error EXPR_NOT_UPSTREAM: in \'tasks.a.outputs.x\': tasks.a is not available here: task \'b\' does not need \'a\', directly or indirectly; add it to needs',
  ],
  'expr-syntax.yaml': [
    'expr-syntax.yaml:8:23: error EXPR_SYNTAX: in \'1 + 2\': unexpected symbol: \'+\'',
  ],
  'expr-unknown-output.yaml': [
    'expr-unknown-output.yaml:12:21: error EXPR_UNKNOWN_OUTPUT: in \'tasks.a.outputs.shard\': task \'a\' declares no output \'shard\' (it declares shards)',
  ],
  'expr-unknown-param.yaml': [
    'expr-unknown-param.yaml:10:21: error EXPR_UNKNOWN_PARAM: in \'params.quater\': unknown param \'quater\'; did you mean \'quarter\'?',
  ],
  'expr-unknown-task.yaml': [
    'expr-unknown-task.yaml:11:21: error EXPR_UNKNOWN_TASK: in \'tasks.nope.status\': unknown task \'nope\'',
  ],
  'foreach-not-list.yaml': [
    'foreach-not-list.yaml:10:16: error FOREACH_NOT_LIST: forEach expression \'params.region\' yields a string, not a list',
  ],
  'multi-document.yaml': [
    'multi-document.yaml:9:1: error YAML_MULTI_DOCUMENT: file holds 2 YAML documents; put each workflow in a file of its own',
  ],
  'name-dotdot.yaml': [
    'name-dotdot.yaml:7:5: error NAME_INVALID: name \'../etc\' in spec.pools is not allowed: \'..\' is not allowed (names become Nomad job IDs, NATS subjects and file paths); use letters, digits, \'-\' and \'_\'',
    'name-dotdot.yaml:10:13: error NAME_INVALID: pool of task \'a\' (\'../etc\') is not allowed: \'..\' is not allowed (names become Nomad job IDs, NATS subjects and file paths); use letters, digits, \'-\' and \'_\'',
  ],
  'name-shell-metachar.yaml': [
    'name-shell-metachar.yaml:4:9: error NAME_INVALID: metadata.name \'report;rm -rf ~\' is not allowed: shell metacharacter \';\' is not allowed (names become Nomad job IDs, NATS subjects and file paths); use lower-case letters, digits and \'-\'',
  ],
  'name-slash.yaml': [
    'name-slash.yaml:7:13: error NAME_INVALID: name of task \'build/linux\' is not allowed: \'/\' is not allowed (names become Nomad job IDs, NATS subjects and file paths); use letters, digits, \'-\' and \'_\'',
  ],
  'needs-unknown.yaml': [
    'needs-unknown.yaml:10:15: error NEEDS_UNKNOWN: task \'test\' needs unknown task \'biuld\'; did you mean \'build\'?',
  ],
  'pool-unknown.yaml': [
    'pool-unknown.yaml:7:5: warning POOL_UNUSED: pool \'workers\' is not used by any task; it would still run 4 agents',
    'pool-unknown.yaml:10:13: error POOL_UNKNOWN: task \'a\' uses unknown pool \'wrokers\'; did you mean \'workers\'?',
  ],
  'scalar-top-level.yaml': [
    'scalar-top-level.yaml:1:1: error YAML_NOT_MAPPING: top level is a string; expected a mapping with apiVersion, kind, metadata and spec',
  ],
  'schema-enum.yaml': [
    'schema-enum.yaml:6:36: error SCHEMA_ENUM: spec.concurrency.policy must be one of queue, cancel-running, skip, not "queued"; did you mean \'queue\'?',
  ],
  'schema-required.yaml': [
    'schema-required.yaml:7:7: error SCHEMA_REQUIRED: missing required field \'name\' in task #1',
  ],
  'schema-type.yaml': [
    'schema-type.yaml:9:14: error SCHEMA_TYPE: needs of task \'a\' must be a list, not a string',
  ],
  'schema-unknown-field.yaml': [
    'schema-unknown-field.yaml:9:7: error SCHEMA_UNKNOWN_FIELD: unknown field \'tiemout\' in task \'a\'; did you mean \'timeout\'?',
  ],
  'task-duplicate.yaml': [
    'task-duplicate.yaml:9:13: error TASK_DUPLICATE: task name \'build\' is already used by task #1; task names must be unique in a workflow',
  ],
  'top-level-list.yaml': [
    'top-level-list.yaml:1:1: error YAML_NOT_MAPPING: top level is a list; expected a mapping with apiVersion, kind, metadata and spec',
  ],
  'yaml-duplicate-key.yaml': [
    'yaml-duplicate-key.yaml:9:7: error YAML_DUPLICATE_KEY: duplicate key in a mapping; each key may appear only once',
  ],
  'yaml-syntax.yaml': [
    'yaml-syntax.yaml:9:1: error YAML_SYNTAX: missing closing "quote',
  ],
  'yaml-tab-indent.yaml': [
    'yaml-tab-indent.yaml:7:1: error YAML_TAB_INDENT: tab character used for indentation; YAML allows only spaces',
    'yaml-tab-indent.yaml:8:1: error YAML_TAB_INDENT: tab character used for indentation; YAML allows only spaces',
  ],
};

describe('invalid fixtures give their exact diagnostics', () => {
  for (const [file, want] of Object.entries(expected)) {
    it(file, async () => {
      expect(await lines(file)).toEqual(want);
    });
  }

  it('covers every fixture in the directory', async () => {
    const report = await validateWorkflows(['.'], dir);
    const files = report.files.map((f) => f.file).filter((f) => !f.startsWith('duplicate-name/'));
    expect(files.sort()).toEqual(Object.keys(expected).sort());
  });

  it('duplicate-name: a workflow name used by two files', async () => {
    expect(await lines('duplicate-name')).toEqual([
      "duplicate-name/two.yaml:4:9: error WORKFLOW_DUPLICATE_NAME: workflow name 'demo' is already used by duplicate-name/one.yaml; names must be unique in the repository",
    ]);
  });
});

describe('a file over 4 MiB', () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'caravan-large-'));
    // Not valid YAML at all: proves the file is refused before it is parsed.
    await writeFile(join(tmp, 'huge.yaml'), Buffer.alloc(MAX_FILE_BYTES + 1, '['));
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('is rejected with its size and without parsing', async () => {
    const report = await validateWorkflows(['huge.yaml'], tmp);
    expect(report.diagnostics.map((d) => textLine(d).trimEnd())).toEqual([
      'huge.yaml:1:1: error FILE_TOO_LARGE: file is 4194305 bytes; workflow files are limited to 4 MiB (4194304 bytes), so it was not parsed',
    ]);
  });
});
