/**
 * Runs in a process of its own (so its memory is the engine's alone): 10,000 `sleep` tasks,
 * all running at once, through the engine, local executor and in-memory bus. Prints the
 * peak resident set size the kernel recorded (VmHWM).
 */
import { readFileSync } from 'node:fs';
import { InMemoryBus } from '../../engine/local/InMemoryBus.js';
import { LocalExecutor } from '../../engine/local/LocalExecutor.js';
import { realClock } from '../../engine/run/Clock.js';
import { RunEngine } from '../../engine/run/RunEngine.js';
import { buildRunPlan } from '../../engine/run/RunPlan.js';
import { validateText } from '../../engine/spec/validateWorkflows.js';

const n = Number(process.argv[2] ?? 10_000);
const sleep = process.argv[3] ?? '3s';
const tasks = Array.from({ length: n }, (_, i) => `    - { name: s${i}, sleep: ${sleep} }\n`).join('');
const wf = validateText('scale.yaml', `apiVersion: caravan/v1\nkind: Workflow\nmetadata:\n  name: scale\nspec:\n  tasks:\n${tasks}`).workflow!;
const plan = buildRunPlan(wf, { maxParallel: n });
const bus = new InMemoryBus();
const clock = realClock();
const executor = new LocalExecutor(bus, clock, { baseDir: process.cwd() });
const engine = new RunEngine({ plan, runId: 'scale', executor, bus, clock, publishDecisions: false });
let peakRunning = 0;
engine.onEvent((_e, s) => {
  if (s.active.size > peakRunning) peakRunning = s.active.size;
});
engine.start({}, 'bench');
const state = await engine.done();
await executor.close();
const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
process.stdout.write(JSON.stringify({ status: state.status, tasks: n, peak_running: peakRunning, peak_rss_mb: hwm ? Math.round(Number(hwm[1]) / 1024) : null }) + '\n');
