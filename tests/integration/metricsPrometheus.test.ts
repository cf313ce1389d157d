import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, type RunningController } from '../../engine/api/startController.js';
import { MemoryLogger } from '../../engine/run/Logger.js';
import { git, repoWith, workflow } from '../harness/gitRepo.js';
import { PrometheusServer, prometheusBinary, promtool, promtoolBinary } from '../harness/prometheusServer.js';
import { until } from '../harness/until.js';

// Outside CI a missing binary skips these tests with a note; under CI=true it throws here.
const promtoolBin = promtoolBinary();
const prometheusBin = prometheusBinary();
const docs = join(import.meta.dirname, '..', '..', 'docs');

const passing = workflow('built', '  triggers:\n    - push: { paths: ["src/**"] }\n  tasks:\n    - { name: compile, run: "true" }\n    - { name: link, run: "true", needs: [compile] }\n');
const failing = workflow('broken', '  triggers:\n    - push: { paths: ["src/**"] }\n  tasks:\n    - { name: fail, run: "exit 3" }\n');

/** The value of one sample of the exposition text, by its name and exact label set. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  const want = Object.entries(labels);
  for (const line of text.split('\n')) {
    const m = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const got = [...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]);
    if (got.length === want.length && want.every(([k, v]) => got.some(([gk, gv]) => gk === k && gv === v))) return Number(m[3]);
  }
  return undefined;
}

/** Every panel's PromQL, with Grafana's variables put as a query over all values would have them. */
function panelQueries(dashboard: unknown): Array<{ panel: string; expr: string }> {
  const out: Array<{ panel: string; expr: string }> = [];
  const visit = (panels: unknown[]): void => {
    for (const p of panels as Array<{ title: string; targets?: Array<{ expr?: string }>; panels?: unknown[] }>) {
      for (const t of p.targets ?? []) {
        if (t.expr === undefined) continue;
        const expr = t.expr
          .replace(/\$__rate_interval|\$__interval|\$__range/g, '1m')
          .replace(/\$\{(\w+)(?::\w+)?\}|\$(\w+)/g, '.*');
        out.push({ panel: p.title, expr });
      }
      visit(p.panels ?? []);
    }
  };
  visit((dashboard as { panels: unknown[] }).panels);
  return out;
}

