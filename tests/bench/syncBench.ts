import { execFile } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CaravanApp } from '../../engine/app/CaravanApp.js';
import type { NomadJob } from '../../engine/compile/NomadJob.js';
import { Controller, type SyncReport } from '../../engine/controller/Controller.js';
import { ControllerServer, WEBHOOK_PATH } from '../../engine/api/ControllerServer.js';
import { META, Reconciler, type ClusterJobs } from '../../engine/controller/Reconciler.js';
import { NomadClient, type NomadJobStub, type PlanResult, type RegisterResult } from '../../engine/nomad/NomadClient.js';
import { noopLogger } from '../../engine/run/Logger.js';
import { validateSources } from '../../engine/spec/validateWorkflows.js';
import { NomadAgent, requireNomad } from '../harness/nomadAgent.js';
import { generateWorkflow } from './generateWorkflow.js';
import { median, percentile, round } from './stats.js';

const exec = promisify(execFile);

/** Changes timed per repository size; with 20, "p99" is the slowest of them. */
const CHANGES = Number(process.env['SYNC_CHANGES'] ?? 20);
/** Seconds the controller idles on a 5 s interval while its CPU is measured. */
const IDLE_S = Number(process.env['SYNC_IDLE_S'] ?? 30);
const IDLE_INTERVAL_MS = 5_000;
const SIZES = [10, 200] as const;
const SECRET = 'sync-bench-secret';
/** Tasks per generated workflow: each is one Nomad job. */
const TASKS = 2;

export interface SyncRow {
  measure: string;
  workflows: number;
  value: number;
  unit: string;
  target: string;
  met: boolean | '';
}

export interface SyncResult {
  suite: 'sync';
  results: SyncRow[];
  latency: Record<string, LatencyFigures>;
  initial: InitialFigures;
  idle: IdleFigures;
}

interface LatencyFigures {
  workflows: number;
  jobs: number;
  changes: number;
  /** POST sent to Nomad answering with the job at the new commit. */
  registered_ms: number[];
  registered_p50_ms: number;
  registered_p99_ms: number;
  /** POST sent to the 202. */
  ack_p50_ms: number;
  /** POST sent to the controller's onSync (after the audit record on Git). */
  on_sync_p50_ms: number;
  /** The sync's own durationMs (from its start to the end of the reconcile). */
  sync_duration_p50_ms: number;
  /** Nomad calls per change-sync, by method, and the time spent waiting on them (the first change's). */
  nomad_calls_per_sync: Record<string, number>;
  nomad_ms_per_sync: Record<string, number>;
}

interface InitialFigures {
  workflows: number;
  jobs: number;
  sync_s: number;
  /** Jobs created / the whole first sync (validate, compile, list, register, prune check, audit record). */
  controller_jobs_per_s: number;
  /** Jobs created / first register call's start to last register call's end. */
  controller_register_phase_jobs_per_s: number;
  before_first_register_ms: number;
  after_last_register_ms: number;
  /** The same stamped jobs, registered to fresh IDs with NomadClient.registerJob (CAS index 0, as the reconciler does): just before the controller's first sync, and just after it. */
  nomad_1_in_flight_jobs_per_s: number[];
  nomad_8_in_flight_jobs_per_s: number;
  ratio_to_nomad_1: number;
  register_phase_ratio_to_nomad_1: number;
  /** A later sync with the branch unchanged and Nomad's job index moved (here by the raw registrations): validate + compile all, register none. */
  resync_nothing_to_do_ms: number;
  nomad_calls_initial: Record<string, number>;
  nomad_ms_initial: Record<string, number>;
}

interface IdleFigures {
  workflows: number;
  interval_ms: number;
  wall_s: number;
  cpu_percent_of_core: number;
  /** CPU of the whole process over the window, per tick: an upper bound on one tick's cost. */
  cpu_ms_per_tick: number;
  /** Interval ticks seen (each is one GET /v1/jobs, then nothing: neither branch nor cluster moved). */
  ticks: number;
  syncs_with_work: number;
  rss_mb: number;
  rss_how: string;
  heap_used_mb: number;
  heap_total_mb: number;
  external_mb: number;
  /** The process before the benchmark did anything (Node, tsx, the modules loaded), after a GC when exposed. */
  rss_at_start_mb: number;
  peak_rss_mb: number;
}

