import { register as globalRegistry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { noopMetrics, type Metrics } from '../../engine/run/Metrics.js';
import { PromMetrics } from '../../engine/telemetry/PromMetrics.js';

/** The value of one sample of the exposition text, by its name and exact label set. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels);
  for (const line of text.split('\n')) {
    const m = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const got = [...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]);
    if (got.length === want.length && want.every(([k, v]) => got.some(([gk, gv]) => gk === k && gv === v))) return Number(m[3]);
  }
  return undefined;
}

/** Every hook once or more, as an engine, a bus and an audit store would call them. */
function exercise(m: Metrics): void {
  m.runStarted('etl');
  m.runStarted('etl');
  m.runStarted('report');
  m.runFinished('etl', 'succeeded', 42);
  m.runFinished('etl', 'failed', 7200);
  m.attemptFinished('etl', 'succeeded', 0.2);
  m.attemptFinished('etl', 'succeeded', 3);
  m.attemptFinished('etl', 'failed', 0.03);
  m.attemptFinished('etl', 'lost', undefined);
  m.attemptFinished('report', 'cancelled', undefined);
  m.coordinationLatency(0.0007);
  m.coordinationLatency(0.004);
  m.busPublishRetried('caravan-events');
  m.busPublishRetried('caravan-events');
  m.busPublishRetried('caravan-work');
  m.checkpointWritten('written', 0.02);
  m.checkpointWritten('failed', 1.5);
}

describe('PromMetrics', () => {
  it('exposes runs, attempts, durations, coordination, bus retries and checkpoints under caravan_ names', async () => {
    const m = new PromMetrics();
    exercise(m);
    const text = await m.metrics();
    expect(sample(text, 'caravan_runs_started_total', { workflow: 'etl' })).toBe(2);
    expect(sample(text, 'caravan_runs_started_total', { workflow: 'report' })).toBe(1);
    expect(sample(text, 'caravan_runs_finished_total', { workflow: 'etl', status: 'succeeded' })).toBe(1);
    expect(sample(text, 'caravan_runs_finished_total', { workflow: 'etl', status: 'failed' })).toBe(1);
    expect(sample(text, 'caravan_run_duration_seconds_sum', { workflow: 'etl', status: 'failed' })).toBe(7200);
    expect(sample(text, 'caravan_run_duration_seconds_bucket', { workflow: 'etl', status: 'succeeded', le: '60' })).toBe(1);
    expect(sample(text, 'caravan_run_duration_seconds_bucket', { workflow: 'etl', status: 'succeeded', le: '15' })).toBe(0);

    expect(sample(text, 'caravan_attempts_finished_total', { workflow: 'etl', status: 'succeeded' })).toBe(2);
    expect(sample(text, 'caravan_attempts_finished_total', { workflow: 'etl', status: 'lost' })).toBe(1);
    expect(sample(text, 'caravan_attempts_finished_total', { workflow: 'report', status: 'cancelled' })).toBe(1);
    // Attempts that never ran are counted, but have no duration.
    expect(sample(text, 'caravan_task_duration_seconds_count', { workflow: 'etl', status: 'succeeded' })).toBe(2);
    expect(sample(text, 'caravan_task_duration_seconds_sum', { workflow: 'etl', status: 'succeeded' })).toBeCloseTo(3.2, 9);
    expect(sample(text, 'caravan_task_duration_seconds_bucket', { workflow: 'etl', status: 'succeeded', le: '0.5' })).toBe(1);
    expect(sample(text, 'caravan_task_duration_seconds_bucket', { workflow: 'etl', status: 'succeeded', le: '5' })).toBe(2);
    expect(sample(text, 'caravan_task_duration_seconds_count', { workflow: 'etl', status: 'lost' })).toBeUndefined();

    expect(sample(text, 'caravan_coordination_latency_seconds_count')).toBe(2);
    expect(sample(text, 'caravan_coordination_latency_seconds_bucket', { le: '0.001' })).toBe(1);
    expect(sample(text, 'caravan_coordination_latency_seconds_bucket', { le: '0.005' })).toBe(2);
    expect(sample(text, 'caravan_bus_publish_retries_total', { stream: 'caravan-events' })).toBe(2);
    expect(sample(text, 'caravan_bus_publish_retries_total', { stream: 'caravan-work' })).toBe(1);
    expect(sample(text, 'caravan_checkpoint_writes_total', { outcome: 'written' })).toBe(1);
    expect(sample(text, 'caravan_checkpoint_writes_total', { outcome: 'failed' })).toBe(1);
    expect(sample(text, 'caravan_checkpoint_write_duration_seconds_sum', { outcome: 'failed' })).toBe(1.5);

    expect(text).toContain('# TYPE caravan_runs_started_total counter');
    expect(text).toContain('# TYPE caravan_task_duration_seconds histogram');
    // Prometheus naming: every family is caravan_*, counters end in _total, nothing carries a run id.
    const families = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((x) => [x[1]!, x[2]!] as const);
    expect(families.length).toBe(9);
    for (const [name, type] of families) {
      expect(name).toMatch(/^caravan_[a-z_]+$/);
      if (type === 'counter') expect(name).toMatch(/_total$/);
      if (type === 'histogram') expect(name).toMatch(/_seconds$/);
    }
    expect(text).not.toMatch(/run(_?id)?="/);
    expect(m.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
  });

  it('keeps its own registry: two instances do not share counts, and the global registry stays empty', async () => {
    const a = new PromMetrics();
    const b = new PromMetrics();
    a.runStarted('etl');
    expect(sample(await a.metrics(), 'caravan_runs_started_total', { workflow: 'etl' })).toBe(1);
    expect(sample(await b.metrics(), 'caravan_runs_started_total', { workflow: 'etl' })).toBeUndefined();
    expect(await globalRegistry.metrics()).not.toContain('caravan_');
  });

  it('adds Node process metrics only when asked', async () => {
    expect(await new PromMetrics().metrics()).not.toContain('process_cpu_seconds_total');
    expect(await new PromMetrics({ processMetrics: true }).metrics()).toContain('process_cpu_seconds_total');
  });
});

describe('noopMetrics', () => {
  it('takes every hook, returns nothing and cannot be changed by a caller (it is shared)', () => {
    expect(Object.keys(noopMetrics).sort()).toEqual(['attemptFinished', 'busPublishRetried', 'checkpointWritten', 'coordinationLatency', 'runFinished', 'runStarted']);
    expect(() => exercise(noopMetrics)).not.toThrow();
    expect(noopMetrics.runFinished('etl', 'failed', 1)).toBeUndefined();
    expect(Object.isFrozen(noopMetrics)).toBe(true);
  });
});
