import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LiveRuns, processStartTime } from '../../engine/app/LiveRuns.js';

describe('live runs on this machine', () => {
  it('a live-run file whose PID now belongs to another process is not live (PID reuse after a crash)', async () => {
    const gitdir = await mkdtemp(join(tmpdir(), 'caravan-live-'));
    try {
      const live = new LiveRuns(gitdir);
      const mine = processStartTime(process.pid);
      expect(mine).toBeGreaterThan(0);
      const base = { workflow: 'w', startedAt: new Date().toISOString() };
      await live.register({ runId: 'this-process', pid: process.pid, processStart: mine!, ...base });
      // The same number, but started at another time: the process that registered it is gone.
      await live.register({ runId: 'reused-pid', pid: process.pid, processStart: mine! - 1, ...base });
      // PID 1 is always alive; a record naming it with another start time is stale.
      await live.register({ runId: 'init', pid: 1, processStart: (processStartTime(1) ?? 0) + 12345, ...base });
      expect((await live.get('this-process'))?.runId).toBe('this-process');
      expect(await live.get('reused-pid')).toBeUndefined();
      expect(await live.get('init')).toBeUndefined();
      expect((await live.list()).map((r) => r.runId)).toEqual(['this-process']);
    } finally {
      await rm(gitdir, { recursive: true, force: true });
    }
  });
});
