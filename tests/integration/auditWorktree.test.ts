import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onTestFinished, describe, expect, it } from 'vitest';
import { cli } from '../harness/cli.js';
import { git, tempRepo, workflow } from '../harness/gitRepo.js';

const pipe = workflow('pipe', '  tasks:\n    - { name: a, run: "echo A" }\n    - { name: b, needs: [a], agent: noop }\n');

describe('a linked worktree (git worktree add), whose .git is a file', () => {
  it('runs there, records the run on the shared caravan/runs, and keeps its live runs in its own Git directory', async () => {
    const main = await tempRepo({ 'pipe.yaml': pipe });
    const parent = await mkdtemp(join(tmpdir(), 'caravan-wt-'));
    onTestFinished(() => rm(parent, { recursive: true, force: true }));
    const wt = join(parent, 'wt');
    await git(main, 'worktree', 'add', '-q', '-b', 'feature', wt);
    expect((await stat(join(wt, '.git'))).isFile()).toBe(true);

    const r = await cli(wt, 'run', 'pipe');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const runId = /^run (\S+) of pipe started$/m.exec(r.out.replace(/^\d\d:\d\d:\d\d /gm, ''))![1]!;

    // The main checkout sees the run on the branch both share.
    expect(await git(main, 'log', '--format=%s', 'caravan/runs')).toMatch(new RegExp(`^pipe ${runId}: succeeded`));
    expect(await git(main, 'ls-tree', '-r', '--name-only', 'caravan/runs')).toContain(`runs/pipe/${runId}/run.json`);
    // The run's workflow commit is the worktree's HEAD (its own branch), read through the worktree's HEAD file.
    const head = (await git(wt, 'rev-parse', 'HEAD')).trim();
    expect(await git(main, 'log', '-1', '--format=%B', 'caravan/runs')).toContain(`Workflow-Commit: ${head}`);
    expect((await cli(main, 'runs')).out).toContain(runId);
    expect((await cli(wt, 'status', runId)).code).toBe(0);
    // Nothing was written into a `.git` file's place, and the repository is sound.
    const wtGitdir = (await git(wt, 'rev-parse', '--absolute-git-dir')).trim();
    expect(wtGitdir).not.toBe(join(main, '.git'));
    expect((await stat(join(wtGitdir, 'caravan'))).isDirectory()).toBe(true);
    await expect(stat(join(main, '.git', 'caravan'))).rejects.toThrow();
    await git(main, 'fsck', '--strict', '--no-progress');
  });

  it('reads HEAD and the shared objects for caravan plan', async () => {
    const main = await tempRepo({ 'pipe.yaml': pipe });
    const parent = await mkdtemp(join(tmpdir(), 'caravan-wt-'));
    onTestFinished(() => rm(parent, { recursive: true, force: true }));
    const wt = join(parent, 'wt');
    await git(main, 'worktree', 'add', '-q', '-b', 'feature', wt);
    expect(await cli(wt, 'plan')).toEqual({ code: 0, err: '', out: '## Caravan plan: `HEAD` → working tree\n\nNo changes: 1 workflow unchanged.\n' });
    expect((await cli(wt, 'plan', '--base', 'main~0')).code).toBe(0);
  });
});