/**
 * The GitOps controller against a real `nomad agent -dev`: (1) time from a signed GitHub push
 * webhook to Nomad holding the changed job at the new commit, for one-workflow changes in
 * repositories of 10 and 200 workflows; (2) the first sync's registration rate beside
 * Nomad's own rate for the same jobs at 1 and 8 requests in flight; (3) the controller's CPU
 * and RSS while idle on a 5 s interval. The controller is built as in
 * tests/integration/controllerSync.test.ts and runs in this process, with a ControllerServer
 * nudging it on the webhook.
 */
export async function syncBench(): Promise<SyncResult> {
  const bin = requireNomad();
  if (bin === undefined) throw new Error('nomad is required (bash scripts/build-nomad.sh)');
  (globalThis as { gc?: () => void }).gc?.();
  const rssAtStart = round(process.memoryUsage().rss / 2 ** 20, 1);
  const agent = await NomadAgent.start(bin);
  const dirs: string[] = [];
  try {
    const nomad = new NomadClient({ address: agent.address });
    const latency: Record<string, LatencyFigures> = {};
    let initial: InitialFigures | undefined;
    let idle: IdleFigures | undefined;
    for (const size of SIZES) {
      const rig = await Rig.open(nomad, size, 3_600_000);
      dirs.push(rig.dir);
      try {
        // Nomad's own rate for these very jobs, before the controller's first sync (and after it, below).
        const dry = size === 200 ? await stampedJobs(rig) : [];
        const before = size === 200 ? await rawRate(nomad, dry, 'before', 1) : 0;
        const t0 = performance.now();
        await rig.controller.start();
        const initialS = (performance.now() - t0) / 1000;
        const first = rig.reports.at(-1)!.report;
        if (first.jobs.created.length !== size * TASKS) throw new Error(`the first sync created ${first.jobs.created.length} jobs, not ${size * TASKS}: ${JSON.stringify(first.jobs.failed)}`);
        if (size === 200 && canonical(dry) !== canonical(rig.cluster.registered)) throw new Error('the dry run stamped other jobs than the controller registered');
        if (size === 200) initial = await initialFigures(rig, nomad, t0, initialS, before);
        latency[`w${size}`] = await changes(rig, agent.address);
        if (size === 200) idle = await idleFigures(rig, rssAtStart);
      } finally {
        await rig.close();
      }
      // The next repository starts from a cluster without this one's jobs.
      if (size !== SIZES.at(-1)) for (const j of (await nomad.listJobs()).value) await nomad.deregisterJob(j.ID, true);
    }
    const w10 = latency['w10']!;
    const w200 = latency['w200']!;
    const i = initial!;
    const d = idle!;
    const results: SyncRow[] = [
      { measure: 'webhook to job registered, median', workflows: 10, value: w10.registered_p50_ms, unit: 'ms', target: '', met: '' },
      { measure: `webhook to job registered, p99 (max of ${CHANGES})`, workflows: 10, value: w10.registered_p99_ms, unit: 'ms', target: '', met: '' },
      { measure: 'webhook to job registered, median', workflows: 200, value: w200.registered_p50_ms, unit: 'ms', target: '< 1000', met: w200.registered_p50_ms < 1000 },
      { measure: `webhook to job registered, p99 (max of ${CHANGES})`, workflows: 200, value: w200.registered_p99_ms, unit: 'ms', target: '< 1000', met: w200.registered_p99_ms < 1000 },
      { measure: 'first sync, controller (whole sync)', workflows: 200, value: i.controller_jobs_per_s, unit: 'jobs/s', target: '', met: '' },
      { measure: 'first sync, controller (register phase)', workflows: 200, value: i.controller_register_phase_jobs_per_s, unit: 'jobs/s', target: '', met: '' },
      { measure: 'Nomad register, 1 in flight (mean of before and after)', workflows: 200, value: round(mean(i.nomad_1_in_flight_jobs_per_s), 1), unit: 'jobs/s', target: '', met: '' },
      { measure: 'Nomad register, 8 in flight', workflows: 200, value: i.nomad_8_in_flight_jobs_per_s, unit: 'jobs/s', target: '', met: '' },
      { measure: 'controller / Nomad at 1 in flight (whole sync)', workflows: 200, value: i.ratio_to_nomad_1, unit: 'ratio', target: '>= 0.8', met: i.ratio_to_nomad_1 >= 0.8 },
      { measure: 'controller / Nomad at 1 in flight (register phase)', workflows: 200, value: i.register_phase_ratio_to_nomad_1, unit: 'ratio', target: '>= 0.8', met: i.register_phase_ratio_to_nomad_1 >= 0.8 },
      { measure: 'resync with nothing to do (cluster index moved)', workflows: 200, value: i.resync_nothing_to_do_ms, unit: 'ms', target: '', met: '' },
      { measure: `idle CPU, ${IDLE_INTERVAL_MS / 1000} s interval, ${IDLE_S} s`, workflows: 200, value: d.cpu_percent_of_core, unit: '% of a core', target: '< 1', met: d.cpu_percent_of_core < 1 },
      { measure: `RSS of the bench process (${d.rss_how})`, workflows: 200, value: d.rss_mb, unit: 'MB', target: '< 150', met: d.rss_mb < 150 },
    ];
    return { suite: 'sync', results, latency, initial: i, idle: d };
  } finally {
    await agent.close();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  }
}

