import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { cli } from '../harness/cli.js';
import { git, tempRepo, workflow } from '../harness/gitRepo.js';

const pipe = workflow('pipe', '  tasks:\n    - { name: a, run: "echo A" }\n');

function runIdOf(out: string): string {
  return /^run (\S+) of pipe started$/m.exec(out.replace(/^\d\d:\d\d:\d\d /gm, ''))![1]!;
}

describe('the caravan/runs branch', () => {
  it('is refused when Caravan did not create it, and left untouched', async () => {
    const dir = await tempRepo({ 'pipe.yaml': pipe });
    await git(dir, 'checkout', '-q', '--orphan', 'caravan/runs');
    await git(dir, 'rm', '-rq', '--cached', '.');
    await writeFile(join(dir, 'runs'), 'my own notes about runs\n');
    await git(dir, 'add', 'runs');
    await git(dir, 'commit', '-q', '-m', 'my runs file');
    await git(dir, 'checkout', '-q', '-f', 'main');
    const tip = (await git(dir, 'rev-parse', 'caravan/runs')).trim();

    const r = await cli(dir, 'run', 'pipe');
    expect(r.code).toBe(64);
    expect(r.out).toBe('');
    expect(r.err).toBe(`caravan: the branch caravan/runs was not created by Caravan (its tip ${tip.slice(0, 12)} has no Workflow:/Run: trailers), so runs are not recorded on it; rename it (git branch -m caravan/runs <new-name>) and run again\n`);
    expect((await git(dir, 'rev-parse', 'caravan/runs')).trim()).toBe(tip);
    expect(await git(dir, 'show', 'caravan/runs:runs')).toBe('my own notes about runs\n');
  });

  it('accepts a merge the user made of two audit histories', async () => {
    const dir = await tempRepo({ 'pipe.yaml': pipe });
    expect((await cli(dir, 'run', 'pipe')).code).toBe(0);
    const tip = (await git(dir, 'rev-parse', 'caravan/runs')).trim();
    const tree = (await git(dir, 'rev-parse', 'caravan/runs^{tree}')).trim();
    const merge = (await git(dir, 'commit-tree', tree, '-p', tip, '-p', `${tip}~1`, '-m', "Merge remote-tracking branch 'origin/caravan/runs'")).trim();
    await git(dir, 'update-ref', 'refs/heads/caravan/runs', merge, tip);
    expect((await cli(dir, 'run', 'pipe')).code).toBe(0);
    expect((await git(dir, 'rev-list', 'caravan/runs')).split('\n')).toContain(merge);
  });

  it('blocked by a branch named caravan (loose or packed) is a clear error, not a stack trace', async () => {
    const dir = await tempRepo({ 'pipe.yaml': pipe });
    await git(dir, 'branch', 'caravan');
    const message = "caravan: a branch named 'caravan' exists, so Git cannot create the audit branch caravan/runs; rename it (git branch -m caravan <new-name>) and run again\n";
    expect(await cli(dir, 'run', 'pipe')).toEqual({ code: 64, out: '', err: message });
    await git(dir, 'pack-refs', '--all');
    expect(await cli(dir, 'run', 'pipe')).toEqual({ code: 64, out: '', err: message });
    // No loose refs/heads/caravan/ directory was created next to the packed branch.
    await expect(stat(join(dir, '.git', 'refs', 'heads', 'caravan'))).rejects.toThrow();
    await git(dir, 'fsck', '--strict', '--no-progress');
    // Renamed out of the way, the run goes through.
    await git(dir, 'branch', '-m', 'caravan', 'caravan-old');
    expect((await cli(dir, 'run', 'pipe')).code).toBe(0);
  });

  it('in a fresh clone continues origin/caravan/runs: earlier runs are visible and the new run is pushable', async () => {
    const origin = await tempRepo({ 'pipe.yaml': pipe });
    const first = runIdOf((await cli(origin, 'run', 'pipe')).out);
    const originTip = (await git(origin, 'rev-parse', 'caravan/runs')).trim();
    const parent = await mkdtemp(join(tmpdir(), 'caravan-clone-'));
    onTestFinished(() => rm(parent, { recursive: true, force: true }));
    const clone = join(parent, 'clone');
    await git(parent, 'clone', '-q', origin, clone);
    await expect(git(clone, 'rev-parse', '--verify', '-q', 'refs/heads/caravan/runs')).rejects.toThrow();

    const runs = await cli(clone, 'runs');
    expect(runs.code).toBe(0);
    expect(runs.out).toContain(first);
    expect((await cli(clone, 'status', first)).code).toBe(0);

    const r = await cli(clone, 'run', 'pipe');
    expect(r.code).toBe(0);
    const second = runIdOf(r.out);
    // The new run's first commit has origin's tip as its parent: one history, not a second root.
    const log = (await git(clone, 'log', '--format=%H %P', 'caravan/runs')).trim().split('\n').map((l) => l.split(' '));
    const onTop = log.find((c) => c[1] === originTip)!;
    expect(await git(clone, 'log', '-1', '--format=%B', onTop[0]!)).toContain(`Run: ${second}`);
    expect(log.filter((c) => c.length === 1)).toHaveLength(1);
    expect(await git(clone, 'ls-tree', '-r', '--name-only', 'caravan/runs')).toContain(`runs/pipe/${first}/run.json`);
    expect((await cli(clone, 'runs')).out).toContain(second);
    // A fast-forward: the push is accepted.
    await git(clone, 'push', '-q', 'origin', 'caravan/runs');
    expect((await git(origin, 'rev-parse', 'caravan/runs')).trim()).toBe((await git(clone, 'rev-parse', 'caravan/runs')).trim());
  });
});
