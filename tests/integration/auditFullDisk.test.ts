import nodeFs from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { GitAuditStore } from '../../engine/audit/GitAuditStore.js';
import { RunRecorder } from '../../engine/audit/RunRecorder.js';
import { InMemoryBus } from '../../engine/local/InMemoryBus.js';
import { LocalExecutor } from '../../engine/local/LocalExecutor.js';
import { realClock } from '../../engine/run/Clock.js';
import { MemoryLogger } from '../../engine/run/Logger.js';
import { RunEngine } from '../../engine/run/RunEngine.js';
import { buildRunPlan } from '../../engine/run/RunPlan.js';
import type { RunState } from '../../engine/run/RunState.js';
import { openApp } from '../harness/openApp.js';
import { git, tempRepo, workflow } from '../harness/gitRepo.js';

/** While set, the journal's appends write half their bytes and then fail as a full disk does. */
const journalDisk = vi.hoisted(() => ({ full: false }));

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof nodeFs>();
  const appendFileSync = (...args: Parameters<typeof real.appendFileSync>): void => {
    const [fd, data] = args;
    if (!journalDisk.full || typeof data !== 'string') return real.appendFileSync(...args);
    real.appendFileSync(fd, data.slice(0, Math.floor(data.length / 2)));
    throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  };
  return { ...real, default: { ...real, appendFileSync }, appendFileSync };
});

const pipeline = workflow('pipe', '  tasks:\n    - { name: a, run: "echo A" }\n    - { name: b, needs: [a], run: "echo B" }\n    - { name: c, needs: [b], agent: noop }\n');

const enospc = (): Error => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });

/** Runs the pipeline with its record going through `store`, and returns the final state. */
async function runWith(dir: string, store: GitAuditStore, runId: string, log: MemoryLogger, opened: () => void = () => undefined): Promise<{ state: RunState; recorder: RunRecorder; journal: string }> {
  const { workflow: wf, source } = await openApp({ repoDir: dir }).loadWorkflow('pipe');
  const journal = join(dir, '.git', 'caravan', 'journal', `${runId}.ndjson`);
  const recorder = new RunRecorder(store, { workflow: 'pipe', runId, workflowSource: source, journalPath: journal, everyEvents: 3, logger: log });
  await recorder.open();
  opened();
  const bus = new InMemoryBus();
  const clock = realClock();
  const engine = new RunEngine({ plan: buildRunPlan(wf, { maxParallel: 4 }), runId, executor: new LocalExecutor(bus, clock, { baseDir: dir }), bus, clock });
  engine.onEvent((e, s) => recorder.record(e, s));
  engine.onFlush(() => recorder.flush());
  engine.start({}, 'test');
  return { state: await engine.done(), recorder, journal };
}

describe('a full disk', () => {
  it('while Git objects are half written leaves no broken object, and the run is recorded once space is back', async () => {
    const dir = await tempRepo({ 'pipe.yaml': pipeline });
    let full = true;
    let failed = 0;
    // Writes half of the bytes, then fails: what write(2) does when the disk fills mid-file.
    const halfWriting = {
      ...nodeFs,
      promises: {
        ...nodeFs.promises,
        writeFile: async (...args: Parameters<typeof nodeFs.promises.writeFile>): Promise<void> => {
          if (!full) return nodeFs.promises.writeFile(...args);
          const [path, data] = args;
          const bytes = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data as Uint8Array);
          await nodeFs.promises.writeFile(path, bytes.subarray(0, Math.floor(bytes.length / 2)));
          failed++;
          throw enospc();
        },
      },
    } as typeof nodeFs;
    const log = new MemoryLogger();
    const { state, recorder } = await runWith(dir, new GitAuditStore(dir, halfWriting), 'half-written', log);
    expect(state.status).toBe('succeeded');
    await recorder.checkpoint().catch(() => undefined);
    expect(failed).toBeGreaterThan(0);
    expect(log.lines('warn')[0]!.msg).toMatch(/^audit checkpoint failed .*ENOSPC/);
    // Nothing half-written is left among the objects: no temporary file stays (one may be
    // seen while a retried checkpoint is still writing, so wait for those to settle), and
    // git fsck is clean.
    const objects = join(dir, '.git', 'objects');
    const temporary = async (): Promise<string[]> => {
      const out: string[] = [];
      for (const sub of (await readdir(objects)).filter((d) => /^[0-9a-f]{2}$/.test(d))) out.push(...(await readdir(join(objects, sub))).filter((f) => f.startsWith('tmp_obj_')));
      return out;
    };
    for (let i = 0; i < 50 && (await temporary()).length > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(await temporary()).toEqual([]);
    await git(dir, 'fsck', '--strict', '--no-progress');
    full = false;
    await recorder.finish(state);
    const events = (await git(dir, 'show', 'caravan/runs:runs/pipe/half-written/events.ndjson')).trim().split('\n').filter((l) => !l.includes('"type":"checkpoint"'));
    expect(events).toHaveLength(state.seq);
    expect(JSON.parse(await git(dir, 'show', 'caravan/runs:runs/pipe/half-written/run.json'))).toMatchObject({ status: 'succeeded' });
    await git(dir, 'fsck', '--strict', '--no-progress');
    await git(dir, 'gc', '-q');
  });

  it('while the journal is appended keeps the events in memory, logs once, and writes each once when space is back', async () => {
    const dir = await tempRepo({ 'pipe.yaml': pipeline });
    const log = new MemoryLogger();
    const store = new GitAuditStore(dir);
    let run;
    try {
      // The disk fills after the journal's header is written, while the run goes on.
      run = await runWith(dir, store, 'journal-full', log, () => {
        journalDisk.full = true;
      });
    } finally {
      journalDisk.full = false;
    }
    const { state, recorder, journal } = run;
    expect(state.status).toBe('succeeded');
    const warnings = log.lines('warn').filter((l) => l.msg.startsWith('journal write failed'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.msg).toMatch(/ENOSPC/);
    expect(warnings[0]!.fields).toMatchObject({ workflow: 'pipe', run: 'journal-full', err: expect.objectContaining({ code: 'ENOSPC' }) });
    recorder.flush();
    // Whole lines only, every event once, in order (checkpoint markers included).
    const lines = (await readFile(journal, 'utf8')).split('\n');
    expect(lines.pop()).toBe('');
    const parsed = lines.slice(1).map((l) => JSON.parse(l) as { type: string });
    expect(new Set(lines.slice(1)).size).toBe(lines.length - 1);
    expect(parsed.filter((e) => e.type !== 'checkpoint')).toHaveLength(state.seq);
    expect(parsed[0]).toMatchObject({ type: 'run.started' });
    expect(parsed.filter((e) => e.type !== 'checkpoint').at(-1)).toMatchObject({ type: 'run.succeeded' });
    await recorder.finish(state);
    expect(JSON.parse(await git(dir, 'show', 'caravan/runs:runs/pipe/journal-full/run.json'))).toMatchObject({ status: 'succeeded' });
  });
});
