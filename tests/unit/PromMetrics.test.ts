import { register as globalRegistry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { noopMetrics, triggerKind, type Metrics } from '../../engine/run/Metrics.js';
import { OTHER_WORKFLOW, PromMetrics } from '../../engine/telemetry/PromMetrics.js';

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

/** Every label value of one label across a family's samples. */
function labelValues(text: string, name: string, label: string): string[] {
  const out = new Set<string>();
  for (const m of text.matchAll(new RegExp(`^${name}\\{([^}]*)\\}`, 'gm'))) {
    const v = new RegExp(`${label}="([^"]*)"`).exec(m[1]!)?.[1];
    if (v !== undefined) out.add(v);
  }
  return [...out].sort();
}

/** Every hook once or more, as an engine, a controller and the adapters would call them. */
function exercise(m: Metrics): void {
  m.runStarted('etl', 'push');
  m.runStarted('etl', 'schedule');
  m.runStarted('report', 'manual');
  m.runFinished('etl', 'succeeded', 42);
  m.runFinished('etl', 'failed', 7200);
  m.attemptFinished('etl', 'succeeded', 0.2);
  m.attemptFinished('etl', 'succeeded', 3);
  m.attemptFinished('etl', 'failed', 0.03);
  m.attemptFinished('etl', 'lost', undefined);
  m.attemptFinished('report', 'cancelled', undefined);
  m.coordinationLatency(0.0007);
  m.coordinationLatency(0.004);
  m.breakersOpenChanged(2);
  m.breakersOpenChanged(-1);
  m.busPublishRetried('caravan-events');
  m.busPublishRetried('caravan-events');
  m.busPublishRetried('caravan-work');
  m.checkpointWritten('written', 0.02);
  m.checkpointWritten('failed', 1.5);
  m.backendRequest('nomad', 'ok');
  m.backendRequest('nomad', 'ok');
  m.backendRequest('consul', 'error');
  m.backendRequest('nats', 'ok');
  m.syncFinished({ durationSeconds: 0.3, error: false, lagSeconds: 4, driftJobs: new Map([['etl', 2]]) });
  m.syncFinished({ durationSeconds: 12, error: true });
  m.leader(true);
  m.webhookReceived('accepted');
  m.webhookReceived('refused');
  m.webhookReceived('refused');
  m.scheduleFired('etl', 'started');
  m.scheduleFired('etl', 'skipped');
  m.poolsObserved([{ workflow: 'etl', pool: 'workers', queued: 7, agents: { pending: 1, running: 3, failed: 0, lost: 0 } }]);
}

describe('PromMetrics', () => {
  it('exposes every caravan_ family with its labels and values', async () => {
    const m = new PromMetrics();
    exercise(m);
    const text = await m.metrics();
    expect(sample(text, 'caravan_runs_started_total', { workflow: 'etl', trigger: 'push' })).toBe(1);
    expect(sample(text, 'caravan_runs_started_total', { workflow: 'etl', trigger: 'schedule' })).toBe(1);
    expect(sample(text, 'caravan_runs_started_total', { workflow: 'report', trigger: 'manual' })).toBe(1);
    expect(sample(text, 'caravan_runs_finished_total', { workflow: 'etl', status: 'succeeded' })).toBe(1);
    expect(sample(text, 'caravan_runs_finished_total', { workflow: 'etl', status: 'failed' })).toBe(1);
    expect(sample(text, 'caravan_run_duration_seconds_sum', { workflow: 'etl' })).toBe(7242);
    expect(sample(text, 'caravan_run_duration_seconds_bucket', { workflow: 'etl', le: '60' })).toBe(1);
    expect(sample(text, 'caravan_run_duration_seconds_bucket', { workflow: 'etl', le: '15' })).toBe(0);

    expect(sample(text, 'caravan_task_attempts_total', { workflow: 'etl', status: 'succeeded' })).toBe(2);
    expect(sample(text, 'caravan_task_attempts_total', { workflow: 'etl', status: 'lost' })).toBe(1);
    expect(sample(text, 'caravan_task_attempts_total', { workflow: 'report', status: 'cancelled' })).toBe(1);
    // Attempts that never ran are counted, but have no duration.
    expect(sample(text, 'caravan_task_duration_seconds_count', { workflow: 'etl' })).toBe(3);
    expect(sample(text, 'caravan_task_duration_seconds_sum', { workflow: 'etl' })).toBeCloseTo(3.23, 9);
    expect(sample(text, 'caravan_task_duration_seconds_bucket', { workflow: 'etl', le: '0.05' })).toBe(1);
    expect(sample(text, 'caravan_task_duration_seconds_bucket', { workflow: 'etl', le: '5' })).toBe(3);
    expect(sample(text, 'caravan_task_duration_seconds_count', { workflow: 'report' })).toBeUndefined();

    expect(sample(text, 'caravan_coordination_seconds_count')).toBe(2);
    expect(sample(text, 'caravan_coordination_seconds_bucket', { le: '0.001' })).toBe(1);
    expect(sample(text, 'caravan_coordination_seconds_bucket', { le: '0.005' })).toBe(2);
    expect(sample(text, 'caravan_breakers_open')).toBe(1);
    expect(sample(text, 'caravan_bus_publish_retries_total', { stream: 'caravan-events' })).toBe(2);
    expect(sample(text, 'caravan_checkpoint_writes_total', { outcome: 'failed' })).toBe(1);
    expect(sample(text, 'caravan_checkpoint_write_duration_seconds_sum', { outcome: 'failed' })).toBe(1.5);

    expect(sample(text, 'caravan_backend_requests_total', { backend: 'nomad', outcome: 'ok' })).toBe(2);
    expect(sample(text, 'caravan_backend_requests_total', { backend: 'consul', outcome: 'error' })).toBe(1);
    expect(sample(text, 'caravan_backend_requests_total', { backend: 'nats', outcome: 'ok' })).toBe(1);
    // Bound up front, so every backend and outcome is there from the start (rate() needs the zero).
    expect(sample(text, 'caravan_backend_requests_total', { backend: 'nats', outcome: 'error' })).toBe(0);

    expect(sample(text, 'caravan_sync_duration_seconds_count')).toBe(2);
    expect(sample(text, 'caravan_sync_duration_seconds_sum')).toBeCloseTo(12.3, 9);
    expect(sample(text, 'caravan_sync_errors_total')).toBe(1);
    // The failed sync applied nothing: the lag and the drift are the last applied sync's.
    expect(sample(text, 'caravan_sync_lag_seconds')).toBe(4);
    expect(sample(text, 'caravan_drift_jobs', { workflow: 'etl' })).toBe(2);
    expect(sample(text, 'caravan_leader')).toBe(1);
    expect(sample(text, 'caravan_webhooks_total', { outcome: 'refused' })).toBe(2);
    expect(sample(text, 'caravan_webhooks_total', { outcome: 'accepted' })).toBe(1);
    expect(sample(text, 'caravan_schedule_fires_total', { workflow: 'etl', outcome: 'skipped' })).toBe(1);
    expect(sample(text, 'caravan_pool_queue_depth', { workflow: 'etl', pool: 'workers' })).toBe(7);
    expect(sample(text, 'caravan_pool_agents', { workflow: 'etl', pool: 'workers', state: 'running' })).toBe(3);
    expect(sample(text, 'caravan_pool_agents', { workflow: 'etl', pool: 'workers', state: 'failed' })).toBe(0);

    // Prometheus naming: every family is caravan_*, counters end in _total, nothing carries a run id.
    const families = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((x) => [x[1]!, x[2]!] as const);
    expect(families.map(([n]) => n).sort()).toEqual([
      'caravan_backend_requests_total', 'caravan_breakers_open', 'caravan_bus_publish_retries_total', 'caravan_checkpoint_write_duration_seconds',
      'caravan_checkpoint_writes_total', 'caravan_coordination_seconds', 'caravan_drift_jobs', 'caravan_leader', 'caravan_pool_agents',
      'caravan_pool_queue_depth', 'caravan_run_duration_seconds', 'caravan_runs_finished_total', 'caravan_runs_started_total',
      'caravan_schedule_fires_total', 'caravan_sync_duration_seconds', 'caravan_sync_errors_total', 'caravan_sync_lag_seconds',
      'caravan_task_attempts_total', 'caravan_task_duration_seconds', 'caravan_webhooks_total',
    ]);
    for (const [name, type] of families) {
      if (type === 'counter') expect(name).toMatch(/_total$/);
      if (type === 'histogram') expect(name).toMatch(/_seconds$/);
    }
    expect(text).not.toMatch(/run(_?id)?="/);
    expect(m.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
  });

  it('lets no unknown or malformed workflow name make a series once the synced workflows are known', async () => {
    const m = new PromMetrics();
    m.knownWorkflows(['etl', 'report']);
    m.runStarted('etl', 'push');
    // A name from outside (an event, a webhook, a recovered run of a deleted file) is folded.
    for (let i = 0; i < 50; i++) m.runStarted(`attacker-${i}`, 'event');
    m.scheduleFired('gone', 'failed');
    m.attemptFinished('x"} 1\ncaravan_leader 1', 'failed', 1);
    m.poolsObserved([{ workflow: 'gone', pool: 'p', queued: 3, agents: { pending: 0, running: 1, failed: 0, lost: 0 } }]);
    const text = await m.metrics();
    expect(labelValues(text, 'caravan_runs_started_total', 'workflow')).toEqual([OTHER_WORKFLOW, 'etl']);
    expect(sample(text, 'caravan_runs_started_total', { workflow: OTHER_WORKFLOW, trigger: 'event' })).toBe(50);
    expect(labelValues(text, 'caravan_schedule_fires_total', 'workflow')).toEqual([OTHER_WORKFLOW]);
    expect(labelValues(text, 'caravan_task_attempts_total', 'workflow')).toEqual([OTHER_WORKFLOW]);
    expect(labelValues(text, 'caravan_pool_queue_depth', 'pool')).toEqual([OTHER_WORKFLOW]);
    expect(text).not.toContain('attacker');
  });

  it('before the workflows are known, keeps valid names up to a cap and folds the rest', async () => {
    const m = new PromMetrics({ maxWorkflows: 3 });
    for (const name of ['a', 'b', 'Not_A_Label', 'c', 'd', 'e', 'a']) m.runStarted(name, 'manual');
    const text = await m.metrics();
    expect(labelValues(text, 'caravan_runs_started_total', 'workflow')).toEqual([OTHER_WORKFLOW, 'a', 'b', 'c']);
    expect(sample(text, 'caravan_runs_started_total', { workflow: 'a', trigger: 'manual' })).toBe(2);
    expect(sample(text, 'caravan_runs_started_total', { workflow: OTHER_WORKFLOW, trigger: 'manual' })).toBe(3);
  });

  it('replaces the drift and pool gauges at each look, so a workflow or pool that went stops showing', async () => {
    const m = new PromMetrics();
    m.knownWorkflows(['etl', 'report']);
    m.syncFinished({ durationSeconds: 1, error: false, driftJobs: new Map([['etl', 2]]) });
    m.poolsObserved([{ workflow: 'etl', pool: 'a', queued: 1, agents: { pending: 0, running: 2, failed: 0, lost: 0 } }]);
    m.knownWorkflows(['report']);
    m.syncFinished({ durationSeconds: 1, error: false, driftJobs: new Map() });
    m.poolsObserved([]);
    const text = await m.metrics();
    expect(sample(text, 'caravan_drift_jobs', { workflow: 'etl' })).toBeUndefined();
    expect(sample(text, 'caravan_drift_jobs', { workflow: 'report' })).toBe(0);
    expect(text).not.toMatch(/^caravan_pool_agents\{/m);
  });

  it('keeps its own registry: two instances do not share counts, and the global registry stays empty', async () => {
    const a = new PromMetrics();
    const b = new PromMetrics();
    a.runStarted('etl', 'manual');
    expect(sample(await a.metrics(), 'caravan_runs_started_total', { workflow: 'etl', trigger: 'manual' })).toBe(1);
    expect(sample(await b.metrics(), 'caravan_runs_started_total', { workflow: 'etl', trigger: 'manual' })).toBeUndefined();
    expect(await globalRegistry.metrics()).not.toContain('caravan_');
  });

  it('adds Node process metrics under their standard names only when asked', async () => {
    expect(await new PromMetrics().metrics()).not.toContain('process_cpu_seconds_total');
    const text = await new PromMetrics({ processMetrics: true }).metrics();
    expect(text).toMatch(/^process_cpu_seconds_total \d/m);
    expect(text).toMatch(/^process_resident_memory_bytes \d/m);
    expect(text).not.toContain('caravan_process_');
    // Gauges that prom-client names like counters are left out (promtool flags them); the by-type ones stay.
    expect(text).not.toMatch(/^# TYPE \S+_total gauge$/m);
    expect(text).toMatch(/^# TYPE nodejs_active_handles gauge$/m);
  });
});

describe('triggerKind', () => {
  it('keeps the kind of a trigger and drops its unbounded detail', () => {
    expect(triggerKind('push:0123abcd')).toBe('push');
    expect(triggerKind('schedule:2024-01-01T06:00:00.000Z')).toBe('schedule');
    expect(triggerKind('event:sales.uploaded')).toBe('event');
    expect(triggerKind('workflow:20240101-000000-abc/task')).toBe('workflow');
    expect(triggerKind('manual')).toBe('manual');
    expect(triggerKind('anything else')).toBe('other');
  });
});

describe('noopMetrics', () => {
  it('takes every hook, returns nothing and cannot be changed by a caller (it is shared)', () => {
    expect(Object.keys(noopMetrics).sort()).toEqual(['attemptFinished', 'backendRequest', 'breakersOpenChanged', 'busPublishRetried', 'checkpointWritten', 'coordinationLatency', 'knownWorkflows', 'leader', 'poolsObserved', 'runFinished', 'runStarted', 'scheduleFired', 'syncFinished', 'webhookReceived']);
    expect(() => exercise(noopMetrics)).not.toThrow();
    expect(noopMetrics.runFinished('etl', 'failed', 1)).toBeUndefined();
    expect(Object.isFrozen(noopMetrics)).toBe(true);
  });
});
