import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onTestFinished } from 'vitest';

/**
 * A path for a file that does not exist yet: a task waits for it (`while [ ! -f GATE ]`) and
 * the test creates it to let the task go on. Its directory goes when the test ends.
 */
export async function gatePath(name = 'go'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'caravan-gate-'));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  return join(dir, name);
}
