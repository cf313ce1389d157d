import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli, runBin, startBin } from '../harness/cli.js';
import { tempRepo } from '../harness/gitRepo.js';
import { until } from '../harness/until.js';

/**
 * Argo Workflows' own examples, ported to Caravan (tests/fixtures/argo/), run by the built
 * `caravan` in a process of its own, as a user runs them. They live under tests/ rather than
 * workflows/ so that they change neither what the repository renders nor the examples the
 * demo copies.
 */

const fixture = (name: string): Promise<string> => readFile(new URL(`../fixtures/argo/${name}`, import.meta.url), 'utf8');

/** The progress lines of `caravan run`, without their clock. */
const progress = (out: string): string[] => out.trim().split('\n').map((l) => l.replace(/^\d\d:\d\d:\d\d /, ''));

/** The run id `caravan run` printed. */
const runIdOf = (out: string): string => /^run (\S+) of /.exec(progress(out)[0] ?? '')?.[1] ?? '';

describe('Argo examples, ported, through caravan run', () => {
  it('coinflip: the side the coin fell on runs, the other is skipped, and the join runs after whichever did', async () => {
    const dir = await tempRepo({ 'coinflip.yaml': await fixture('coinflip.yaml') });
    expect(await runBin(['validate'], { cwd: dir })).toMatchObject({ code: 0 });
    for (const [side, other] of [['heads', 'tails'], ['tails', 'heads']] as const) {
      const r = await runBin(['run', 'coinflip', '--param', `force=${side}`], { cwd: dir });
      expect(r.code).toBe(0);
      const lines = progress(r.out);
      expect(lines).toContain(`${side} started`);
      expect(lines).toContain(`${other} skipped: when '\${{ tasks.flip-coin.outputs.result == '${other}' }}' is false`);
      expect(lines).toContain('join started');
      expect(lines.at(-2)).toMatch(/^run \S+ of coinflip succeeded in \d+ms$/);
      const logs = await runBin(['logs', runIdOf(r.out), 'join'], { cwd: dir });
      expect(logs.out).toBe(`join#1 heads ${side === 'heads' ? 'succeeded' : 'skipped'}, tails ${side === 'tails' ? 'succeeded' : 'skipped'}\n`);
    }
    // A fair coin: whichever side, the run succeeds through the join.
    const random = await runBin(['run', 'coinflip'], { cwd: dir });
    expect(random.code).toBe(0);
    expect(progress(random.out)).toContain('join started');
  });

  it('exit handlers: the finally tasks run after a failure, a success and a cancel, and read run.status and run.failures', async () => {
    const dir = await tempRepo({ 'exit-handlers.yaml': await fixture('exit-handlers.yaml') });
    await writeFile(join(dir, '.gitignore'), 'go\n');

    const failed = await runBin(['run', 'exit-handlers'], { cwd: dir });
    expect(failed.code).toBe(1);
    const lines = progress(failed.out);
    expect(lines).toContain('cry started');
    expect(lines).toContain("celebrate skipped: when '${{ run.status == 'succeeded' }}' is false");
    expect(lines.at(-2)).toMatch(/^run \S+ of exit-handlers failed in \d+ms: task 'intentional-fail' failed: exited with code 1$/);
    const id = runIdOf(failed.out);
    const email = await runBin(['logs', id, 'send-email'], { cwd: dir });
    // toJSON writes one line of compact JSON.
    expect(email.out).toMatch(/^send-email#1 send e-mail: exit-handlers failed since \d{4}-\d\d-\d\dT[\d:.]+Z\. Failed tasks \[\{"task":"intentional-fail","error":"exited with code 1"\}\]\n$/);
    expect((await runBin(['logs', id, 'cry'], { cwd: dir })).out).toBe('cry#1 boohoo!\n');

    const succeeded = await runBin(['run', 'exit-handlers', '--param', 'outcome=succeed'], { cwd: dir });
    expect(succeeded.code).toBe(0);
    expect(progress(succeeded.out)).toContain('celebrate started');
    expect((await runBin(['logs', runIdOf(succeeded.out), 'send-email'], { cwd: dir })).out).toMatch(/ succeeded since .*\. Failed tasks \[\]\n$/);

    // Cancelled from another terminal while the primary task waits: the finally tasks still run.
    const running = startBin(['run', 'exit-handlers', '--param', 'outcome=wait'], { cwd: dir });
    const exited = running.exited;
    await until('the primary task to start', () => running.out().includes('intentional-fail started'));
    const runId = runIdOf(running.out());
    expect(await cli(dir, 'cancel', runId)).toMatchObject({ code: 0 });
    expect(await exited).toBe(1);
    expect(progress(running.out())).toContain('cry started');
    expect(progress(running.out()).at(-2)).toMatch(/^run \S+ of exit-handlers cancelled/);
    expect((await runBin(['logs', runId, 'send-email'], { cwd: dir })).out).toMatch(/^send-email#1 send e-mail: exit-handlers cancelled since .*\. Failed tasks \[\]\n$/);
    const status = JSON.parse((await cli(dir, 'status', runId, '--json')).out) as { status: string; tasks: Record<string, { status: string }> };
    expect([status.status, status.tasks['intentional-fail']!.status, status.tasks['cry']!.status, status.tasks['celebrate']!.status]).toEqual(['cancelled', 'cancelled', 'succeeded', 'skipped']);
  });

  it('loops-param-result: forEach over a task output holding a JSON array, with no fromJSON, and toJSON on one line', async () => {
    const dir = await tempRepo({ 'loops-param-result.yaml': await fixture('loops-param-result.yaml') });
    const r = await runBin(['run', 'loops-param-result'], { cwd: dir });
    expect(r.code).toBe(0);
    const id = runIdOf(r.out);
    const logs = await runBin(['logs', id], { cwd: dir });
    for (const n of [0, 1, 2]) expect(logs.out).toContain(`sleep-n-sec[${n}]#1 sleeping for ${n} seconds\n`);
    expect((await runBin(['logs', id, 'gather'], { cwd: dir })).out).toBe('gather#1 slept ["0","1","2"]\n');
    const status = JSON.parse((await cli(dir, 'status', id, '--json')).out) as { tasks: Record<string, { instances?: Array<{ item: unknown }> }> };
    expect(status.tasks['sleep-n-sec']!.instances!.map((i) => i.item)).toEqual([0, 1, 2]);
  });

  it('workflow-of-workflows: the parent reads the outputs its child runs declare, and results taken from stdout', async () => {
    const files = { 'workflow-of-workflows.yaml': await fixture('workflow-of-workflows.yaml'), 'sum-of-squares.yaml': await fixture('sum-of-squares.yaml') };
    const dir = await tempRepo(files);
    expect(await runBin(['validate'], { cwd: dir })).toMatchObject({ code: 0 });
    const r = await runBin(['run', 'workflow-of-workflows'], { cwd: dir });
    expect(r.code).toBe(0);
    const id = runIdOf(r.out);
    expect((await runBin(['logs', id, 'report'], { cwd: dir })).out).toBe('report#1 sum of squares of 1..3 and 1..10 is 399 (squares of 1..10 ["1","4","9","16","25","36","49","64","81","100"])\n');
    type Status = { status: string; outputs?: Record<string, string>; tasks: Record<string, { outputs?: Record<string, string> }> };
    const parent = JSON.parse((await cli(dir, 'status', id, '--json')).out) as Status;
    expect(parent.tasks['combine']!.outputs).toEqual({ result: '399' });
    const small = parent.tasks['small']!.outputs!;
    expect(small).toEqual({ total: '14', squares: '["1","4","9"]', runId: expect.stringMatching(/^\d{8}-\d{6}-[0-9a-f]{6}$/), status: 'succeeded' });
    // The child's run.json holds what it declared, evaluated as it succeeded.
    const child = JSON.parse((await cli(dir, 'status', small['runId']!, '--json')).out) as Status;
    expect([child.status, child.outputs, child.tasks['add']!.outputs]).toEqual(['succeeded', { total: '14', squares: '["1","4","9"]' }, { result: '14' }]);

    // A child that is not waited for has no outputs yet: reading one is refused before anything runs.
    await writeFile(join(dir, 'workflows', 'workflow-of-workflows.yaml'), files['workflow-of-workflows.yaml'].replace('params: { count: 10 }', 'params: { count: 10 }\n        wait: false'));
    const invalid = await runBin(['validate'], { cwd: dir });
    expect(invalid.code).toBe(2);
    expect(invalid.out + invalid.err).toMatch(/workflows\/workflow-of-workflows\.yaml:\d+:\d+: error EXPR_CHILD_NOT_WAITED: in 'tasks\.large\.outputs\.total': task 'large' runs workflow 'sum-of-squares' with wait: false/);
    // A read of an output the child does not declare is refused too, naming the child's file.
    await writeFile(join(dir, 'workflows', 'workflow-of-workflows.yaml'), files['workflow-of-workflows.yaml'].replace('tasks.small.outputs.total', 'tasks.small.outputs.sum'));
    const unknown = await runBin(['validate'], { cwd: dir });
    expect(unknown.code).toBe(2);
    expect(unknown.out + unknown.err).toMatch(/workflows\/workflow-of-workflows\.yaml:\d+:\d+: error CHILD_OUTPUT_UNKNOWN: workflow 'sum-of-squares' \(workflows\/sum-of-squares\.yaml\) declares no output 'sum'; its spec\.outputs are total, squares/);
  });

  it('retry-backoff: a flaky command retried with exponential backoff (factor 2) until it succeeds', async () => {
    const dir = await tempRepo({ 'retry-backoff.yaml': await fixture('retry-backoff.yaml') });
    expect(await runBin(['validate'], { cwd: dir })).toMatchObject({ code: 0 });
    const r = await runBin(['run', 'retry-backoff', '--param', 'fail-first=2'], { cwd: dir });
    expect(r.code).toBe(0);
    const lines = progress(r.out);
    expect(lines.filter((l) => l.startsWith('retry-backoff failed'))).toEqual(['retry-backoff failed (attempt 1): exited with code 1', 'retry-backoff failed (attempt 2): exited with code 1']);
    // delay 1s, then x2, each within the jitter's -20%..+20%.
    const waits = lines.flatMap((l) => {
      const m = /^retry-backoff will retry \(attempt \d+\) in (?:(\d+)ms|([\d.]+)s)$/.exec(l);
      return m === null ? [] : [m[1] !== undefined ? Number(m[1]) : Number(m[2]) * 1000];
    });
    // Shown to a tenth of a second.
    expect(waits).toHaveLength(2);
    expect(waits[0]).toBeGreaterThanOrEqual(750);
    expect(waits[0]).toBeLessThanOrEqual(1250);
    expect(waits[1]).toBeGreaterThanOrEqual(1550);
    expect(waits[1]).toBeLessThanOrEqual(2450);
    expect(r.out).not.toContain('circuit breaker');
    const id = runIdOf(r.out);
    expect((await runBin(['logs', id, 'retry-backoff'], { cwd: dir })).out).toBe('retry-backoff#1 attempt 1 exits with 1\nretry-backoff#2 attempt 2 exits with 1\nretry-backoff#3 attempt 3 exits with 0\n');
    const status = JSON.parse((await cli(dir, 'status', id, '--json')).out) as { tasks: Record<string, { status: string; attempts: number }> };
    expect(status.tasks['retry-backoff']).toMatchObject({ status: 'succeeded', attempts: 3 });
  });
});
