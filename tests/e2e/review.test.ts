import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runBin } from '../harness/cli.js';
import { GithubApiServer } from '../harness/githubApiServer.js';
import { git, repoWith, workflow } from '../harness/gitRepo.js';

const TOKEN = 'ghs_test-token-123';
const golden = (name: string): string => join(import.meta.dirname, '..', 'fixtures', 'review', name);

const BUILD_BASE = workflow('build', '  tasks:\n    - name: compile\n      run: make\n    - name: test\n      needs: [compile]\n      run: make test\n');
const BUILD_HEAD = workflow('build', '  tasks:\n    - name: compile\n      run: make -j4\n    - name: test\n      needs: [compile]\n      run: make test\n      resources: { cpu: 900, memoryMB: 512 }\n    - name: package\n      needs: [test]\n      run: make dist\n');
const CLEANUP = workflow('cleanup', '  tasks:\n    - name: sweep\n      run: ./sweep.sh\n');
// An unused pool is a warning: valid, but annotated.
const THUMBS = workflow('thumbs', '  pools:\n    workers: { agent: shell, count: 4 }\n    spare: { agent: shell, count: 1 }\n  tasks:\n    - name: resize\n      pool: workers\n      run: ./resize.sh\n');

let repo: string;
let scratch: string;
let api: GithubApiServer;
let baseSha: string;

/** Commits the work tree with its rendered jobs, as a pipeline author does; returns the commit. */
async function commitRendered(message: string): Promise<string> {
  const r = await runBin(['render'], { cwd: repo });
  expect(r.code, r.err).toBe(0);
  await git(repo, 'add', '-A');
  await git(repo, 'commit', '-q', '-m', message);
  return (await git(repo, 'rev-parse', 'HEAD')).trim();
}

function githubEnv(event: string, summaryFile: string, outputFile: string): NodeJS.ProcessEnv {
  return {
    PATH: process.env['PATH'],
    HOME: process.env['HOME'],
    GITHUB_ACTIONS: 'true',
    GITHUB_EVENT_NAME: 'pull_request',
    GITHUB_EVENT_PATH: event,
    GITHUB_REPOSITORY: 'acme/pipelines',
    GITHUB_API_URL: api.url,
    GITHUB_SERVER_URL: 'https://github.example',
    GITHUB_RUN_ID: '4242',
    GITHUB_TOKEN: TOKEN,
    GITHUB_STEP_SUMMARY: summaryFile,
    GITHUB_OUTPUT: outputFile,
  };
}

async function review(headSha: string, ...args: string[]): Promise<{ code: number; out: string; err: string; summary: string; output: string }> {
  const event = join(scratch, 'event.json');
  await writeFile(event, JSON.stringify({ action: 'synchronize', pull_request: { number: 7, base: { sha: baseSha }, head: { sha: headSha } } }));
  const summaryFile = join(scratch, `summary-${headSha}.md`);
  const outputFile = join(scratch, `output-${headSha}.txt`);
  await writeFile(summaryFile, '');
  await writeFile(outputFile, '');
  const r = await runBin(['review', '--github', ...args], { cwd: repo, env: githubEnv(event, summaryFile, outputFile) });
  return { ...r, summary: await readFile(summaryFile, 'utf8'), output: await readFile(outputFile, 'utf8') };
}

/** Commit ids change with every run (they hold the time): golden files name them by role. */
function stable(text: string, shas: Record<string, string>): string {
  let out = text;
  for (const [name, sha] of Object.entries(shas)) out = out.replaceAll(sha, `<${name}>`);
  return out;
}

beforeEach(async () => {
  repo = await repoWith({ 'build.yaml': BUILD_BASE, 'cleanup.yaml': CLEANUP });
  scratch = await mkdtemp(join(tmpdir(), 'caravan-review-'));
  baseSha = await commitRendered('rendered jobs');
  api = new GithubApiServer({ owner: 'acme', repo: 'pipelines', issue: 7, token: TOKEN });
  await api.start();
  // More than one page of other people's comments: the marker must be looked for on every page.
  for (let i = 0; i < 150; i++) api.addComment(`LGTM ${i}`);
});

afterEach(async () => {
  await api.stop();
  await rm(repo, { recursive: true, force: true });
  await rm(scratch, { recursive: true, force: true });
});