describe.runIf(promtoolBin !== undefined && prometheusBin !== undefined)('the controller\'s /metrics, checked by promtool and scraped by a real Prometheus', () => {
  let dir: string;
  let ctl: RunningController;
  let prometheus: PrometheusServer | undefined;
  let metricsUrl: string;

  beforeAll(async () => {
    dir = await repoWith({ 'built.yaml': passing, 'broken.yaml': failing });
    ctl = await startController({ repoDir: dir, intervalMs: 3_600_000, listen: { host: '127.0.0.1', port: 0 }, logger: new MemoryLogger() });
    metricsUrl = `${ctl.server!.url}/metrics`;
  }, 60_000);

  afterAll(async () => {
    await prometheus?.close();
    await ctl?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('serves runs and attempts with real values after a run, and passes promtool check metrics without a warning', async () => {
    // A push that both workflows' triggers match: one run succeeds, one fails.
    await mkdir(join(dir, 'src'), { recursive: true });
    await writeFile(join(dir, 'src', 'main.c'), 'int main(void) { return 0; }\n');
    await git(dir, 'add', '-A');
    await git(dir, 'commit', '-q', '-m', 'change the source');
    await ctl.controller.syncNow('test');
    let text = '';
    await until('both pushed runs to be counted as finished', async () => {
      text = await (await fetch(metricsUrl)).text();
      return sample(text, 'caravan_runs_finished_total', { workflow: 'built', status: 'succeeded' }) === 1 && sample(text, 'caravan_runs_finished_total', { workflow: 'broken', status: 'failed' }) === 1;
    });
    const res = await fetch(metricsUrl);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    text = await res.text();
    expect(sample(text, 'caravan_runs_started_total', { workflow: 'built', trigger: 'push' })).toBe(1);
    expect(sample(text, 'caravan_task_attempts_total', { workflow: 'built', status: 'succeeded' })).toBe(2);
    expect(sample(text, 'caravan_task_attempts_total', { workflow: 'broken', status: 'failed' })).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'caravan_task_duration_seconds_count', { workflow: 'built' })).toBe(2);
    expect(sample(text, 'caravan_coordination_seconds_count', {})).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'caravan_leader', {})).toBe(1);
    expect(sample(text, 'caravan_sync_duration_seconds_count', {})).toBeGreaterThanOrEqual(2);
    expect(sample(text, 'caravan_sync_lag_seconds', {})).toBeGreaterThan(0);
    expect(sample(text, 'caravan_checkpoint_writes_total', { outcome: 'written' })).toBeGreaterThanOrEqual(2);
    expect(text).toMatch(/^process_resident_memory_bytes \d+/m);
    expect(text).toMatch(/^nodejs_eventloop_lag_p99_seconds /m);
    // No run id anywhere in the labels.
    for (const r of ctl.controller.status().lastSync!.runs) expect(text).not.toContain(r.runId);

    const check = promtool(promtoolBin!, ['check', 'metrics'], text);
    expect({ code: check.code, out: check.out, err: check.err }).toEqual({ code: 0, out: '', err: '' });
  });

  it('is scraped by Prometheus on loopback: caravan_runs_finished_total is queryable, and every Grafana panel query runs', async () => {
    const target = new URL(ctl.server!.url).host;
    prometheus = await PrometheusServer.start(prometheusBin!, [target]);
    const p = prometheus;
    let finished: Array<{ metric: Record<string, string>; value: [number, string] }> = [];
    await until(() => `Prometheus to scrape caravan_runs_finished_total (targets: ${JSON.stringify(p.log.slice(-500))})`, async () => {
      const r = await p.query('caravan_runs_finished_total');
      finished = r.ok ? r.result : [];
      return finished.length >= 2;
    });
    const byLabels = new Map(finished.map((s) => [`${s.metric['workflow']}/${s.metric['status']}`, Number(s.value[1])]));
    expect(byLabels.get('built/succeeded')).toBe(1);
    expect(byLabels.get('broken/failed')).toBe(1);
    expect((await p.targets()).map((t) => [t.health, t.lastError])).toEqual([['up', '']]);

    const dashboard = JSON.parse(await readFile(join(docs, 'grafana', 'caravan.json'), 'utf8')) as unknown;
    const queries = panelQueries(dashboard);
    expect(queries.length).toBeGreaterThanOrEqual(20);
    const failures: string[] = [];
    for (const { panel, expr } of queries) {
      const r = await p.query(expr);
      if (!r.ok) failures.push(`${panel}: ${expr}: ${r.error}`);
    }
    expect(failures).toEqual([]);
    // The leader panel shows this controller.
    const leader = await p.query('sum(caravan_leader)');
    expect(leader.ok && leader.result.map((s) => s.value[1])).toEqual(['1']);
  });
});

describe.runIf(promtoolBin !== undefined)('the alert rules in docs/prometheus', () => {
  it('pass promtool check rules and the unit tests of alerts.test.yml', () => {
    const check = promtool(promtoolBin!, ['check', 'rules', join(docs, 'prometheus', 'alerts.yml')]);
    expect(check.code, check.out + check.err).toBe(0);
    expect(check.out).toContain('SUCCESS: 4 rules found');
    const test = promtool(promtoolBin!, ['test', 'rules', join(docs, 'prometheus', 'alerts.test.yml')]);
    expect(test.code, test.out + test.err).toBe(0);
    expect(test.out).toContain('SUCCESS');
  });

  it('promtool test rules fails when an expected alert does not fire (the test can fail)', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'caravan-alerts-'));
    try {
      // The same tests against rules whose threshold no input reaches.
      const rules = (await readFile(join(docs, 'prometheus', 'alerts.yml'), 'utf8')).replace('> 0.5', '> 5');
      await writeFile(join(tmp, 'alerts.yml'), rules);
      await writeFile(join(tmp, 'alerts.test.yml'), await readFile(join(docs, 'prometheus', 'alerts.test.yml'), 'utf8'));
      const test = promtool(promtoolBin!, ['test', 'rules', join(tmp, 'alerts.test.yml')]);
      expect(test.code).not.toBe(0);
      expect(test.out + test.err).toContain('CaravanCoordinationSlow');
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });
});
