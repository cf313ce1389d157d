/**
 * Benchmark runner: `npm run bench -- <suite> [--json]`. Prints a table for humans; with
 * --json the last line of stdout is one JSON object for machines.
 */
import { apiBench } from './apiBench.js';
import { compileBench } from './compileBench.js';
import { natsIngestBench } from './natsIngestBench.js';
import { natsPublishBench } from './natsPublishBench.js';
import { nomadDispatchBench } from './nomadDispatchBench.js';
import { poolBench } from './poolBench.js';
import { runInprocBench } from './runInprocBench.js';
import { runPeersBench } from './runPeersBench.js';
import { runScaleBench } from './runScaleBench.js';
import { sseBench } from './sseBench.js';
import { syncBench } from './syncBench.js';
import { validateBench } from './validateBench.js';

type Suite = () => Promise<object> | object;

const suites: Record<string, Suite> = {
  validate: () => validateBench(),
  compile: () => compileBench(),
  'run-inproc': () => runInprocBench(),
  'run-scale': () => runScaleBench(),
  'run-peers': () => runPeersBench(),
  'nats-ingest': () => natsIngestBench(),
  'nats-publish': () => natsPublishBench(),
  'nomad-dispatch': () => nomadDispatchBench(),
  pool: () => poolBench(),
  sync: () => syncBench(),
  sse: () => sseBench(),
  api: () => apiBench(),
};

async function run(): Promise<number> {
  const args = process.argv.slice(2);
  const json = args.includes('--json');
  const names = args.filter((a) => !a.startsWith('--'));
  if (names.length === 0 || names.some((n) => !(n in suites))) {
    process.stderr.write(`usage: npm run bench -- <${Object.keys(suites).join('|')}> [--json]\n`);
    return 64;
  }
  for (const name of names) {
    const result = await suites[name]!();
    const rows = (result as { results?: object[] }).results ?? [result];
    console.table(rows);
    if (json) process.stdout.write(JSON.stringify(result) + '\n');
  }
  return 0;
}

process.exitCode = await run();
