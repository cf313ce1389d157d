import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CaravanApp } from '../../engine/app/CaravanApp.js';
import { Controller, type SyncReport } from '../../engine/controller/Controller.js';
import { META, Reconciler, type ClusterJobs } from '../../engine/controller/Reconciler.js';
import { CaravanError } from '../../engine/errors/CaravanError.js';
import type { NomadJob } from '../../engine/compile/NomadJob.js';
import { NomadClient } from '../../engine/nomad/NomadClient.js';
import { validateSources, type FileResult } from '../../engine/spec/validateWorkflows.js';
import { MemoryLogger } from '../../engine/run/Logger.js';
import { git, tempRepo, workflow } from '../harness/gitRepo.js';
import { NomadAgent, requireNomad } from '../harness/nomadAgent.js';
import { until } from '../harness/until.js';

const bin = requireNomad();

const alpha = (cmd: string, poolEnv = 'one'): string => workflow('alpha', `  pools:\n    workers: { count: 1, env: { MODE: ${poolEnv} } }\n  tasks:\n    - { name: build, run: "${cmd}" }\n    - { name: pooled, pool: workers, needs: [build], run: "true" }\n`);
const beta = workflow('beta', '  tasks:\n    - { name: step, run: "echo beta" }\n');
const kept = workflow('kept', '  tasks:\n    - { name: step, run: "echo kept" }\n').replace('  name: kept\n', '  name: kept\n  labels: { caravan.io/prune: "false" }\n');

