import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NomadClient } from '../../engine/nomad/NomadClient.js';
import { runBin } from '../harness/cli.js';
import { git, repoWith, workflow } from '../harness/gitRepo.js';
import { NatsServer, requireServer } from '../harness/natsServer.js';
import { NomadAgent, requireNomad } from '../harness/nomadAgent.js';

const nomadBin = requireNomad();
const natsOk = requireServer('nats-server', 'apt-get install -y nats-server');

/**
 * `caravan retry --backend nomad` through the built CLI: each attempt is a Nomad dispatch
 * reporting over NATS JetStream. One forEach item fails until a file exists; the retry
 * dispatches that item and what follows it, and nothing else (counter files per item).
 */
const spec = [
  '  params:',
  '    dir: { type: string }',
  '  tasks:',
  '    - name: prepare',
  '      run: \'echo run >> ${{ params.dir }}/prepare.count; printf "n=3\\n" > "$CARAVAN_OUTPUTS"\'',
  '      outputs: [n]',
  '    - name: fan',
  '      needs: [prepare]',
  '      forEach: [1, 2, 3]',
  '      run: \'echo run >> ${{ params.dir }}/fan-${{ item }}.count; test ${{ item }} != 2 || test -e ${{ params.dir }}/fixed\'',
  '    - name: report',
  '      needs: [fan]',
  '      run: \'echo run >> ${{ params.dir }}/report.count; test ${{ tasks.prepare.outputs.n }} = 3\'',
  '',
].join('\n');

async function counts(dir: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of ['prepare', 'fan-1', 'fan-2', 'fan-3', 'report']) {
    const f = join(dir, `${t}.count`);
    if (existsSync(f)) out[t] = (await readFile(f, 'utf8')).split('\n').filter((l) => l !== '').length;
  }
  return out;
}

describe.skipIf(nomadBin === undefined || !natsOk)('caravan retry --backend nomad', () => {
  let nomad: NomadAgent;
  let nats: NatsServer;
  let repo: string;
  let dir: string;
  beforeAll(async () => {
    [nomad, nats] = await Promise.all([NomadAgent.start(nomadBin!), NatsServer.start()]);
    repo = await repoWith({ 'fanout.yaml': workflow('fanout', spec) });
    dir = await mkdtemp(join(tmpdir(), 'caravan-retry-nomad-'));
  }, 120_000);
  afterAll(async () => {
    await Promise.all([nomad?.close(), nats?.close()]);
    if (repo !== undefined) await rm(repo, { recursive: true, force: true });
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('reuses the items that succeeded and dispatches only the failed one and its dependants', async () => {
    const env = { ...process.env, NOMAD_ADDR: nomad.address, NATS_URL: nats.url };
    const first = await runBin(['run', 'fanout', '--backend', 'nomad', '-p', `dir=${dir}`], { cwd: repo, env, timeoutMs: 120_000 });
    expect(first.code, first.out + first.err).toBe(1);
    expect(await counts(dir)).toEqual({ prepare: 1, 'fan-1': 1, 'fan-2': 1, 'fan-3': 1 });
    const old = /^Run: (\S+)$/m.exec(await git(repo, 'log', 'caravan/runs', '-1', '--format=%B'))![1]!;

    await writeFile(join(dir, 'fixed'), '');
    const retry = await runBin(['retry', old, '--backend', 'nomad'], { cwd: repo, env, timeoutMs: 120_000 });
    expect(retry.code, retry.out + retry.err).toBe(0);
    expect(retry.err).toContain(`retries run ${old} of fanout; reusing prepare, fan[0], fan[2]; running again fan (failed), report (skipped: 'fan' failed)`);
    expect(await counts(dir)).toEqual({ prepare: 1, 'fan-1': 1, 'fan-2': 2, 'fan-3': 1, report: 1 });
    const id = /^Run: (\S+)$/m.exec(await git(repo, 'log', 'caravan/runs', '-1', '--format=%B'))![1]!;
    const run = JSON.parse(await git(repo, 'show', `caravan/runs:runs/fanout/${id}/run.json`)) as { retryOf: string; tasks: Record<string, { status: string; instances?: Array<{ key: string; reusedFrom?: string; attempts: number }> }> };
    expect(run.retryOf).toBe(old);
    expect(run.tasks['fan']!.instances!.map((i) => [i.key, i.reusedFrom ?? null, i.attempts])).toEqual([['fan[0]', old, 0], ['fan[1]', null, 1], ['fan[2]', old, 0]]);
    // On Nomad: three dispatches of fan in the first run, one in the retry; prepare only once.
    const client = new NomadClient({ address: nomad.address });
    expect((await client.dispatchedChildren('caravan-fanout-fan')).length).toBe(4);
    expect((await client.dispatchedChildren('caravan-fanout-prepare')).length).toBe(1);
    expect((await client.dispatchedChildren('caravan-fanout-report')).length).toBe(1);
  }, 300_000);
});
