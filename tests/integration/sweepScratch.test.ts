import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sweepScratch } from '../../engine/local/LocalExecutor.js';

describe('scratch space of killed runs', () => {
  it('is removed when the next caravan process opens its executor; that of live processes is kept', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'caravan-sweep-'));
    try {
      // A process that has exited: its PID is free (or, rarely, reused: then its directory stays).
      const dead = spawnSync('true').pid!;
      const names = { dead: `caravan-${dead}-a1b2c3`, mine: `caravan-${process.pid}-d4e5f6`, init: 'caravan-1-abcdef', other: 'caravan-repo-x1y2z3' };
      for (const n of Object.values(names)) {
        await mkdir(join(dir, n, 'attempt-1'), { recursive: true });
        await writeFile(join(dir, n, 'attempt-1', 'out'), 'x'.repeat(1000));
      }
      const removed = await sweepScratch(dir);
      expect(removed).toEqual([join(dir, names.dead)]);
      expect([names.dead, names.mine, names.init, names.other].map((n) => existsSync(join(dir, n)))).toEqual([false, true, true, true]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
