import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { PICTURE_PAGES, redrawPictures } from '../../scripts/docPictures.js';

describe('DAG pictures in the docs', () => {
  it.each(PICTURE_PAGES)('%s shows what caravan graph draws (npx tsx scripts/docPictures.ts redraws them)', (path) => {
    const page = readFileSync(path, 'utf8');
    expect(page.match(/<!-- graph: /g)?.length ?? 0).toBeGreaterThan(5);
    expect(redrawPictures(page)).toBe(page);
  });
});
