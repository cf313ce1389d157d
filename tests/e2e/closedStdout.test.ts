import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { caravanBin, cli } from '../harness/cli.js';
import { tempRepo, workflow } from '../harness/gitRepo.js';

const exec = promisify(execFile);

/** Runs `caravan <args> | head -1` in bash; returns what head printed, caravan's stderr and exit status. */
async function headOne(dir: string, args: string): Promise<{ out: string; err: string; status: number }> {
  const script = `"${process.execPath}" "${caravanBin}" ${args} 2>caravan.err | head -1; s=\${PIPESTATUS[0]}; cat caravan.err >&2; exit $s`;
  try {
    const r = await exec('bash', ['-c', script], { cwd: dir });
    return { out: r.stdout, err: r.stderr, status: 0 };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { out: x.stdout, err: x.stderr, status: x.code };
  }
}

describe('a reader that closes the pipe early', () => {
  it('ends logs, status, runs and run --json quietly, without a stack trace, and the run is still recorded', async () => {
    const dir = await tempRepo({ 'chatty.yaml': workflow('chatty', '  tasks:\n    - { name: talk, run: "seq 1 900" }\n    - { name: more, needs: [talk], run: "seq 1 900" }\n') });
    const first = await cli(dir, 'run', 'chatty');
    expect(first.code).toBe(0);
    const runId = /run (\S+) of chatty succeeded/.exec(first.out)![1]!;
    for (const args of [`logs ${runId}`, `status ${runId}`, 'runs', 'run chatty --json']) {
      const r = await headOne(dir, args);
      // run --json says where the run is recorded on stderr; nothing else may be there.
      const err = r.err.replace(/^run \S+ of chatty succeeded in \S+\nrecorded on caravan\/runs at \w+: git log caravan\/runs; caravan status \S+\n$/, '');
      expect({ args, err, status: r.status }).toEqual({ args, err: '', status: 0 });
      expect(r.out.split('\n').filter((l) => l !== '')).toHaveLength(1);
    }
    // The run piped into head -1 went on to its end and is on the audit branch.
    const runs = await cli(dir, 'runs', 'chatty');
    expect(runs.out.match(/ succeeded /g)).toHaveLength(2);
  });
});
