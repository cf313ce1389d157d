import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CaravanError } from '../../engine/errors/CaravanError.js';
import { GITHUB_COMMENT_LIMIT, PLAN_MARKER, planCommentBody } from '../../engine/review/planCommentBody.js';
import { readGithubContext } from '../../engine/review/readGithubContext.js';

function section(name: string, lines: number): string {
  return [`### ~ ${name} (changed, \`workflows/${name}.yaml\`)`, '', ...Array.from({ length: lines }, (_, i) => `- ~ \`caravan-${name}-t${i}\` (task t${i}): update`), '', '<details><summary>DAG</summary>', '', '```mermaid', 'flowchart LR', '  t0["a"]', '```', '', '</details>', ''].join('\n');
}

describe('planCommentBody', () => {
  const plan = ['## Caravan plan: `abc` → pull request #7', '', 'Workflows: 0 added, 3 changed.', '', section('one', 5), section('two', 5), section('three', 5)].join('\n');

  it('a plan that fits: the marker, then the plan as it is', () => {
    expect(planCommentBody(plan, 'https://github.example/o/r/actions/runs/1')).toBe(`${PLAN_MARKER}\n${plan}`);
  });

  it('a plan over the limit keeps whole sections that fit, no fence or <details> left open, and links to the job summary', () => {
    const big = ['## Caravan plan: `abc` → pull request #7', '', section('one', 1000), section('two', 1000), section('three', 1000)].join('\n');
    expect(big.length).toBeGreaterThan(GITHUB_COMMENT_LIMIT);
    const body = planCommentBody(big, 'https://github.example/o/r/actions/runs/1');
    expect(body.length).toBeLessThanOrEqual(GITHUB_COMMENT_LIMIT);
    expect(body.startsWith(`${PLAN_MARKER}\n## Caravan plan`)).toBe(true);
    expect(body).toContain('### ~ one');
    expect(body).not.toContain('### ~ three');
    expect(body.match(/```/g)!.length % 2).toBe(0);
    expect(body.match(/<details>/g)!.length).toBe(body.match(/<\/details>/g)!.length);
    expect(body).toMatch(/more workflows? not shown here\. The whole plan is in the \[job summary\]\(https:\/\/github\.example\/o\/r\/actions\/runs\/1\)\.\n$/);
  });

  it('a single section over the limit: the header and the link only', () => {
    const body = planCommentBody(`## Caravan plan\n\n${section('huge', 5000)}`, '', 5000);
    expect(body.length).toBeLessThanOrEqual(5000);
    expect(body).not.toContain('### ~ huge');
    expect(body).toContain('1 more workflow not shown here. The whole plan is in the job summary of this check.');
  });
});

describe('readGithubContext', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'caravan-ghctx-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const sha = 'a'.repeat(40);
  async function event(payload: unknown): Promise<string> {
    const p = join(dir, 'event.json');
    await writeFile(p, typeof payload === 'string' ? payload : JSON.stringify(payload));
    return p;
  }
  const env = (over: NodeJS.ProcessEnv): NodeJS.ProcessEnv => ({ GITHUB_REPOSITORY: 'acme/pipelines', GITHUB_EVENT_NAME: 'pull_request', GITHUB_RUN_ID: '99', GITHUB_TOKEN: 't', ...over });
  async function refusal(e: NodeJS.ProcessEnv): Promise<string> {
    const err = await readGithubContext(e).then(() => undefined, (x: unknown) => x);
    expect(err).toBeInstanceOf(CaravanError);
    expect((err as CaravanError).code).toBe('USAGE');
    return (err as CaravanError).message;
  }

  it('reads the pull request, the API and the run link', async () => {
    const ctx = await readGithubContext(env({ GITHUB_EVENT_PATH: await event({ pull_request: { number: 12, base: { sha }, head: { sha: 'b'.repeat(40) } } }), GITHUB_API_URL: 'https://ghe.example/api/v3/' }));
    expect(ctx).toEqual({ apiUrl: 'https://ghe.example/api/v3', owner: 'acme', repo: 'pipelines', token: 't', runUrl: 'https://github.com/acme/pipelines/actions/runs/99', pullRequest: { number: 12, baseSha: sha, headSha: 'b'.repeat(40) } });
  });

  it('a push event has no pull request, and needs no payload', async () => {
    expect((await readGithubContext(env({ GITHUB_EVENT_NAME: 'push' }))).pullRequest).toBeUndefined();
  });

  it('refuses hostile or broken values, naming the field', async () => {
    expect(await refusal(env({ GITHUB_REPOSITORY: '../../etc/passwd' }))).toContain('GITHUB_REPOSITORY: expected owner/name');
    expect(await refusal(env({ GITHUB_REPOSITORY: 'a/b?x=1' }))).toContain('GITHUB_REPOSITORY');
    expect(await refusal(env({ GITHUB_API_URL: 'file:///etc/passwd' }))).toContain('GITHUB_API_URL: not an http(s) URL');
    const p = await event({ pull_request: { number: 12, base: { sha: '--upload-pack=evil' }, head: { sha } } });
    expect(await refusal(env({ GITHUB_EVENT_PATH: p }))).toBe(`${p}: pull_request.base.sha: missing or not a commit id`);
    const n = await event({ pull_request: { number: '12/../../x', base: { sha }, head: { sha } } });
    expect(await refusal(env({ GITHUB_EVENT_PATH: n }))).toContain('pull_request.number: missing or not a positive whole number');
    expect(await refusal(env({ GITHUB_EVENT_PATH: await event('{not json') }))).toContain('is not JSON');
    expect(await refusal(env({ GITHUB_EVENT_PATH: undefined }))).toContain('GITHUB_EVENT_PATH: not set');
  });

  it('does not read a payload that is not a regular file', async () => {
    expect(await refusal(env({ GITHUB_EVENT_PATH: dir }))).toContain('GITHUB_EVENT_PATH');
  });
});
