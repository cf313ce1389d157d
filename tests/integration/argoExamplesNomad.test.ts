import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBin } from '../harness/cli.js';
import { tempRepo } from '../harness/gitRepo.js';
import { NatsServer, requireServer } from '../harness/natsServer.js';
import { NomadAgent, requireNomad } from '../harness/nomadAgent.js';

/**
 * The Argo ports of tests/e2e/argoExamples.test.ts again, with every task a Nomad dispatch
 * and every event on NATS JetStream (`--backend nomad`, which implies `--bus nats`): the
 * workflow language (status functions and joins, finally tasks reading run.status and
 * run.failures, forEach over an output) means the same on the cluster as on the embedded
 * default.
 */

const nomadBin = requireNomad();
const natsOk = requireServer('nats-server', 'apt-get install -y nats-server');

const fixture = (name: string): Promise<string> => readFile(new URL(`../fixtures/argo/${name}`, import.meta.url), 'utf8');
const progress = (out: string): string[] => out.trim().split('\n').map((l) => l.replace(/^\d\d:\d\d:\d\d /, ''));
const runIdOf = (out: string): string => /^run (\S+) of /.exec(progress(out)[0] ?? '')?.[1] ?? '';

describe.skipIf(nomadBin === undefined || !natsOk)('Argo examples, ported, on Nomad and NATS', () => {
  let nomad: NomadAgent;
  let nats: NatsServer;
  const dirs: string[] = [];
  let env: NodeJS.ProcessEnv;
  beforeAll(async () => {
    [nomad, nats] = await Promise.all([NomadAgent.start(nomadBin!), NatsServer.start()]);
    env = { ...process.env, NOMAD_ADDR: nomad.address, NATS_URL: nats.url };
  }, 120_000);
  afterAll(async () => {
    await Promise.all([nomad?.close(), nats?.close()]);
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  const repo = async (files: Record<string, string>): Promise<string> => {
    const dir = await tempRepo(files);
    dirs.push(dir);
    return dir;
  };
  const caravan = (dir: string, ...argv: string[]) => runBin(argv, { cwd: dir, env, timeoutMs: 170_000 });

  it('coinflip: the forced side runs on Nomad, the other is skipped, the join runs', async () => {
    const dir = await repo({ 'coinflip.yaml': await fixture('coinflip.yaml') });
    const r = await caravan(dir, 'run', 'coinflip', '--param', 'force=tails', '--backend', 'nomad');
    expect(r.code, r.out + r.err).toBe(0);
    const lines = progress(r.out);
    expect(lines).toContain("heads skipped: when '${{ tasks.flip-coin.outputs.result == 'heads' }}' is false");
    expect(lines).toContain('join started');
    expect((await caravan(dir, 'logs', runIdOf(r.out), 'join')).out).toBe('join#1 heads skipped, tails succeeded\n');
  }, 180_000);

  it('exit handlers: after a failure on Nomad, the finally tasks run and read run.status and run.failures', async () => {
    const dir = await repo({ 'exit-handlers.yaml': await fixture('exit-handlers.yaml') });
    await writeFile(join(dir, '.gitignore'), 'go\n');
    const failed = await caravan(dir, 'run', 'exit-handlers', '--backend', 'nomad');
    expect(failed.code, failed.out + failed.err).toBe(1);
    expect(progress(failed.out)).toContain('cry started');
    const id = runIdOf(failed.out);
    expect((await caravan(dir, 'logs', id, 'send-email')).out).toMatch(/^send-email#1 send e-mail: exit-handlers failed since \S+\. Failed tasks \[\{"task":"intentional-fail","error":"exited with code 1( \(on [^)]+\))?"\}\]\n$/);
    const status = JSON.parse((await caravan(dir, 'status', id, '--json')).out) as { status: string; tasks: Record<string, { status: string }> };
    expect([status.status, status.tasks['cry']!.status, status.tasks['celebrate']!.status]).toEqual(['failed', 'succeeded', 'skipped']);
  }, 180_000);

  it('retry-backoff: each retry is a new dispatch, with exponential backoff, until it succeeds', async () => {
    const dir = await repo({ 'retry-backoff.yaml': await fixture('retry-backoff.yaml') });
    const r = await caravan(dir, 'run', 'retry-backoff', '--param', 'fail-first=2', '--backend', 'nomad');
    expect(r.code, r.out + r.err).toBe(0);
    expect(progress(r.out).filter((l) => / will retry \(attempt \d\) in /.test(l))).toHaveLength(2);
    const status = JSON.parse((await caravan(dir, 'status', runIdOf(r.out), '--json')).out) as { tasks: Record<string, { status: string; attempts: number }> };
    expect(status.tasks['retry-backoff']).toMatchObject({ status: 'succeeded', attempts: 3 });
  }, 180_000);

  it('workflow-of-workflows: child runs on Nomad declare outputs, captured from stdout, that the parent reads', async () => {
    const dir = await repo({ 'workflow-of-workflows.yaml': await fixture('workflow-of-workflows.yaml'), 'sum-of-squares.yaml': await fixture('sum-of-squares.yaml') });
    const r = await caravan(dir, 'run', 'workflow-of-workflows', '--backend', 'nomad');
    expect(r.code, r.out + r.err).toBe(0);
    const status = JSON.parse((await caravan(dir, 'status', runIdOf(r.out), '--json')).out) as { tasks: Record<string, { outputs?: Record<string, string> }> };
    expect(status.tasks['combine']!.outputs).toEqual({ result: '399' });
    expect(status.tasks['small']!.outputs).toMatchObject({ total: '14', squares: '["1","4","9"]', status: 'succeeded' });
  }, 240_000);

  it('loops-param-result: forEach over an output holding a JSON array, each item a dispatch', async () => {
    const dir = await repo({ 'loops-param-result.yaml': await fixture('loops-param-result.yaml') });
    const r = await caravan(dir, 'run', 'loops-param-result', '--backend', 'nomad');
    expect(r.code, r.out + r.err).toBe(0);
    expect((await caravan(dir, 'logs', runIdOf(r.out), 'gather')).out).toBe('gather#1 slept ["0","1","2"]\n');
  }, 180_000);
});
