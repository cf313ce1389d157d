import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fastify } from 'fastify';
import { ApiTokens } from '../../engine/api/ApiTokens.js';
import { startController } from '../../engine/api/startController.js';
import { noopLogger } from '../../engine/run/Logger.js';
import type { RunSnapshot } from '../../engine/run/RunSnapshot.js';
import { median, round } from './stats.js';

const exec = promisify(execFile);

/** Seconds of load per route and mode, split over the rounds (default 30: the figure). */
const SECONDS = Number(process.env['API_BENCH_S'] ?? 30);
/** Windows per route and mode; routes alternate window by window, so drift hits both alike. */
const ROUNDS = Number(process.env['API_BENCH_ROUNDS'] ?? 3);
/** Tasks of the run that is going on in the controller while it is read. */
const TASKS = Number(process.env['API_BENCH_TASKS'] ?? 1000);
const CONNECTIONS = Number(process.env['API_BENCH_CONNECTIONS'] ?? 10);
/** The fixed rate at which the latency target holds. */
const RATE = 1000;
const TOKEN = 'api-bench-token-0123456789abcdef';

export interface ApiRow {
  measure: string;
  value: number;
  unit: string;
  target: string;
  met: boolean | '';
}

interface Window {
  route: 'api' | 'bare';
  mode: 'max' | 'rate';
  requestsPerS: number;
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  errors: number;
  /** Tasks of the run still running when the window ended. */
  running: number;
}

export interface ApiResult {
  suite: 'api';
  results: ApiRow[];
  windows: Window[];
  setup: { tasks: number; runningAtStart: number; snapshotBytes: number; secondsPerRouteAndMode: number; rounds: number; connections: number };
}

/**
 * `npm run bench -- api`: GET /api/v1/runs/{id} of a run of 1,000 tasks that are running
 * in the controller (embedded default: each task a `sleep` on this machine), loaded by
 * autocannon from a second process on loopback, beside a bare fastify route in the same
 * process returning the same bytes. Two modes per route: as fast as it goes (throughput),
 * and at a fixed 1,000 requests/s (latency at the target's rate).
 */