/** The reconciler's view of Nomad, counting calls and their time; it remembers the jobs it registered. */
class MeteredCluster implements ClusterJobs {
  calls: Record<string, number> = {};
  callMs: Record<string, number> = {};
  registered: NomadJob[] = [];
  firstRegisterAt = 0;
  lastRegisterAt = 0;

  constructor(private readonly inner: NomadClient) {}

  reset(): void {
    this.calls = {};
    this.callMs = {};
    this.registered = [];
    this.firstRegisterAt = 0;
    this.lastRegisterAt = 0;
  }

  private async metered<T>(method: string, call: () => Promise<T>): Promise<T> {
    this.calls[method] = (this.calls[method] ?? 0) + 1;
    const t = performance.now();
    try {
      return await call();
    } finally {
      this.callMs[method] = round((this.callMs[method] ?? 0) + performance.now() - t, 1);
    }
  }

  listJobs(prefix?: string): Promise<{ value: NomadJobStub[]; index: number }> {
    return this.metered('listJobs', () => this.inner.listJobs(prefix));
  }

  readJob(id: string): ReturnType<NomadClient['readJob']> {
    return this.metered('readJob', () => this.inner.readJob(id));
  }

  planJob(job: NomadJob): Promise<PlanResult> {
    return this.metered('planJob', () => this.inner.planJob(job));
  }

  async registerJob(job: NomadJob, modifyIndex?: number): Promise<RegisterResult> {
    if (this.firstRegisterAt === 0) this.firstRegisterAt = performance.now();
    const r = await this.metered('registerJob', () => this.inner.registerJob(job, modifyIndex));
    this.lastRegisterAt = performance.now();
    this.registered.push(job);
    return r;
  }

  deregisterJob(id: string, purge?: boolean): Promise<{ EvalID: string }> {
    return this.metered('deregisterJob', () => this.inner.deregisterJob(id, purge));
  }
}

/** A repository of generated workflows, and a controller on it behind a webhook listener. */
class Rig {
  readonly reports: Array<{ report: SyncReport; at: number }> = [];
  private waiters: Array<(r: { report: SyncReport; at: number }) => void> = [];
  controller!: Controller;
  server!: ControllerServer;

  private constructor(
    readonly dir: string,
    readonly names: string[],
    readonly texts: string[],
    readonly app: CaravanApp,
    readonly cluster: MeteredCluster,
    readonly reconciler: Reconciler,
  ) {}

