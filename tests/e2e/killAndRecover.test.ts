import { spawn } from 'node:child_process';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { caravanBin, cli } from '../harness/cli.js';
import { tempRepo, workflow } from '../harness/gitRepo.js';
import { until } from '../harness/until.js';

const TRIALS = 20;
const CHAINS = 5;
const PER_CHAIN = 4;

/**
 * Twenty tasks in five chains; each notes its start and its end in ran.log around a short
 * sleep of its own length, so a kill at a random moment finds some tasks done, some running
 * and some not yet started.
 */
function twentyTasks(): string {
  const tasks: string[] = [];
  for (let c = 0; c < CHAINS; c++) {
    for (let i = 0; i < PER_CHAIN; i++) {
      const name = `t${c}${i}`;
      const sleep = (((c * PER_CHAIN + i) * 37) % 9 + 1) * 0.02;
      const needs = i > 0 ? `, needs: [t${c}${i - 1}]` : '';
      tasks.push(`    - { name: ${name}${needs}, run: "echo start ${name} >> ran.log; sleep ${sleep.toFixed(2)}; echo end ${name} >> ran.log" }`);
    }
  }
  return workflow('twenty', `  tasks:\n${tasks.join('\n')}\n`);
}

/** A small seeded generator (mulberry32), so a failing trial can be replayed from its seed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function count(log: string, what: 'start' | 'end'): Map<string, number> {
  const n = new Map<string, number>();
  for (const line of log.split('\n')) {
    const [w, task] = line.split(' ');
    if (w === what && task !== undefined) n.set(task, (n.get(task) ?? 0) + 1);
  }
  return n;
}

describe('SIGKILL of caravan run, then caravan recover', () => {
  it(`runs no attempt twice and loses none, in ${TRIALS} kills at random moments of a 20-task run`, async () => {
    const seed = Number(process.env['CARAVAN_KILL_SEED'] ?? Date.now() % 1_000_000);
    const next = random(seed);
    const dir = await tempRepo({ 'twenty.yaml': twentyTasks() });
    await writeFile(join(dir, '.gitignore'), 'ran.log\n');
    const journal = join(dir, '.git', 'caravan', 'journal');
    const problems: string[] = [];
    for (let trial = 0; trial < TRIALS; trial++) {
      await rm(join(dir, 'ran.log'), { force: true });
      // Killed once between 1 and 19 tasks have started: always mid-run.
      const after = 1 + Math.floor(next() * (CHAINS * PER_CHAIN - 1));
      const child = spawn(process.execPath, [caravanBin, 'run', 'twenty'], { cwd: dir, stdio: 'ignore' });
      const exited = new Promise<void>((r) => child.on('exit', () => r()));
      await until(`${after} tasks to start (trial ${trial}, seed ${seed})`, async () => count(await readFile(join(dir, 'ran.log'), 'utf8').catch(() => ''), 'start').size >= after);
      child.kill('SIGKILL');
      await exited;
      // The killed run's journal is the only one: finished runs leave none.
      const ids = (await readdir(journal)).filter((n) => n.endsWith('.ndjson')).map((n) => n.slice(0, -'.ndjson'.length));
      expect(ids, `trial ${trial}, seed ${seed}`).toHaveLength(1);
      const recovered = await cli(dir, 'recover', ids[0]!);
      expect(recovered.code, `trial ${trial}, seed ${seed}: ${recovered.err}`).toBe(0);
      const log = await readFile(join(dir, 'ran.log'), 'utf8');
      const starts = count(log, 'start');
      const ends = count(log, 'end');
      for (let c = 0; c < CHAINS; c++) {
        for (let i = 0; i < PER_CHAIN; i++) {
          const t = `t${c}${i}`;
          if (starts.get(t) !== 1 || ends.get(t) !== 1) problems.push(`trial ${trial} (killed after ${after} starts): ${t} started ${starts.get(t) ?? 0} and ended ${ends.get(t) ?? 0} times`);
        }
      }
    }
    expect(problems, `seed ${seed} (CARAVAN_KILL_SEED=${seed} replays it)`).toEqual([]);
    // Forty processes on two shared cores: bounded, but well above the default.
  }, 180_000);
});