export async function apiBench(): Promise<ApiResult> {
  const windowS = Math.max(1, Math.round(SECONDS / ROUNDS));
  const dir = await mkdtemp(join(tmpdir(), 'caravan-api-bench-'));
  const bare = fastify({ logger: false });
  let ctl: Awaited<ReturnType<typeof startController>> | undefined;
  let runId: string | undefined;
  try {
    await exec('git', ['init', '-q', '-b', 'main'], { cwd: dir });
    await mkdir(join(dir, 'workflows'));
    // Every task sleeps past the end of the measurement: all of them run throughout it.
    const sleepS = Math.ceil(SECONDS * 4 * 1.5) + 120;
    const tasks = Array.from({ length: TASKS }, (_, i) => `    - { name: t${i}, run: "sleep ${sleepS}" }`).join('\n');
    await writeFile(join(dir, 'workflows', 'load.yaml'), `apiVersion: caravan/v1\nkind: Workflow\nmetadata:\n  name: load\nspec:\n  defaults: { timeout: 2h }\n  tasks:\n${tasks}\n`);
    await exec('git', ['add', '-A'], { cwd: dir });
    await exec('git', ['-c', 'user.name=Bench', '-c', 'user.email=bench@example.com', '-c', 'commit.gpgsign=false', 'commit', '-q', '-m', 'load'], { cwd: dir });
    ctl = await startController({
      repoDir: dir, intervalMs: 3_600_000, logger: noopLogger, listen: { host: '127.0.0.1', port: 0 },
      // The per-token limit (600 a minute by default) would answer the load with 429s.
      api: { tokens: new ApiTokens([{ name: 'bench', token: TOKEN, roles: ['viewer', 'operator'] }]), rateLimit: { max: 1_000_000_000, windowMs: 60_000 } },
      app: { parallelism: TASKS },
    });
    const base = ctl.server!.url;
    const auth = { authorization: `Bearer ${TOKEN}` };
    const res = await fetch(`${base}/api/v1/workflows/load/runs`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{}' });
    if (res.status !== 201) throw new Error(`starting the run: ${res.status} ${await res.text()}`);
    runId = ((await res.json()) as { runId: string }).runId;
    const apiUrl = `${base}/api/v1/runs/${runId}`;
    const read = async (): Promise<{ bytes: Buffer; running: number }> => {
      const r = await fetch(apiUrl, { headers: auth });
      const bytes = Buffer.from(await r.arrayBuffer());
      const run = (JSON.parse(bytes.toString('utf8')) as { run: RunSnapshot }).run;
      return { bytes, running: Object.values(run.tasks).filter((t) => t.status === 'running').length };
    };
    const deadline = Date.now() + 300_000;
    let state = await read();
    while (state.running < TASKS && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      state = await read();
    }
    const runningAtStart = state.running;
    process.stderr.write(`api bench: ${runningAtStart} of ${TASKS} tasks running; ${state.bytes.length} bytes per answer; ${ROUNDS} rounds of ${windowS} s per route and mode\n`);

    let bareBytes = state.bytes;
    bare.get('/bare', async (_req, reply) => reply.header('content-type', 'application/json; charset=utf-8').send(bareBytes));
    await bare.listen({ host: '127.0.0.1', port: 0 });
    const bareUrl = `http://127.0.0.1:${(bare.server.address() as { port: number }).port}/bare`;

    const windows: Window[] = [];
    for (let n = 0; n < ROUNDS; n++) {
      for (const mode of ['max', 'rate'] as const) {
        const order: Array<'api' | 'bare'> = n % 2 === 0 ? ['api', 'bare'] : ['bare', 'api'];
        for (const route of order) {
          // The bare route answers with what the API answers now: the same bytes, byte for byte.
          bareBytes = (await read()).bytes;
          const r = await autocannon(route === 'api' ? apiUrl : bareUrl, windowS, mode === 'rate' ? RATE : undefined);
          windows.push({ route, mode, ...r, running: (await read()).running });
          process.stderr.write(`api bench: round ${n + 1} ${mode} ${route}: ${round(r.requestsPerS, 0)} req/s, p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms\n`);
        }
      }
    }
    return { suite: 'api', results: rows(windows), windows, setup: { tasks: TASKS, runningAtStart, snapshotBytes: state.bytes.length, secondsPerRouteAndMode: windowS * ROUNDS, rounds: ROUNDS, connections: CONNECTIONS } };
  } finally {
    await bare.close();
    if (ctl !== undefined) {
      if (runId !== undefined) {
        // Cancelled, and over, before the controller stops: no sleeps are left behind.
        const url = `${ctl.server!.url}/api/v1/runs/${runId}`;
        const headers = { authorization: `Bearer ${TOKEN}` };
        await fetch(`${url}/cancel`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: '{}' }).catch(() => undefined);
        for (let i = 0; i < 600; i++) {
          const d = (await (await fetch(url, { headers })).json().catch(() => ({}))) as { run?: RunSnapshot; live?: boolean };
          if (d.run !== undefined && d.run.status !== 'running' && d.run.status !== 'paused' && d.live === false) break;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      await ctl.stop();
    }
    await rm(dir, { recursive: true, force: true });
  }
}

function rows(windows: Window[]): ApiRow[] {
  const of = (route: 'api' | 'bare', mode: 'max' | 'rate'): Window[] => windows.filter((w) => w.route === route && w.mode === mode);
  const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const apiMax = mean(of('api', 'max').map((w) => w.requestsPerS));
  const bareMax = mean(of('bare', 'max').map((w) => w.requestsPerS));
  // The worst window's p99: a target met on average but missed in one window is missed.
  const apiP99 = Math.max(...of('api', 'rate').map((w) => w.p99Ms));
  const bareP99 = Math.max(...of('bare', 'rate').map((w) => w.p99Ms));
  const apiRate = mean(of('api', 'rate').map((w) => w.requestsPerS));
  const failures = windows.filter((w) => w.route === 'api').reduce((n, w) => n + w.non2xx + w.errors, 0);
  return [
    { measure: 'GET /runs/{id}: requests/s, as fast as it goes', value: round(apiMax, 0), unit: 'req/s', target: `>= half the bare route's (${round(bareMax / 2, 0)})`, met: apiMax >= bareMax / 2 },
    { measure: 'bare fastify route, same bytes: requests/s', value: round(bareMax, 0), unit: 'req/s', target: '', met: '' },
    { measure: 'GET /runs/{id}: p50 as fast as it goes', value: median(of('api', 'max').map((w) => w.p50Ms)), unit: 'ms', target: '', met: '' },
    { measure: `GET /runs/{id}: requests/s offered ${RATE}/s`, value: round(apiRate, 0), unit: 'req/s', target: `${RATE}`, met: apiRate >= RATE * 0.95 },
    { measure: `GET /runs/{id}: p50 at ${RATE}/s`, value: median(of('api', 'rate').map((w) => w.p50Ms)), unit: 'ms', target: '', met: '' },
    { measure: `GET /runs/{id}: p99 at ${RATE}/s (worst window)`, value: apiP99, unit: 'ms', target: '< 50', met: apiP99 < 50 },
    { measure: `bare route: p99 at ${RATE}/s (worst window)`, value: bareP99, unit: 'ms', target: '', met: '' },
    { measure: 'GET /runs/{id}: non-2xx answers and errors', value: failures, unit: 'count', target: '0', met: failures === 0 },
    { measure: 'tasks running at the end (of those started)', value: Math.min(...windows.map((w) => w.running)), unit: 'tasks', target: `${TASKS}`, met: Math.min(...windows.map((w) => w.running)) === TASKS },
  ];
}

interface Load {
  requestsPerS: number;
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  errors: number;
}

/** autocannon in a process of its own, so the load generator does not share the server's event loop. */
async function autocannon(url: string, seconds: number, rate: number | undefined): Promise<Load> {
  const bin = createRequire(import.meta.url).resolve('autocannon/autocannon.js');
  const args = [bin, '-j', '-n', '-c', String(CONNECTIONS), '-d', String(seconds), '-H', `authorization=Bearer ${TOKEN}`, ...(rate !== undefined ? ['-R', String(rate)] : []), url];
  const { stdout } = await exec(process.execPath, args, { maxBuffer: 16 * 1024 * 1024 });
  const r = JSON.parse(stdout) as { requests: { average: number }; latency: { p50: number; p99: number }; non2xx: number; errors: number; timeouts: number };
  return { requestsPerS: r.requests.average, p50Ms: r.latency.p50, p99Ms: r.latency.p99, non2xx: r.non2xx, errors: r.errors + r.timeouts };
}
