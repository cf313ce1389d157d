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
