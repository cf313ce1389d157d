import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stopProcess, waitForPort } from '../../engine/dev/serverProcess.js';
import { freePort, requireServerBinary } from './natsServer.js';
import { until } from './until.js';

const INSTALL = 'apt-get install -y prometheus (Debian ships prometheus and promtool; .ci/run installs them)';

/**
 * The prometheus binary, or undefined (with a note) when it is missing outside CI. Under
 * CI=true a missing binary throws: the metrics tests must not pass by being skipped.
 */
export function prometheusBinary(): string | undefined {
  return requireServerBinary('prometheus', INSTALL);
}

/** The promtool binary, under the same rule as prometheusBinary(). */
export function promtoolBinary(): string | undefined {
  return requireServerBinary('promtool', INSTALL);
}

/** Runs promtool with `args` (stdin from `input`); its exit code and both outputs. */
export function promtool(bin: string, args: string[], input?: string): { code: number; out: string; err: string } {
  const r = spawnSync(bin, args, { encoding: 'utf8', timeout: 60_000, ...(input !== undefined ? { input } : {}) });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

/** One series of an instant query's answer. */
export interface PromSample {
  metric: Record<string, string>;
  value: [number, string];
}

/**
 * A real Prometheus on a free loopback port, scraping `targets` (host:port) every second,
 * its configuration and its storage in a temporary directory removed by close().
 */
export class PrometheusServer {
  private output = '';

  private constructor(private readonly proc: ChildProcess, readonly port: number, private readonly dir: string) {}

  static async start(bin: string, targets: string[], metricsPath = '/metrics'): Promise<PrometheusServer> {
    const dir = await mkdtemp(join(tmpdir(), 'caravan-prometheus-'));
    const config = [
      'global:',
      '  scrape_interval: 1s',
      '  evaluation_interval: 1s',
      'scrape_configs:',
      '  - job_name: caravan',
      `    metrics_path: ${metricsPath}`,
      '    static_configs:',
      `      - targets: [${targets.map((t) => JSON.stringify(t)).join(', ')}]`,
      '',
    ].join('\n');
    await writeFile(join(dir, 'prometheus.yml'), config);
    const port = await freePort();
    const proc = spawn(bin, [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    const s = new PrometheusServer(proc, port, dir);
    proc.stdout!.on('data', (c: Buffer) => { s.output = (s.output + c.toString()).slice(-8000); });
    proc.stderr!.on('data', (c: Buffer) => { s.output = (s.output + c.toString()).slice(-8000); });
    try {
      await waitForPort(port, 30_000, proc, 'prometheus');
      // The port opens before the TSDB is ready; queries answer 503 until then.
      await until(() => `prometheus to be ready\n${s.output}`, async () => (await fetch(`${s.url}/-/ready`).catch(() => undefined))?.ok === true, 30_000, 100);
    } catch (e) {
      await s.close();
      throw e;
    }
    return s;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** What the server printed last (for a failure's message). */
  get log(): string {
    return this.output;
  }

  /**
   * An instant query through the HTTP API. Answers `{ok: false, error}` when Prometheus
   * refuses the expression (a parse or execution error), instead of throwing.
   */
  async query(expr: string): Promise<{ ok: true; result: PromSample[] } | { ok: false; error: string }> {
    const res = await fetch(`${this.url}/api/v1/query?${new URLSearchParams({ query: expr })}`);
    const body = (await res.json()) as { status: string; error?: string; errorType?: string; data?: { resultType: string; result: PromSample[] | [number, string] } };
    if (body.status !== 'success') return { ok: false, error: `${body.errorType ?? res.status}: ${body.error ?? 'unknown error'}` };
    const data = body.data!;
    // A scalar expression answers one value, not a list of series.
    const result = data.resultType === 'scalar' ? [{ metric: {}, value: data.result as [number, string] }] : (data.result as PromSample[]);
    return { ok: true, result };
  }

  /** The scrape targets' health as Prometheus sees them. */
  async targets(): Promise<Array<{ health: string; lastError: string; scrapeUrl: string }>> {
    const res = await fetch(`${this.url}/api/v1/targets`);
    const body = (await res.json()) as { data: { activeTargets: Array<{ health: string; lastError: string; scrapeUrl: string }> } };
    return body.data.activeTargets;
  }

  /** Stops the server (SIGTERM, which it handles by flushing and exiting) and removes its directory. */
  async close(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) await stopProcess(this.proc, 'SIGTERM', 10_000);
    await rm(this.dir, { recursive: true, force: true });
  }
}
