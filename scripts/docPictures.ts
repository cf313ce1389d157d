/**
 * Keeps the DAG pictures in the docs equal to what `caravan graph` draws: a line
 * `<!-- graph: <workflow> -->` followed by a ```mermaid block gets the Mermaid picture of
 * workflows/<workflow>.yaml. tests/unit/docPictures.test.ts fails when one is stale.
 *
 *   npx tsx scripts/docPictures.ts            # rewrite the pictures in docs/patterns.md
 *   npx tsx scripts/docPictures.ts --check    # exit 1 when one is stale
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildGraphPicture } from '../engine/compile/GraphPicture.js';
import { renderMermaid } from '../engine/compile/renderMermaid.js';
import { validateText } from '../engine/spec/validateWorkflows.js';

const ROOT = join(fileURLToPath(new URL('.', import.meta.url)), '..');
export const PICTURE_PAGES = ['docs/patterns.md'];

function mermaidOf(root: string, name: string): string {
  const file = `workflows/${name}.yaml`;
  const result = validateText(file, readFileSync(join(root, file), 'utf8'));
  if (result.workflow === undefined) throw new Error(`${file} is not valid: run caravan validate`);
  return renderMermaid(buildGraphPicture(result.workflow)).trimEnd();
}

/** The page with every marked picture redrawn. */
export function redrawPictures(page: string, root = ROOT): string {
  return page.replace(/<!-- graph: ([a-z0-9-]+) -->\n```mermaid\n[^]*?```/g, (_m, name: string) => `<!-- graph: ${name} -->\n\`\`\`mermaid\n${mermaidOf(root, name)}\n\`\`\``);
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  let stale = false;
  for (const path of PICTURE_PAGES) {
    const file = join(ROOT, path);
    const page = readFileSync(file, 'utf8');
    const drawn = redrawPictures(page);
    if (drawn === page) continue;
    if (process.argv.includes('--check')) {
      process.stderr.write(`${path} has stale pictures: run npx tsx scripts/docPictures.ts\n`);
      stale = true;
    } else writeFileSync(file, drawn);
  }
  process.exit(stale ? 1 : 0);
}
