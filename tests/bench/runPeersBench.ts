import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generatedEdges } from './generateWorkflow.js';
import { median, round } from './stats.js';

export interface PeersRow {
  tasks: number;
  caravan_s: number;
  make_s: number | null;
  ninja_s: number | null;
  snakemake_s: number | null;
  ratio_to_make: number | null;
}

const bin = fileURLToPath(new URL('../../bin/caravan.js', import.meta.url));

function which(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** Finds the peers, installing Debian's packages when running as root and they are missing. */
function ensurePeers(): void {
  const missing = [['make', 'make'], ['ninja', 'ninja-build'], ['snakemake', 'snakemake']].filter(([cmd]) => !which(cmd!));
  if (missing.length === 0 || process.getuid?.() !== 0) return;
  process.stderr.write(`installing ${missing.map(([, p]) => p).join(' ')} with apt-get...\n`);
  spawnSync('apt-get', ['install', '-y', '-qq', ...missing.map(([, p]) => p!)], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
}

function wall(cmd: string, args: string[], cwd: string, before?: () => void): number {
  before?.();
  const t = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { cwd, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  const s = Number(process.hrtime.bigint() - t) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.slice(-500)}`);
  return s;
}

/**
 * The same DAG (the generated shape: a chain plus fan-out edges, every task `true`) run by
 * `caravan run --parallelism 2`, GNU make -j2, ninja -j2 and snakemake -j2, each as the
 * whole command a user would type, in the same process of measurement.
 */
export function runPeersBench(sizes = [1_000, 5_000], runs = 3): { suite: 'run-peers'; results: PeersRow[] } {
  ensurePeers();
  const results: PeersRow[] = [];
  for (const n of sizes) {
    const dir = mkdtempSync(join(tmpdir(), `caravan-peers-${n}-`));
    const edges = generatedEdges(n);
    const needs: number[][] = Array.from({ length: n }, () => []);
    for (const [a, b] of edges) needs[b]!.push(a);

    // Caravan: a Git repository with one workflow.
    mkdirSync(join(dir, 'caravan', 'workflows'), { recursive: true });
    const tasks = needs.map((ns, i) => `    - { name: t${i}, run: "true"${ns.length > 0 ? `, needs: [${ns.map((j) => `t${j}`).join(', ')}]` : ''} }\n`).join('');
    writeFileSync(join(dir, 'caravan', 'workflows', 'peers.yaml'), `apiVersion: caravan/v1\nkind: Workflow\nmetadata:\n  name: peers\nspec:\n  tasks:\n${tasks}`);
    execFileSync('git', ['init', '-q'], { cwd: join(dir, 'caravan') });

    // make: phony targets, one recipe each.
    const mk = [`all: ${needs.map((_, i) => `t${i}`).join(' ')}`, `.PHONY: all ${needs.map((_, i) => `t${i}`).join(' ')}`];
    needs.forEach((ns, i) => mk.push(`t${i}: ${ns.map((j) => `t${j}`).join(' ')}`, '\t@true'));
    writeFileSync(join(dir, 'Makefile'), mk.join('\n') + '\n');

    // ninja: one edge per task; outputs never exist, so every edge runs each time.
    const nj = ['rule run', '  command = true', ''];
    needs.forEach((ns, i) => nj.push(`build t${i}: run${ns.length > 0 ? ` | ${ns.map((j) => `t${j}`).join(' ')}` : ''}`));
    writeFileSync(join(dir, 'build.ninja'), nj.join('\n') + '\n');

    // snakemake: one wildcard rule; touch() marks each task done.
    mkdirSync(join(dir, 'snake'));
    writeFileSync(join(dir, 'snake', 'Snakefile'), `NEEDS = ${JSON.stringify(needs)}\nrule all:\n    input: [f"t{i}" for i in range(${n})]\nrule task:\n    input: lambda w: [f"t{j}" for j in NEEDS[int(w.i)]]\n    output: touch("t{i}")\n    wildcard_constraints: i="[0-9]+"\n    shell: "true"\n`);

    const times = { caravan: [] as number[], make: [] as number[], ninja: [] as number[], snakemake: [] as number[] };
    for (let r = 0; r < runs; r++) {
      times.caravan.push(wall(process.execPath, [bin, 'run', 'peers', '--parallelism', '2'], join(dir, 'caravan')));
      if (which('make')) times.make.push(wall('make', ['-j2', '-s'], dir));
      if (which('ninja')) times.ninja.push(wall('ninja', ['-j2'], dir));
    }
    // snakemake is two orders of magnitude slower: one run per size.
    if (which('snakemake')) {
      times.snakemake.push(wall('snakemake', ['-j2', '--quiet', 'all'], join(dir, 'snake'), () => {
        rmSync(join(dir, 'snake', '.snakemake'), { recursive: true, force: true });
        for (let i = 0; i < n; i++) rmSync(join(dir, 'snake', `t${i}`), { force: true });
      }));
    }
    const m = (xs: number[]): number | null => (xs.length > 0 ? round(median(xs), 3) : null);
    const row: PeersRow = { tasks: n, caravan_s: m(times.caravan)!, make_s: m(times.make), ninja_s: m(times.ninja), snakemake_s: m(times.snakemake), ratio_to_make: null };
    if (row.make_s !== null) row.ratio_to_make = round(row.caravan_s / row.make_s, 2);
    results.push(row);
    rmSync(dir, { recursive: true, force: true });
  }
  return { suite: 'run-peers', results };
}