  static async open(nomad: NomadClient, size: number, intervalMs: number): Promise<Rig> {
    const dir = await mkdtemp(join(tmpdir(), `caravan-syncbench-${size}-`));
    await git(dir, 'init', '-q', '-b', 'main');
    await mkdir(join(dir, 'workflows'));
    const names = Array.from({ length: size }, (_, i) => `w${size}-${String(i).padStart(3, '0')}`);
    const texts = names.map((n) => generateWorkflow(TASKS, n));
    await Promise.all(names.map((n, i) => writeFile(join(dir, 'workflows', `${n}.yaml`), texts[i]!)));
    await git(dir, 'add', '-A');
    await git(dir, 'commit', '-q', '-m', `${size} workflows`);
    const app = new CaravanApp({ repoDir: dir, logger: noopLogger });
    const cluster = new MeteredCluster(nomad);
    const reconciler = new Reconciler({ cluster, repo: dir, controller: 'sync-bench', compile: { agentCommand: ['caravan', 'agent'] }, prune: false, selfHeal: false, logger: noopLogger });
    const rig = new Rig(dir, names, texts, app, cluster, reconciler);
    rig.controller = rig.newController(intervalMs);
    rig.server = await ControllerServer.start({
      host: '127.0.0.1',
      port: 0,
      webhookSecret: SECRET,
      logger: noopLogger,
      readiness: () => Promise.resolve({ ready: true, details: {} }),
      // As startController does: a push to the watched branch nudges the controller of the moment.
      onPush: (push) => {
        if (push.ref === 'refs/heads/main') rig.controller.nudge(`webhook ${push.deliveryId ?? ''}`);
      },
    });
    return rig;
  }

  /** A controller on this rig's app and reconciler (the reconciler remembers what it registered). */
  newController(intervalMs: number): Controller {
    return new Controller({
      app: this.app, repoDir: this.dir, branch: 'main', workflowsDir: 'workflows', intervalMs, reconciler: this.reconciler, identity: 'sync-bench', logger: noopLogger,
      onSync: (report) => {
        const r = { report, at: performance.now() };
        this.reports.push(r);
        for (const w of this.waiters.splice(0)) w(r);
      },
    });
  }

  nextSync(): Promise<{ report: SyncReport; at: number }> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Edits task t0's command of workflow `k` and commits; returns the new head. */
  async change(k: number, rev: number): Promise<string> {
    const text = this.texts[k]!.replace(/--part 0( --rev \d+)?\n/, `--part 0 --rev ${rev}\n`);
    this.texts[k] = text;
    await writeFile(join(this.dir, 'workflows', `${this.names[k]}.yaml`), text);
    await git(this.dir, 'commit', '-q', '-am', `change ${this.names[k]} (${rev})`);
    return (await git(this.dir, 'rev-parse', 'HEAD')).trim();
  }

  async close(): Promise<void> {
    await this.controller.stop();
    await this.server.close();
    await this.app.close();
  }
}

