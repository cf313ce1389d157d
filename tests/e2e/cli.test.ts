import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, runBin } from '../harness/cli.js';
import { tempRepo } from '../harness/gitRepo.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

const good = 'apiVersion: caravan/v1\nkind: Workflow\nmetadata:\n  name: ok\nspec:\n  tasks:\n    - name: a\n      run: echo a\n';
const bad = 'apiVersion: caravan/v1\nkind: Workflow\nmetadata:\n  name: bad\nspec:\n  tasks:\n    - name: a\n      needs: [b]\n      run: "echo a, b: c"\n';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'caravan-cli-'));
  await mkdir(join(dir, 'workflows', 'nested'), { recursive: true });
  await writeFile(join(dir, 'workflows', 'ok.yaml'), good);
  await writeFile(join(dir, 'workflows', 'nested', 'bad.yml'), bad);
  await writeFile(join(dir, 'workflows', 'notes.txt'), 'not a workflow');
  await writeFile(join(dir, 'solo.yaml'), good.replace('name: ok', 'name: solo'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('caravan validate', () => {
  it('searches workflows/ by default, recursively, and exits 2 on errors', async () => {
    const r = await cli(dir, 'validate');
    expect(r.code).toBe(2);
    expect(r.out).toBe(
      "workflows/nested/bad.yml:8:15: error NEEDS_UNKNOWN: task 'a' needs unknown task 'b'\n" +
        '2 files checked: 1 error (1 of 2 files invalid)\n',
    );
  });

  it('reports a workflow name used twice across the files given', async () => {
    await writeFile(join(dir, 'twin.yaml'), good);
    const r = await cli(dir, 'validate', 'twin.yaml', 'workflows/ok.yaml');
    expect(r.out).toBe(
      "workflows/ok.yaml:4:9: error WORKFLOW_DUPLICATE_NAME: workflow name 'ok' is already used by twin.yaml; names must be unique in the repository\n" +
        '2 files checked: 1 error (1 of 2 files invalid)\n',
    );
  });

  it('exits 0 and says so when everything is valid', async () => {
    expect(await cli(dir, 'validate', 'solo.yaml', 'workflows/ok.yaml')).toEqual({ code: 0, out: '2 files checked: all valid\n', err: '' });
  });

  it('prints one JSON object with --format json', async () => {
    const r = await cli(dir, 'validate', '--format', 'json');
    expect(r.code).toBe(2);
    expect(JSON.parse(r.out)).toEqual({
      files: 2,
      errors: [{ file: 'workflows/nested/bad.yml', line: 8, col: 15, code: 'NEEDS_UNKNOWN', message: "task 'a' needs unknown task 'b'", path: '/spec/tasks/0/needs/0' }],
      warnings: [],
    });
  });

  it('prints GitHub workflow commands with --format github, escaping what must be escaped', async () => {
    await writeFile(join(dir, 'odd,name.yaml'), bad.replace('name: bad', 'name: odd'));
    const r = await cli(dir, 'validate', '-f', 'github', 'odd,name.yaml');
    expect(r.out).toBe("::error file=odd%2Cname.yaml,line=8,col=15,title=NEEDS_UNKNOWN::task 'a' needs unknown task 'b'\n1 file checked: 1 error (1 of 1 file invalid)\n");
  });

  it('exits 66 for a missing path and 64 for bad usage, without a stack trace', async () => {
    const missing = await cli(dir, 'validate', 'nope.yaml');
    expect(missing).toEqual({ code: 66, out: '', err: 'caravan: no such file or directory: nope.yaml\n' });
    const usage = await cli(dir, 'validate', '--format', 'xml');
    expect(usage.code).toBe(64);
    expect(usage.err).toContain("argument 'xml' is invalid. Allowed choices are text, json, github.");
    expect((await cli(dir, 'frobnicate')).code).toBe(64);
  });

  it('the built bin behaves the same and never prints a stack trace for user errors', async () => {
    const r = await runBin(['validate', 'workflows'], { cwd: dir });
    expect(r.code).toBe(2);
    expect(r.out).toContain('NEEDS_UNKNOWN');
    const missing = await runBin(['validate', 'nope'], { cwd: dir });
    expect(missing.code).toBe(66);
    expect(missing.err).toBe('caravan: no such file or directory: nope\n');
    const fixtures = await runBin(['validate', '.'], { cwd: join(root, 'tests', 'fixtures', 'invalid') });
    expect(fixtures.code).toBe(2);
    expect(fixtures.err).toBe('');
    expect(fixtures.out).not.toMatch(/\bat .*\.js:\d+/);
  });
});

describe('caravan validate from a subdirectory of a repository', () => {
  it("checks the repository's workflows/, named as in the repository", async () => {
    const repo = await tempRepo({ 'ok.yaml': good, 'bad.yml': bad });
    const deep = join(repo, 'docs', 'deep');
    await mkdir(deep, { recursive: true });
    const r = await cli(deep, 'validate');
    expect(r).toEqual({ code: 2, err: '', out: "workflows/bad.yml:8:15: error NEEDS_UNKNOWN: task 'a' needs unknown task 'b'\n2 files checked: 1 error (1 of 2 files invalid)\n" });
    // A workflows/ right here still comes first.
    await mkdir(join(deep, 'workflows'));
    await writeFile(join(deep, 'workflows', 'ok.yaml'), good);
    expect(await cli(deep, 'validate')).toEqual({ code: 0, err: '', out: '1 file checked: all valid\n' });
  });
});

describe('caravan run --help', () => {
  it('names both places tasks run and both buses, with the flags that pick them', async () => {
    const r = await cli(dir, 'run', '--help');
    expect(r.code).toBe(0);
    expect(r.out).not.toContain('(local executor, in-memory bus)');
    expect(r.out.replace(/\s+/g, ' ')).toContain('run a workflow and record it in Git: tasks run on this machine (default) or on Nomad (--backend nomad), events travel in memory (default) or on NATS JetStream (--bus nats)');
  });
});

describe('caravan demo', () => {
  it('runs a bundled workflow end to end in a scratch repository and shows the audit log', async () => {
    const r = await runBin(['demo'], { cwd: dir });
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^Caravan demo: running 'quarterly-report' on the embedded default/);
    expect(r.out).toMatch(/ analyse fans out to 3 items\n/);
    expect(r.out).toMatch(/ run succeeded in \d+ms\n/);
    expect(r.out).toMatch(/\$ git log caravan\/runs\n[0-9a-f]{7,} quarterly-report \S+: succeeded in \S+ \(3\/3 tasks\)\n\nWorkflow: quarterly-report\nWorkflow-Commit: [0-9a-f]{40}\nRun: \S+\nStatus: succeeded\n/);
    expect(r.out).toMatch(/\$ git notes --ref=caravan show HEAD\n\S+ run \S+ of quarterly-report: succeeded in/);
    // The scratch repository is removed; the user's directory is untouched.
    expect(r.out).toMatch(/in a scratch repository: (\S+)\n/);
    await expect(readFile(/in a scratch repository: (\S+)\n/.exec(r.out)![1]! + '/workflows/quarterly-report.yaml')).rejects.toThrow();
  });
  it('--gitops: a controller watching a scratch repository runs the workflow whose push trigger a commit matches, with no other command', async () => {
    const r = await runBin(['demo', '--gitops'], { cwd: dir });
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^Caravan GitOps demo: a controller watches branch main/);
    expect(r.out).toMatch(/ run \S+ of publish-site started\n(.*\n)*.* build succeeded in \d+ms\n(.*\n)*.* check succeeded in \d+ms\n/);
    // The log shows the run's record and the syncs: the first commit (no run) and the push (one run).
    expect(r.out).toMatch(/\$ git log caravan\/runs\n[0-9a-f]{7,} publish-site \S+: succeeded in \S+ \(2\/2 tasks\)\n[0-9a-f]{7,} sync [0-9a-f]{12}: synced; .*, 1 run\n/);
    expect(r.out).toMatch(/sync [0-9a-f]{12}: synced; .*, 0 runs\n/);
  });
});

describe('caravan controller on a branch the repository does not have', () => {
  it('exits 64 at once naming the branches it has and --branch, with no stack trace', async () => {
    const dir = await tempRepo({ 'one.yaml': 'apiVersion: caravan/v1\nkind: Workflow\nmetadata:\n  name: one\nspec:\n  tasks:\n    - { name: a, run: "true" }\n' });
    const r = await runBin(['controller', '--repo', dir, '--branch', 'trunk'], { cwd: dir, timeoutMs: 30_000 });
    expect(r.code).toBe(64);
    expect(r.err).toBe(`caravan: branch trunk not found in ${dir} (its branches: main); give the branch to watch with --branch\n`);
    await rm(dir, { recursive: true, force: true });
  });
});