describe.skipIf(bin === undefined)('the controller reconciles a real Nomad from Git', () => {
  let agent: NomadAgent;
  let nomad: NomadClient;
  const opened: Array<{ app: CaravanApp; controller: Controller }> = [];
  beforeAll(async () => {
    agent = await NomadAgent.start(bin!);
    nomad = new NomadClient({ address: agent.address });
  }, 120_000);
  afterAll(async () => {
    await agent?.close();
  });
  afterEach(async () => {
    for (const o of opened.splice(0)) {
      await o.controller.stop();
      await o.app.close();
    }
    // Each test starts from an empty cluster.
    for (const j of (await nomad.listJobs()).value) await nomad.deregisterJob(j.ID, true);
  });

  async function controllerFor(dir: string, options: { prune?: boolean; selfHeal?: boolean; cluster?: ClusterJobs } = {}): Promise<{ controller: Controller; app: CaravanApp; reports: SyncReport[]; logger: MemoryLogger; sync: () => Promise<SyncReport> }> {
    const logger = new MemoryLogger();
    const app = new CaravanApp({ repoDir: dir, logger });
    const reports: SyncReport[] = [];
    const reconciler = new Reconciler({ cluster: options.cluster ?? nomad, repo: dir, controller: 'test-controller', compile: { agentCommand: ['caravan', 'agent'] }, prune: options.prune === true, selfHeal: options.selfHeal === true, logger, healBackoffMs: 0 });
    const controller = new Controller({ app, repoDir: dir, branch: 'main', workflowsDir: 'workflows', intervalMs: 3_600_000, reconciler, identity: 'test-controller', logger, onSync: (r) => reports.push(r) });
    opened.push({ app, controller });
    const sync = async (): Promise<SyncReport> => {
      const before = reports.length;
      await controller.syncNow('test');
      expect(reports.length, 'a sync ran').toBe(before + 1);
      return reports.at(-1)!;
    };
    return { controller, app, reports, logger, sync };
  }

  async function commit(dir: string, files: Record<string, string | null>, message: string): Promise<string> {
    for (const [path, text] of Object.entries(files)) {
      if (text === null) await rm(join(dir, path));
      else {
        await mkdir(join(dir, path, '..'), { recursive: true });
        await writeFile(join(dir, path), text);
      }
    }
    await git(dir, 'add', '-A');
    await git(dir, 'commit', '-q', '-m', message);
    return (await git(dir, 'rev-parse', 'HEAD')).trim();
  }

  it('registers a new workflow, stamped with ownership and commit; an edit updates only the changed job, with the new commit', async () => {
    const dir = await tempRepo({ 'alpha.yaml': alpha('echo one') });
    const first = (await git(dir, 'rev-parse', 'HEAD')).trim();
    const { sync, app, controller, reports } = await controllerFor(dir);
    const r1 = await sync();
    expect(r1.status).toBe('synced');
    expect(r1.jobs.created.sort()).toEqual(['caravan-alpha-build', 'caravan-alpha-pool-workers']);
    const job = await nomad.readJob('caravan-alpha-build');
    expect(job.Meta).toMatchObject({ [META.repo]: dir, [META.commit]: first, [META.controller]: 'test-controller', [META.workflow]: 'alpha' });
    // Recorded on the audit branch, whole.
    expect(await app.audit.readSync(first)).toMatchObject({ commit: first, status: 'synced', jobs: { created: r1.jobs.created } });

    const second = await commit(dir, { 'workflows/alpha.yaml': alpha('echo two') }, 'change build');
    const r2 = await sync();
    expect(r2.jobs.updated).toEqual(['caravan-alpha-build']);
    expect(r2.jobs.unchanged).toEqual(['caravan-alpha-pool-workers']);
    const after = await nomad.readJob('caravan-alpha-build');
    expect(after.Version).toBe(job.Version + 1);
    expect(after.Meta?.[META.commit]).toBe(second);
    // Nothing moved, neither the branch nor the cluster: the next look does no work at all.
    await controller.syncNow('test');
    expect(reports).toHaveLength(2);
  });

  it('an invalid commit keeps the last good version registered and reports the error; other workflows still sync', async () => {
    const dir = await tempRepo({ 'alpha.yaml': alpha('echo one'), 'beta.yaml': beta });
    const good = (await git(dir, 'rev-parse', 'HEAD')).trim();
    const { sync, controller } = await controllerFor(dir, { prune: true });
    await sync();
    await commit(dir, { 'workflows/alpha.yaml': alpha('echo one').replace('run: "echo one"', 'run: 42, bogus: true'), 'workflows/beta.yaml': beta.replace('echo beta', 'echo beta2') }, 'break alpha, change beta');
    const r = await sync();
    expect(r.status).toBe('partial');
    expect(r.invalid.map((i) => i.file)).toEqual(['workflows/alpha.yaml']);
    expect(r.invalid[0]!.errors.join(' ')).toMatch(/line \d+/);
    expect(r.jobs.updated).toEqual(['caravan-beta-step']);
    expect(r.jobs.pruned).toEqual([]);
    expect((await nomad.readJob('caravan-alpha-build')).Meta?.[META.commit]).toBe(good);
    expect(controller.status().error).toMatch(/invalid workflow file.*workflows\/alpha\.yaml/);
  });

  it("a sync that fails (Nomad unreachable) is tried again: the commit's push trigger fires once Nomad answers, and the failure is recorded once", async () => {
    const pushed = workflow('pushed', '  triggers:\n    - push: { paths: ["data/**"] }\n  tasks:\n    - { name: step, run: "echo pushed" }\n');
    const dir = await tempRepo({ 'pushed.yaml': pushed });
    let down = false;
    // Rejected promises, as a client whose requests are refused gives.
    const refuse = (): never => {
      throw new CaravanError('NOMAD_UNREACHABLE', 'cannot reach Nomad at http://127.0.0.1:1: connection refused');
    };
    const flaky: ClusterJobs = {
      listJobs: async (prefix) => (down ? refuse() : nomad.listJobs(prefix)),
      readJob: async (id) => (down ? refuse() : nomad.readJob(id)),
      planJob: async (job) => (down ? refuse() : nomad.planJob(job)),
      registerJob: async (job, index) => (down ? refuse() : nomad.registerJob(job, index)),
      deregisterJob: async (id, purge) => (down ? refuse() : nomad.deregisterJob(id, purge)),
    };
    const { sync, app } = await controllerFor(dir, { cluster: flaky });
    expect((await sync()).status).toBe('synced');
    const change = await commit(dir, { 'data/input.txt': 'new data' }, 'new data');
    down = true;
    const failed = await sync();
    expect([failed.commit, failed.status, failed.runs]).toEqual([change, 'failed', []]);
    const again = await sync();
    expect([again.status, again.runs]).toEqual(['failed', []]);
    down = false;
    const healed = await sync();
    expect([healed.commit, healed.status, healed.runs.map((r) => [r.workflow, r.trigger])]).toEqual([change, 'synced', [['pushed', 'push']]]);
    // One record of the failure (not one per interval), then the successful sync.
    const log = (await git(dir, 'log', 'caravan/runs', '--format=%s', '--', `syncs/${change}`)).trim().split('\n');
    expect(log.length).toBe(2);
    const runId = healed.runs[0]!.runId;
    await until('the pushed run to be recorded', async () => (await app.audit.readRun(runId))?.run.status === 'succeeded', 30_000, 100);
  });

  it('drift: a job changed by hand is reported as modified, a stopped one as missing; --self-heal puts both back', async () => {
    const dir = await tempRepo({ 'alpha.yaml': alpha('echo one') });
    const watcher = await controllerFor(dir);
    await watcher.sync();
    const live = await nomad.readJob('caravan-alpha-build');
    const edited: NomadJob = { ...live, Priority: 90 };
    await nomad.registerJob(edited);
    await nomad.deregisterJob('caravan-alpha-pool-workers');
    const r = await watcher.sync();
    expect(r.drift.map((d) => [d.id, d.kind, d.healed]).sort()).toEqual([['caravan-alpha-build', 'modified', false], ['caravan-alpha-pool-workers', 'missing', false]]);
    expect((await nomad.readJob('caravan-alpha-build')).Priority).toBe(90);

    const healer = await controllerFor(dir, { selfHeal: true });
    // A controller that never registered the pool cannot tell a stop from a fresh start: it registers it.
    const h = await healer.sync();
    expect(h.drift.map((d) => [d.id, d.kind, d.healed])).toEqual([['caravan-alpha-build', 'modified', true]]);
    expect((await nomad.readJob('caravan-alpha-build')).Priority).toBe(50);
    expect((await nomad.readJob('caravan-alpha-pool-workers')).Stop).toBe(false);
    await nomad.deregisterJob('caravan-alpha-pool-workers');
    const again = await healer.sync();
    expect(again.drift.map((d) => [d.id, d.kind, d.healed])).toEqual([['caravan-alpha-pool-workers', 'missing', true]]);
    expect((await nomad.readJob('caravan-alpha-pool-workers')).Stop).toBe(false);
  });

  it("a pool's count scaled outside Git is kept when the workflow changes anything but the count", async () => {
    const dir = await tempRepo({ 'alpha.yaml': alpha('echo one') });
    const { sync } = await controllerFor(dir);
    await sync();
    const pool = await nomad.readJob('caravan-alpha-pool-workers');
    pool.TaskGroups[0]!.Count = 3;
    await nomad.registerJob(pool);
    await commit(dir, { 'workflows/alpha.yaml': alpha('echo one', 'two') }, 'pool env');
    const r = await sync();
    expect(r.jobs.updated).toEqual(['caravan-alpha-pool-workers']);
    const after = await nomad.readJob('caravan-alpha-pool-workers');
    expect(after.TaskGroups[0]!.Count).toBe(3);
    expect(after.TaskGroups[0]!.Tasks[0]!.Env?.['MODE']).toBe('two');
  });

  it('prune removes the jobs of a deleted workflow, never a job without ownership meta, an opted-out workflow or a dispatched child, and refuses to remove everything', async () => {
    const dir = await tempRepo({ 'alpha.yaml': alpha('echo one'), 'beta.yaml': beta, 'kept.yaml': kept });
    const { sync } = await controllerFor(dir, { prune: true });
    await sync();
    // A job registered by hand (no ownership meta), and a running dispatch of beta's job.
    const hand = structuredClone(await nomad.readJob('caravan-beta-step')) as NomadJob;
    hand.ID = 'caravan-hand-made';
    hand.Name = 'caravan-hand-made';
    hand.Meta = {};
    await nomad.registerJob(hand);
    const child = await nomad.dispatchJob('caravan-beta-step', new TextEncoder().encode('{}'), { caravan_run: 'r1', caravan_attempt: '1' }, 'prune-test');
    const r = await (async () => {
      await commit(dir, { 'workflows/beta.yaml': null, 'workflows/kept.yaml': null }, 'remove beta and kept');
      return sync();
    })();
    expect(r.jobs.pruned).toEqual(['caravan-beta-step']);
    expect((await nomad.readJob('caravan-beta-step')).Stop).toBe(true);
    expect((await nomad.readJob('caravan-kept-step')).Stop).toBe(false);
    expect((await nomad.readJob('caravan-hand-made')).Stop).toBe(false);
    expect((await nomad.readJob(child.DispatchedJobID)).Stop).toBe(false);

    await commit(dir, { 'workflows/alpha.yaml': null, 'workflows/.keep': '' }, 'remove every workflow');
    const all = await sync();
    expect(all.jobs.pruned).toEqual([]);
    expect(all.prune.refused).toMatch(/has no workflows and would prune all 2 of this repository's jobs; refused/);
    expect((await nomad.readJob('caravan-alpha-build')).Stop).toBe(false);
  });

  it('a job with a desired ID but no ownership meta is left alone and reported', async () => {
    const dir = await tempRepo({ 'beta.yaml': beta });
    const { sync } = await controllerFor(dir);
    await sync();
    const job = await nomad.readJob('caravan-beta-step');
    await nomad.deregisterJob('caravan-beta-step', true);
    await nomad.registerJob({ ...job, Meta: { owner: 'someone else' } });
    await commit(dir, { 'workflows/beta.yaml': beta.replace('echo beta', 'echo changed') }, 'change');
    const r = await sync();
    expect(r.jobs.failed).toEqual([{ id: 'caravan-beta-step', workflow: 'beta', reason: expect.stringMatching(/is not this controller's/) }]);
    expect((await nomad.readJob('caravan-beta-step')).Meta).toEqual({ owner: 'someone else' });
  });

  it("fencing: a deposed leader's late write to a job a newer leader registered is refused", async () => {
    const files = (text: string): FileResult[] => validateSources([{ file: 'workflows/beta.yaml', bytes: new TextEncoder().encode(text) }]).files;
    const logger = new MemoryLogger();
    const make = (): Reconciler => new Reconciler({ cluster: nomad, repo: '/repo/fenced', controller: 'c', compile: { agentCommand: ['caravan', 'agent'] }, prune: false, selfHeal: false, logger });
    const newer = await make().reconcile('a'.repeat(40), files(beta), { allowPruneAll: false, leaderIndex: 7 });
    expect(newer.jobs.created).toEqual(['caravan-beta-step']);
    expect((await nomad.readJob('caravan-beta-step')).Meta?.[META.leaderIndex]).toBe('7');
    const late = await make().reconcile('b'.repeat(40), files(beta.replace('echo beta', 'echo late')), { allowPruneAll: false, leaderIndex: 6 });
    expect(late.jobs.failed).toEqual([{ id: 'caravan-beta-step', workflow: 'beta', reason: expect.stringMatching(/registered by a newer leader \(lock index 7, this controller's is 6\)/) }]);
    expect((await nomad.readJob('caravan-beta-step')).Meta?.[META.commit]).toBe('a'.repeat(40));
  });
});
