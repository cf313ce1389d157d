import { describe, expect, it } from 'vitest';
import { RunProgress } from '../../engine/cli/RunProgress.js';
import { applyRunEvent, initialRunState } from '../../engine/run/reduceRun.js';
import type { RunEvent } from '../../engine/run/RunEvent.js';
import { buildRunPlan } from '../../engine/run/RunPlan.js';
import { T0, workflowOf } from './simulateRun.js';

/** Feeds events through the reducer to a RunProgress, and returns what it wrote. */
function show(mode: 'plain' | 'tty', events: RunEvent[]): string {
  const plan = buildRunPlan(workflowOf('  tasks:\n    - { name: big, run: "echo" }\n'), { maxParallel: 4 });
  const state = initialRunState(plan, 'r1');
  let out = '';
  const progress = new RunProgress(mode, (s) => { out += s; }, () => T0 + 1000);
  for (const e of events) if (applyRunEvent(state, plan, e)) progress.onEvent(e, state);
  progress.finish(state);
  return out;
}

const reason = 'Nomad cannot place it yet: 1 node evaluated; 1 out of room (cpu on 1); it stays queued until a node has room';
const events: RunEvent[] = [
  { runId: 'r1', at: T0, type: 'run.started', workflow: 'sim', params: {}, trigger: 'test' },
  { runId: 'r1', at: T0, type: 'task.queued', task: 'big', attempt: 1 },
  { runId: 'r1', at: T0 + 500, type: 'task.pending', task: 'big', attempt: 1, reason },
];

describe('RunProgress', () => {
  it('prints why an attempt is still queued, one line per step', () => {
    expect(show('plain', events)).toContain(`12:00:00 big waits: ${reason}\n`);
  });

  it('shows the reason beside a queued task in the terminal table, and drops it once the task runs', () => {
    expect(show('tty', events)).toMatch(/ big {2}Nomad cannot place it yet: 1 node evaluated/);
    const started = show('tty', [...events, { runId: 'r1', at: T0 + 900, type: 'task.started', task: 'big', attempt: 1 }]);
    expect(started.slice(started.lastIndexOf('sim r1'))).not.toContain('Nomad cannot place');
  });
});

describe('RunProgress and circuit breakers', () => {
  const plan = buildRunPlan(workflowOf('  tasks:\n    - { name: big, run: "echo", retry: { attempts: 3 }, circuitBreaker: { failures: 1, cooldown: 30s } }\n'), { maxParallel: 4 });
  const held: RunEvent[] = [
    { runId: 'r1', at: T0, type: 'run.started', workflow: 'sim', params: {}, trigger: 'test' },
    { runId: 'r1', at: T0, type: 'task.queued', task: 'big', attempt: 1 },
    { runId: 'r1', at: T0 + 100, type: 'task.failed', task: 'big', attempt: 1, error: 'exited with code 1', exitCode: 1, retryable: true, failure: 'exit' },
    { runId: 'r1', at: T0 + 100, type: 'breaker.opened', key: 'agent:shell', until: T0 + 30_100, failures: 1 },
    { runId: 'r1', at: T0 + 100, type: 'task.retry-scheduled', task: 'big', attempt: 2, retryAt: T0 + 1100 },
  ];
  const render = (mode: 'plain' | 'tty', events: RunEvent[]): string => {
    const state = initialRunState(plan, 'r1');
    let out = '';
    const progress = new RunProgress(mode, (s) => { out += s; }, () => T0 + 1000);
    for (const e of events) if (applyRunEvent(state, plan, e)) progress.onEvent(e, state);
    progress.finish(state);
    return out;
  };

  it('names the task an open breaker holds, and until when, in plain lines and the terminal table', () => {
    const plain = render('plain', held);
    expect(plain).toContain('12:00:00 circuit breaker agent:shell opened after 1 failure until 12:00:30\n12:00:00 big held by circuit breaker agent:shell until 12:00:30\n');
    expect(plain).toContain('12:00:00 big will retry (attempt 2) in 1.0s; held by circuit breaker agent:shell until 12:00:30\n');
    const tty = render('tty', held);
    expect(tty.slice(tty.lastIndexOf('sim r1'))).toMatch(/ big {2}held by circuit breaker agent:shell until 12:00:30/);
  });

  it('says nothing of a breaker once it closed', () => {
    const closed = render('tty', [...held, { runId: 'r1', at: T0 + 30_100, type: 'breaker.closed', key: 'agent:shell' }]);
    expect(closed.slice(closed.lastIndexOf('sim r1'))).not.toContain('held by');
  });
});
