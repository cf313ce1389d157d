import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { packageRoot } from '../../engine/packageRoot.js';
import { repoWith, workflow } from '../harness/gitRepo.js';
import { freePort, hasBinary, NatsServer } from '../harness/natsServer.js';
import { until } from '../harness/until.js';
import { percentile, round } from './stats.js';

/** Subscribers of the one run (SSE_SUBSCRIBERS); 1,000 by default, the controller's default limit. */
const SUBSCRIBERS = Number(process.env['SSE_SUBSCRIBERS'] ?? 1000);
/** `true` tasks of the run (SSE_TASKS). */
const TASKS = Number(process.env['SSE_TASKS'] ?? 1000);
/** Buses to measure (SSE_BUS=memory|nats|both); both when a nats-server is on PATH. */
const BUSES = (process.env['SSE_BUS'] ?? (hasBinary('nats-server') ? 'both' : 'memory')) === 'both' ? ['memory', 'nats'] as const : [process.env['SSE_BUS'] as 'memory' | 'nats'];
const TOKEN = 'sse-bench-operator-token-0123456789';

/**
 * SSE fan-out through a real controller process (`caravan controller --listen`): SUBSCRIBERS
 * clients of one run of TASKS `true` tasks. The run starts with a gate task (sleep 2) so
 * that every subscriber is connected before the work; delivery latency is the event's
 * time in the engine (`at`) to its receipt by a subscriber, counted for events recorded
 * after that subscriber's stream opened (earlier ones are replay, not delivery). Reported
 * beside the controller's peak RSS. Subscribers run in this process, the controller in its own.
 */
export async function sseBench(): Promise<object> {
  const results: object[] = [];
  for (const bus of BUSES) results.push(await once(bus));
  return { subscribers: SUBSCRIBERS, tasks: TASKS, results };
}

async function once(bus: 'memory' | 'nats'): Promise<object> {
  const tasks = ['    - { name: gate, run: "sleep 2" }', ...Array.from({ length: TASKS }, (_, i) => `    - { name: t${i}, needs: [gate], run: "true" }`)];
  const dir = await repoWith({ 'sse.yaml': workflow('sse', `  tasks:\n${tasks.join('\n')}\n`) });
  const nats = bus === 'nats' ? await NatsServer.start() : undefined;
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const ctl = spawn(process.execPath, [join(packageRoot(), 'bin', 'caravan.js'), 'controller', '--repo', dir, '--listen', `127.0.0.1:${port}`, '--open-reads', '--api-rate-limit', '1000000', '--interval', '1h', '--bus', bus], {
    env: { ...process.env, CARAVAN_API_TOKEN: TOKEN, ...(nats !== undefined ? { NATS_URL: nats.url } : {}) },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  ctl.stderr!.on('data', (c: Buffer) => { stderr = (stderr + c.toString()).slice(-4000); });
  try {
    await until(() => `the controller at ${url}: ${stderr}`, async () => (await fetch(`${url}/ready`).catch(() => undefined))?.ok === true, 60_000, 100);
    const res = await fetch(`${url}/api/v1/workflows/sse/runs`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: '{}' });
    if (res.status !== 201) throw new Error(`starting the run: ${res.status} ${await res.text()}`);
    const { runId } = (await res.json()) as { runId: string };
    const latencies: number[] = [];
    let received = 0;
    let incomplete = 0;
    const began = Date.now();
    const subs = Array.from({ length: SUBSCRIBERS }, () => subscribe(`${url}/api/v1/runs/${runId}/events`, latencies));
    const counts = await Promise.all(subs);
    const wallS = (Date.now() - began) / 1000;
    const rss = memoryOf(ctl);
    const most = Math.max(...counts.map((c) => c.events));
    for (const c of counts) {
      received += c.events;
      if (!c.ended || c.events !== most) incomplete++;
    }
    latencies.sort((a, b) => a - b);
    return {
      bus,
      subscribers: SUBSCRIBERS,
      tasks: TASKS,
      eventsPerSubscriber: most,
      incompleteSubscribers: incomplete,
      deliveries: received,
      'latency p50 ms': round(percentile(latencies, 50)),
      'latency p99 ms': round(percentile(latencies, 99)),
      'latency max ms': round(latencies[latencies.length - 1] ?? 0),
      'controller RSS MB': rss.rssMb,
      'controller peak RSS MB': rss.peakMb,
      'wall s': round(wallS),
    };
  } finally {
    ctl.kill('SIGTERM');
    await new Promise((r) => (ctl.exitCode !== null ? r(undefined) : ctl.once('exit', r)));
    await nats?.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** One subscriber to the end of its stream: how many events it got, and the latencies of live ones. */
function subscribe(url: string, latencies: number[]): Promise<{ events: number; ended: boolean }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { accept: 'text/event-stream' } }, (res) => {
      if (res.statusCode !== 200) {
        reject(new Error(`subscriber refused: ${res.statusCode}`));
        res.resume();
        return;
      }
      const openedAt = Date.now();
      let buffer = '';
      let events = 0;
      let ended = false;
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        const now = Date.now();
        buffer += chunk;
        let cut: number;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          if (block.startsWith(':')) continue;
          if (block.includes('event: end\n')) {
            ended = true;
            continue;
          }
          events++;
          const at = /"at":(\d+)/.exec(block);
          if (at !== null && Number(at[1]) >= openedAt) latencies.push(now - Number(at[1]));
        }
      });
      res.on('end', () => resolve({ events, ended }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** The controller's resident memory now and at its peak (VmHWM), in MB. */
function memoryOf(p: ChildProcess): { rssMb: number; peakMb: number } {
  const status = readFileSync(`/proc/${p.pid}/status`, 'utf8');
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
  return { rssMb: round(kb('VmRSS') / 1024), peakMb: round(kb('VmHWM') / 1024) };
}