/** CHANGES one-workflow changes, each committed and announced by a signed push webhook. */
async function changes(rig: Rig, nomadAddress: string): Promise<LatencyFigures> {
  const size = rig.names.length;
  const registered: number[] = [];
  const acks: number[] = [];
  const onSync: number[] = [];
  const durations: number[] = [];
  let callsFirst: Record<string, number> = {};
  let msFirst: Record<string, number> = {};
  let before = (await git(rig.dir, 'rev-parse', 'HEAD')).trim();
  for (let c = 0; c < CHANGES; c++) {
    // Spread over the repository, never the same workflow twice in a row.
    const k = (c * 7 + 3) % size;
    const jobId = `caravan-${rig.names[k]}-t0`;
    const head = await rig.change(k, c);
    const { index } = await readJob(nomadAddress, jobId);
    rig.cluster.reset();
    const synced = rig.nextSync();
    // A blocking query on the job: Nomad answers as soon as it changes, without polling load.
    const seen = (async () => {
      let at = index;
      for (;;) {
        const r = await readJob(nomadAddress, jobId, at);
        if (r.job.Meta?.[META.commit] === head) return performance.now();
        at = r.index;
      }
    })();
    // Awaited below; this only keeps a failed webhook from leaving it unhandled.
    seen.catch(() => undefined);
    const body = JSON.stringify({ ref: 'refs/heads/main', before, after: head, repository: { full_name: 'bench/sync' }, pusher: { name: 'bench' } });
    const t0 = performance.now();
    const res = await fetch(`${rig.server.url}${WEBHOOK_PATH}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-github-event': 'push',
        'x-github-delivery': randomUUID(),
        'x-hub-signature-256': `sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}`,
      },
      body,
    });
    const ackAt = performance.now();
    if (res.status !== 202) throw new Error(`the webhook answered ${res.status}: ${await res.text()}`);
    const seenAt = await withTimeout(seen, 30_000, `${jobId} at ${head} in Nomad`);
    const { report, at } = await withTimeout(synced, 30_000, 'the sync report');
    if (report.commit !== head || !report.jobs.updated.includes(jobId) || report.jobs.updated.length !== 1) {
      throw new Error(`the sync of ${head} updated ${JSON.stringify(report.jobs.updated)}, not just ${jobId}`);
    }
    registered.push(seenAt - t0);
    acks.push(ackAt - t0);
    onSync.push(at - t0);
    durations.push(report.durationMs);
    if (c === 0) {
      callsFirst = { ...rig.cluster.calls };
      msFirst = { ...rig.cluster.callMs };
    }
    before = head;
    // The controller is idle again before the next push.
    await sleep(200);
  }
  return {
    workflows: size,
    jobs: size * TASKS,
    changes: CHANGES,
    registered_ms: registered.map((x) => round(x, 1)),
    registered_p50_ms: round(median(registered), 1),
    registered_p99_ms: round(percentile(registered, 99), 1),
    ack_p50_ms: round(median(acks), 1),
    on_sync_p50_ms: round(median(onSync), 1),
    sync_duration_p50_ms: median(durations),
    nomad_calls_per_sync: callsFirst,
    nomad_ms_per_sync: msFirst,
  };
}

/**
 * The first sync's rate (already done by the caller, timed as `initialS`, between two passes
 * of Nomad's own rate for the same stamped jobs one at a time: `one1` before it, one after),
 * then Nomad's rate eight at a time.
 */
async function initialFigures(rig: Rig, nomad: NomadClient, start: number, initialS: number, one1: number): Promise<InitialFigures> {
  const c = rig.cluster;
  const jobs = [...c.registered];
  const n = jobs.length;
  const registerS = (c.lastRegisterAt - c.firstRegisterAt) / 1000;
  const figures = {
    calls: { ...c.calls },
    ms: { ...c.callMs },
    beforeMs: c.firstRegisterAt - start,
    afterMs: rig.reports.at(-1)!.at - c.lastRegisterAt,
  };
  const one2 = await rawRate(nomad, jobs, 'after', 1);
  const eight = await rawRate(nomad, jobs, 'eight', 8);
  // Nomad's job index moved: the next look validates and compiles everything and registers nothing.
  const t = performance.now();
  await rig.controller.syncNow('bench');
  const resyncMs = performance.now() - t;
  const controllerRate = n / initialS;
  const registerRate = n / registerS;
  const nomad1 = mean([one1, one2]);
  return {
    workflows: rig.names.length,
    jobs: n,
    sync_s: round(initialS, 2),
    controller_jobs_per_s: round(controllerRate, 1),
    controller_register_phase_jobs_per_s: round(registerRate, 1),
    before_first_register_ms: round(figures.beforeMs, 0),
    after_last_register_ms: round(figures.afterMs, 0),
    nomad_1_in_flight_jobs_per_s: [one1, one2],
    nomad_8_in_flight_jobs_per_s: eight,
    ratio_to_nomad_1: round(controllerRate / nomad1, 2),
    register_phase_ratio_to_nomad_1: round(registerRate / nomad1, 2),
    resync_nothing_to_do_ms: round(resyncMs, 0),
    nomad_calls_initial: figures.calls,
    nomad_ms_initial: figures.ms,
  };
}

/**
 * A controller on a 5 s interval (sharing the reconciler, so it knows what is registered, as
 * a controller that has synced does), left alone for IDLE_S seconds.
 */
async function idleFigures(rig: Rig, rssAtStart: number): Promise<IdleFigures> {
  await rig.controller.stop();
  rig.controller = rig.newController(IDLE_INTERVAL_MS);
  // Its first look syncs once (it has no cluster index yet); nothing is registered.
  await rig.controller.start();
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const syncsBefore = rig.reports.length;
  rig.cluster.reset();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await sleep(IDLE_S * 1000);
  const cpu = process.cpuUsage(cpu0);
  const wallS = (performance.now() - t0) / 1000;
  const ticks = rig.cluster.calls['listJobs'] ?? 0;
  const syncs = rig.reports.length - syncsBefore;
  gc?.();
  const mem = process.memoryUsage();
  return {
    workflows: rig.names.length,
    interval_ms: IDLE_INTERVAL_MS,
    wall_s: round(wallS, 1),
    cpu_percent_of_core: round(((cpu.user + cpu.system) / 1e6 / wallS) * 100, 2),
    cpu_ms_per_tick: ticks > 0 ? round((cpu.user + cpu.system) / 1000 / ticks, 1) : 0,
    ticks,
    syncs_with_work: syncs,
    rss_mb: round(mem.rss / 2 ** 20, 1),
    rss_how: gc !== undefined ? 'after a full GC' : 'no GC (run with NODE_OPTIONS=--expose-gc)',
    heap_used_mb: round(mem.heapUsed / 2 ** 20, 1),
    heap_total_mb: round(mem.heapTotal / 2 ** 20, 1),
    external_mb: round(mem.external / 2 ** 20, 1),
    rss_at_start_mb: rssAtStart,
    peak_rss_mb: peakRssMb(),
  };
}

/**
 * The jobs the rig's first sync will register, exactly as stamped: the same reconciliation
 * on a cluster that holds nothing and only records what it is asked to register.
 */
async function stampedJobs(rig: Rig): Promise<NomadJob[]> {
  const jobs: NomadJob[] = [];
  const recorder: ClusterJobs = {
    listJobs: () => Promise.resolve({ value: [], index: 0 }),
    registerJob: (job) => {
      jobs.push(job);
      return Promise.resolve({ EvalID: '', JobModifyIndex: 0, Warnings: '' });
    },
    readJob: () => Promise.reject(new Error('not in a dry run')),
    planJob: () => Promise.reject(new Error('not in a dry run')),
    deregisterJob: () => Promise.reject(new Error('not in a dry run')),
  };
  const dry = new Reconciler({ cluster: recorder, repo: rig.dir, controller: 'sync-bench', compile: { agentCommand: ['caravan', 'agent'] }, prune: false, selfHeal: false, logger: noopLogger });
  const head = (await git(rig.dir, 'rev-parse', 'HEAD')).trim();
  const files = validateSources(rig.names.map((n, i) => ({ file: `workflows/${n}.yaml`, bytes: new TextEncoder().encode(rig.texts[i]!) }))).files;
  await dry.reconcile(head, files, { allowPruneAll: false });
  return jobs;
}

/** Jobs per second Nomad registers: `jobs` under fresh IDs, `inFlight` requests at a time, with CAS index 0 as the reconciler sends. */
async function rawRate(nomad: NomadClient, jobs: readonly NomadJob[], tag: string, inFlight: number): Promise<number> {
  const copies = jobs.map((j) => ({ ...j, ID: `bench-${tag}-${j.ID}`, Name: `bench-${tag}-${j.ID}` }));
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (next < copies.length) await nomad.registerJob(copies[next++]!, 0);
  }));
  return round(copies.length / ((performance.now() - t0) / 1000), 1);
}

/** GET /v1/job/<id>, blocking until the job changes after `index` when given. */
async function readJob(address: string, id: string, index?: number): Promise<{ job: NomadJob; index: number }> {
  const res = await fetch(`${address}/v1/job/${encodeURIComponent(id)}${index !== undefined ? `?index=${index}&wait=30s` : ''}`);
  if (!res.ok) throw new Error(`GET /v1/job/${id} answered ${res.status}: ${await res.text()}`);
  return { job: (await res.json()) as NomadJob, index: Number(res.headers.get('x-nomad-index') ?? 0) };
}

async function git(dir: string, ...args: string[]): Promise<string> {
  const r = await exec('git', ['-c', 'user.name=Bench', '-c', 'user.email=bench@example.com', '-c', 'commit.gpgsign=false', ...args], { cwd: dir, maxBuffer: 64 * 1024 * 1024 });
  return r.stdout;
}

function peakRssMb(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m !== null ? round(Number(m[1]) / 1024, 1) : 0;
}

function canonical(jobs: readonly NomadJob[]): string {
  return JSON.stringify([...jobs].sort((a, b) => (a.ID < b.ID ? -1 : 1)));
}

function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}
