import { InMemoryBus } from '../../engine/local/InMemoryBus.js';
import { LocalExecutor } from '../../engine/local/LocalExecutor.js';
import { realClock } from '../../engine/run/Clock.js';
import type { Executor } from '../../engine/run/Executor.js';
import { RunEngine } from '../../engine/run/RunEngine.js';
import { buildRunPlan } from '../../engine/run/RunPlan.js';
import { validateText } from '../../engine/spec/validateWorkflows.js';
import { generateWorkflow } from './generateWorkflow.js';
import { percentile, round } from './stats.js';

export interface InprocResult {
  suite: 'run-inproc';
  tasks: number;
  tasks_per_s: number;
  coord_p50_ms: number;
  coord_p99_ms: number;
}

/**
 * 10,000 `noop` tasks (the generated DAG: a chain plus fan-out edges) through the real
 * engine, local executor and in-memory bus, in this process. The coordination overhead is
 * the time from an agent publishing a task's success to the engine dispatching the task it
 * unblocked (the last of its needs to succeed).
 */
export async function runInprocBench(n = 10_000): Promise<InprocResult> {
  const text = generateWorkflow(n).replace(/ {6}run: .*\n/g, '      agent: noop\n');
  const wf = validateText('bench.yaml', text).workflow;
  if (wf === undefined) throw new Error('generated workflow is invalid');
  const plan = buildRunPlan(wf, { maxParallel: 64 });
  const succeededAt = new Map<string, number>();
  const dispatchedAt = new Map<string, number>();
  const bus = new InMemoryBus();
  const publish = bus.publish.bind(bus);
  bus.publish = (subject, event, options) => {
    if (event.type === 'task.succeeded') succeededAt.set(event.task, performance.now());
    publish(subject, event, options);
  };
  const clock = realClock();
  const local = new LocalExecutor(bus, clock, { baseDir: process.cwd(), heartbeatMs: 60_000 });
  const executor: Executor = {
    start(req) {
      dispatchedAt.set(req.dispatch.instance, performance.now());
      local.start(req);
    },
    cancel: (r, i, a) => local.cancel(r, i, a),
    close: () => local.close(),
  };
  const engine = new RunEngine({ plan, runId: 'bench', executor, bus, clock, tickMs: 60_000, publishDecisions: false });
  const t0 = performance.now();
  engine.start({ dataset: 'sales' }, 'bench');
  const state = await engine.done();
  const wall = (performance.now() - t0) / 1000;
  await local.close();
  if (state.status !== 'succeeded') throw new Error(`run ${state.status}: ${state.failureReason ?? ''}`);
  const overheads: number[] = [];
  for (const t of plan.tasks.values()) {
    if (t.needs.length === 0) continue;
    const ready = Math.max(...t.needs.map((x) => succeededAt.get(x) ?? 0));
    overheads.push(dispatchedAt.get(t.name)! - ready);
  }
  return { suite: 'run-inproc', tasks: n, tasks_per_s: Math.round(n / wall), coord_p50_ms: round(percentile(overheads, 50), 3), coord_p99_ms: round(percentile(overheads, 99), 3) };
}
