import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli } from '../harness/cli.js';
import { git, tempRepo, workflow } from '../harness/gitRepo.js';

/**
 * A run whose final write to Git failed keeps its journal: runs and status show it as such,
 * and recover writes it to caravan/runs (before: "no such run" and "already over", with no
 * way to get the record into Git).
 */
describe('a finished run that only its journal holds', () => {
  it('is listed and shown as journal-only, and caravan recover writes it to the audit branch', async () => {
    const dir = await tempRepo({ 'ok.yaml': workflow('ok', '  tasks:\n    - { name: a, run: "echo hello" }\n    - { name: b, needs: [a], run: "echo world" }\n') });
    const first = await cli(dir, 'run', 'ok');
    expect(first.code).toBe(0);
    const runId = /run (\S+) of ok succeeded/.exec(first.out)![1]!;
    // What a failed final write leaves: the journal (header and every event), and no record in Git.
    const events = (await git(dir, 'show', `caravan/runs:runs/ok/${runId}/events.ndjson`)).trim().split('\n').filter((l) => !l.includes('"type":"checkpoint"'));
    const source = await git(dir, 'show', `caravan/runs:runs/ok/${runId}/workflow.yaml`);
    const head = (await git(dir, 'rev-parse', 'HEAD')).trim();
    await git(dir, 'update-ref', '-d', 'refs/heads/caravan/runs');
    await mkdir(join(dir, '.git', 'caravan', 'journal'), { recursive: true });
    await writeFile(join(dir, '.git', 'caravan', 'journal', `${runId}.ndjson`), [JSON.stringify({ journal: 1, workflow: 'ok', runId, workflowSource: source, workflowCommit: head }), ...events].join('\n') + '\n');

    const runs = await cli(dir, 'runs');
    expect(runs.out).toContain(`${runId}  ok        succeeded (journal only: caravan recover writes it to Git)`);
    expect((await cli(dir, 'status', runId)).out).toContain(`run ${runId} of ok: succeeded (in the local journal only, not on caravan/runs: caravan recover writes it there)`);
    expect((await cli(dir, 'logs', runId, 'b')).out).toBe('b#1 world\n');

    const recovered = await cli(dir, 'recover', runId);
    expect(recovered.code).toBe(0);
    expect(recovered.out).toMatch(new RegExp(`^run ${runId} of ok was already over \\(succeeded\\); its journal is now recorded on caravan/runs at [0-9a-f]{12}`));
    const onGit = (await git(dir, 'show', `caravan/runs:runs/ok/${runId}/events.ndjson`)).trim().split('\n').filter((l) => !l.includes('"type":"checkpoint"'));
    expect(onGit).toEqual(events);
    expect((await cli(dir, 'runs')).out).toContain(`${runId}  ok        succeeded  `);
    expect((await cli(dir, 'recover', runId)).err).toBe(`caravan: run ${runId} is already over (succeeded)\n`);
    await git(dir, 'fsck', '--strict', '--no-progress');
  });
});
