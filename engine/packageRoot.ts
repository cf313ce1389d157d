import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/**
 * The Caravan checkout (the directory holding package.json and schemas/). Found by walking
 * up from this module, because the same code runs from engine/ under vitest and from dist/
 * once built.
 */
export function packageRoot(): string {
  if (cached !== undefined) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'schemas'))) {
      cached = dir;
      return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error('cannot locate the Caravan package root from ' + fileURLToPath(import.meta.url));
    dir = parent;
  }
}
