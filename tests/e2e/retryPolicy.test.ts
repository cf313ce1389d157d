import { describe, expect, it } from 'vitest';
import type { RunSnapshot } from '../../engine/run/RunSnapshot.js';
import { cli, runBin, startBin } from '../harness/cli.js';
import { git, tempRepo, workflow } from '../harness/gitRepo.js';
import { until } from '../harness/until.js';

/**
 * Retries and circuit breakers through the built `caravan run`, as a user runs them. The
 * flaky task fails its first `fail-first` attempts (it reads run.attempt), then succeeds.
 */
const flaky = (breaker: string): string => workflow('flaky', `  params:
    fail-first: { type: integer, default: 6 }
${breaker}  tasks:
    - name: flaky
      retry: { attempts: 7, delay: 100ms, factor: 1 }
      run: |
        echo "attempt \${{ run.attempt }}"
        [ \${{ run.attempt }} -gt \${{ params.fail-first }} ]
`);

/** The progress lines of `caravan run`, without their clock. */
const progress = (out: string): string[] => out.trim().split('\n').map((l) => l.replace(/^\d\d:\d\d:\d\d /, ''));
const runIdOf = (out: string): string => /^run (\S+) of /.exec(progress(out)[0] ?? '')?.[1] ?? '';

describe('retries and circuit breakers through caravan run', () => {
  it('a flaky shell task gets its seven attempts with no circuit breaker in the way', async () => {
    const dir = await tempRepo({ 'flaky.yaml': flaky('') });
    const r = await runBin(['run', 'flaky'], { cwd: dir });
    expect(r.code).toBe(0);
    const lines = progress(r.out);
    expect(lines.filter((l) => l.startsWith('flaky failed'))).toHaveLength(6);
    expect(lines).toContain('flaky started (attempt 7)');
    expect(r.out).not.toContain('circuit breaker');
    const status = JSON.parse((await cli(dir, 'status', runIdOf(r.out), '--json')).out) as RunSnapshot;
    expect(status).toMatchObject({ status: 'succeeded', tasks: { flaky: { status: 'succeeded', attempts: 7 } } });
    expect(status.breakers).toBeUndefined();
  });

  it('a configured breaker holds the retries for its cool-down, and progress, status and run.json say so', async () => {
    const dir = await tempRepo({ 'flaky.yaml': flaky('  defaults:\n    circuitBreaker: { failures: 2, cooldown: 5s }\n') });
    const running = startBin(['run', 'flaky', '--param', 'fail-first=2'], { cwd: dir });
    const exited = running.exited;

    await until('the breaker to hold the task', () => running.out().includes('flaky held by circuit breaker'));
    const runId = runIdOf(running.out());
    const held = progress(running.out());
    const opened = held.find((l) => l.startsWith('circuit breaker agent:shell opened after 2 failures until '));
    expect(opened).toBeDefined();
    const until_ = opened!.slice(-8);
    expect(held).toContain(`flaky held by circuit breaker agent:shell until ${until_}`);

    // While it holds: caravan status, and the checkpoint on caravan/runs (written within 2 s).
    const status = await cli(dir, 'status', runId);
    expect(status.out).toMatch(new RegExp(`flaky +retrying +2 +held by circuit breaker agent:shell until ${until_}`));
    expect(status.out).toContain(`circuit breaker agent:shell: open after 2 failures, until ${until_} (then one probe)`);
    let record: RunSnapshot | undefined;
    await until('run.json to record the hold', async () => {
      const text = await git(dir, 'show', `caravan/runs:runs/flaky/${runId}/run.json`).catch(() => '');
      record = text !== '' ? (JSON.parse(text) as RunSnapshot) : undefined;
      return record?.tasks['flaky']?.heldBy !== undefined;
    });
    expect(record!.tasks['flaky']!.heldBy!.breaker).toBe('agent:shell');
    expect(record!.tasks['flaky']!.heldBy!.until.slice(11, 19)).toBe(until_);
    expect(record!.breakers).toEqual([{ key: 'agent:shell', failures: 2, openUntil: record!.tasks['flaky']!.heldBy!.until }]);

    // The probe after the cool-down succeeds: the breaker closes and the run succeeds.
    expect(await exited).toBe(0);
    const lines = progress(running.out());
    expect(lines).toContain('flaky started (attempt 3)');
    expect(lines).toContain('circuit breaker agent:shell closed: its probe succeeded');
    const final = JSON.parse(await git(dir, 'show', `caravan/runs:runs/flaky/${runId}/run.json`)) as RunSnapshot;
    expect(final).toMatchObject({ status: 'succeeded', tasks: { flaky: { status: 'succeeded', attempts: 3 } } });
    expect(final.breakers).toBeUndefined();
  });

  it('retry.on and retry.when decide which failures are retried, and the error says why not', async () => {
    const dir = await tempRepo({
      'picky.yaml': workflow('picky', `  tasks:
    - name: only-infra
      retry: { attempts: 3, delay: 100ms, on: infrastructure }
      run: exit 1
    - name: only-75
      retry: { attempts: 3, delay: 100ms, when: "\${{ attempt.exitCode == 75 }}" }
      run: exit \${{ run.attempt == 1 && 75 || 2 }}
  failFast: false
`),
    });
    expect(await runBin(['validate'], { cwd: dir })).toMatchObject({ code: 0 });
    const r = await runBin(['run', 'picky'], { cwd: dir });
    expect(r.code).toBe(1);
    const status = JSON.parse((await cli(dir, 'status', runIdOf(r.out), '--json')).out) as RunSnapshot;
    expect(status.tasks['only-infra']).toMatchObject({ status: 'failed', attempts: 1, error: 'exited with code 1 (not retried: retry.on is infrastructure and this was an exit failure)' });
    expect(status.tasks['only-75']).toMatchObject({ status: 'failed', attempts: 2, error: "exited with code 2 (not retried: retry.when 'attempt.exitCode == 75' is false)" });
  });
});