describe('caravan review --github', () => {
  it('annotates, writes the job summary and posts one plan comment; a second push updates that comment', async () => {
    await writeFile(join(repo, 'workflows', 'build.yaml'), BUILD_HEAD);
    await rm(join(repo, 'workflows', 'cleanup.yaml'));
    await writeFile(join(repo, 'workflows', 'thumbs.yaml'), THUMBS);
    const head1 = await commitRendered('change build, remove cleanup, add thumbs');

    const first = await review(head1);
    expect(first.err).toBe('');
    expect(first.code).toBe(0);
    const shas = { base: baseSha, head: head1 };
    await expect(stable(first.out, shas)).toMatchFileSnapshot(golden('first.stdout.txt'));
    await expect(stable(first.summary, shas)).toMatchFileSnapshot(golden('first.summary.md'));
    expect(first.out.trimEnd().split('\n').at(-1)).toBe('caravan review: 2 files checked: 0 errors, 1 warning; nomad-jobs/ up to date; plan: 3 to create, 2 to update, 1 to destroy; comment created');

    const listPath = '/repos/acme/pipelines/issues/7/comments';
    expect(api.requests.map((r) => `${r.method} ${r.url}`)).toEqual([
      `GET ${listPath}?per_page=100`,
      `GET ${listPath}?per_page=100&page=2`,
      `POST ${listPath}`,
    ]);
    expect(api.requests.every((r) => r.authorization === `token ${TOKEN}`)).toBe(true);
    const posted = api.requests[2]!.body as { body: string };
    expect(Object.keys(posted)).toEqual(['body']);
    expect(posted.body.startsWith('<!-- caravan-plan -->\n')).toBe(true);
    await expect(stable(posted.body, shas)).toMatchFileSnapshot(golden('first.comment.md'));
    expect(first.output).toContain(`comment-url<<`);
    expect(first.output).toContain('https://github.example/acme/pipelines/pull/7#issuecomment-9151');
    // The token is never printed, nor written to the summary or the comment.
    expect([first.out, first.summary, posted.body].some((t) => t.includes(TOKEN))).toBe(false);

    // The next push: the comment found by its marker (on page 2) is updated; none is added.
    await writeFile(join(repo, 'workflows', 'build.yaml'), BUILD_HEAD.replace('make -j4', 'make -j8'));
    const head2 = await commitRendered('compile with 8 jobs');
    api.requests.length = 0;
    const second = await review(head2);
    expect(second.code).toBe(0);
    expect(second.out.trimEnd().split('\n').at(-1)).toBe('caravan review: 2 files checked: 0 errors, 1 warning; nomad-jobs/ up to date; plan: 3 to create, 2 to update, 1 to destroy; comment updated');
    expect(api.requests.map((r) => `${r.method} ${r.url}`)).toEqual([
      `GET ${listPath}?per_page=100`,
      `GET ${listPath}?per_page=100&page=2`,
      'PATCH /repos/acme/pipelines/issues/comments/9151',
    ]);
    const patched = (api.requests[2]!.body as { body: string }).body;
    expect(patched).toContain('make -j8');
    expect(patched).toContain(`pull request #7 at \`${head2}\``);
    expect(api.comments).toHaveLength(151);
    expect(api.comments.filter((c) => c.body.startsWith('<!-- caravan-plan -->'))).toEqual([{ id: 9151, body: patched, user: { login: 'github-actions[bot]', type: 'Bot' } }]);

    // A run with nothing new to say leaves the comment alone.
    api.requests.length = 0;
    const third = await review(head2);
    expect(third.out.trimEnd().split('\n').at(-1)).toContain('comment unchanged');
    expect(api.requests.map((r) => r.method)).toEqual(['GET', 'GET']);
  });

  it('invalid workflows: at most 10 annotations and a notice, the full list in the summary, the comment says why there is no plan, exit 2', async () => {
    // Twelve tasks that each need a task that does not exist: twelve errors in one file.
    const tasks = Array.from({ length: 12 }, (_, i) => `    - name: t${i}\n      needs: [missing${i}]\n      run: echo ${i}\n`).join('');
    await writeFile(join(repo, 'workflows', 'build.yaml'), workflow('build', `  tasks:\n${tasks}`));
    await git(repo, 'commit', '-q', '-am', 'broken');
    const head = (await git(repo, 'rev-parse', 'HEAD')).trim();

    const r = await review(head, '--max-annotations', '10');
    expect(r.code).toBe(2);
    const shas = { base: baseSha, head };
    await expect(stable(r.out, shas)).toMatchFileSnapshot(golden('invalid.stdout.txt'));
    await expect(stable(r.summary, shas)).toMatchFileSnapshot(golden('invalid.summary.md'));
    expect(r.out.split('\n').filter((l) => l.startsWith('::error '))).toHaveLength(10);
    expect(r.out).toContain('::notice title=Caravan%3A more problems::2 more problems not annotated');
    expect(r.summary.split('\n').filter((l) => l.startsWith('| workflows/build.yaml'))).toHaveLength(12);
    const posted = (api.requests.find((x) => x.method === 'POST')!.body as { body: string }).body;
    await expect(stable(posted, shas)).toMatchFileSnapshot(golden('invalid.comment.md'));
    expect(r.out.trimEnd().split('\n').at(-1)).toBe('caravan review: 2 files checked: 12 errors (1 of 2 files invalid); plan not made; comment created');
  });

  it('a wrong token: GitHub answers 401, the check fails with 69 and says so, without the token', async () => {
    const bad = new GithubApiServer({ owner: 'acme', repo: 'pipelines', issue: 7, token: 'another-token' });
    await bad.start();
    const saved = api;
    api = bad;
    try {
      const r = await review(baseSha);
      expect(r.code).toBe(69);
      expect(r.out).toContain('::error title=Caravan plan comment::could not post the plan comment on pull request #7: GitHub answered 401');
      expect(r.out + r.err).not.toContain(TOKEN);
      expect(bad.requests.map((x) => x.method)).toEqual(['GET']);
    } finally {
      await bad.stop();
      api = saved;
    }
  });

  it("the action's own steps, run as the runner runs them from this checkout, review the pull request", async () => {
    const checkout = fileURLToPath(new URL('../../', import.meta.url));
    const actionDir = join(checkout, '.github', 'actions', 'caravan-review');
    const action = parse(await readFile(join(actionDir, 'action.yml'), 'utf8')) as {
      inputs: Record<string, { default: string }>;
      runs: { using: string; steps: Array<{ id: string; run: string; env: Record<string, string> }> };
    };
    expect(action.runs.using).toBe('composite');
    await writeFile(join(repo, 'workflows', 'build.yaml'), BUILD_HEAD);
    const head = await commitRendered('change build');
    const event = join(scratch, 'event.json');
    await writeFile(event, JSON.stringify({ pull_request: { number: 7, base: { sha: baseSha }, head: { sha: head } } }));
    const bash = async (run: string, env: NodeJS.ProcessEnv): Promise<{ code: number; out: string }> => {
      try {
        const r = await promisify(execFile)('bash', ['-e', '-c', run], { cwd: repo, env });
        return { code: 0, out: r.stdout };
      } catch (e) {
        const x = e as { code: number; stdout: string; stderr: string };
        return { code: x.code, out: x.stdout + x.stderr };
      }
    };
    const outputs = join(scratch, 'prepare-output.txt');
    await writeFile(outputs, '');
    const [prepare, step] = action.runs.steps;
    expect((await bash(prepare!.run, { ...githubEnv(event, '', outputs), CARAVAN_CMD: '', ACTION_PATH: actionDir })).code).toBe(0);
    const cmd = /^cmd=(.*)$/m.exec(await readFile(outputs, 'utf8'))?.[1];
    expect(cmd).toBe(`node ${join(checkout, 'bin', 'caravan.js')}`);

    // The inputs as the runner passes them: each step variable from its input's default.
    const inputs = Object.fromEntries(Object.entries(action.inputs).map(([k, v]) => [k, v.default]));
    const fromInput = (expr: string): string => {
      const m = /^\$\{\{ inputs\.([a-z-]+) \}\}$/.exec(expr);
      return m === null ? '' : (inputs[m[1]!] ?? '');
    };
    const stepEnv = Object.fromEntries(Object.entries(step!.env).map(([k, v]) => [k, fromInput(v)]));
    const summaryFile = join(scratch, 'action-summary.md');
    await writeFile(summaryFile, '');
    await writeFile(join(scratch, 'action-output.txt'), '');
    const r = await bash(step!.run, { ...githubEnv(event, summaryFile, join(scratch, 'action-output.txt')), ...stepEnv, GITHUB_TOKEN: TOKEN, CARAVAN: cmd! });
    expect(r.code, r.out).toBe(0);
    expect(r.out.trimEnd().split('\n').at(-1)).toBe('caravan review: 2 files checked: all valid; nomad-jobs/ up to date; plan: 1 to create, 2 to update, 0 to destroy; comment created');
    expect(api.requests.filter((x) => x.method === 'POST')).toHaveLength(1);
    expect(await readFile(summaryFile, 'utf8')).toContain('## Caravan plan: `' + baseSha + '` → pull request #7 at `' + head + '`');
  });
});
