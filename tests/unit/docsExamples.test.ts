import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

/**
 * Workflows quoted in the docs are the files the suite runs: a quoted block introduced by
 * "In Caravan (`tests/fixtures/...`" must be that file, byte for byte, so the page cannot
 * show a workflow that no longer validates or behaves as described.
 */
function quotedFixtures(page: string): Array<{ path: string; block: string }> {
  const out: Array<{ path: string; block: string }> = [];
  for (const m of page.matchAll(/In Caravan \(`(tests\/fixtures\/[^`]+\.yaml)`[^]*?```yaml\n([^]*?)```/g)) out.push({ path: m[1]!, block: m[2]! });
  return out;
}

describe('workflows quoted in docs/migrating-from-argo.md', () => {
  const quoted = quotedFixtures(readFileSync('docs/migrating-from-argo.md', 'utf8'));

  it('quotes the two examples', () => {
    expect(quoted.map((q) => q.path)).toEqual(['tests/fixtures/argo/coinflip.yaml', 'tests/fixtures/argo/exit-handlers.yaml']);
  });

  it.each(['tests/fixtures/argo/coinflip.yaml', 'tests/fixtures/argo/exit-handlers.yaml'])('%s is quoted as it is', (path) => {
    expect(quoted.find((q) => q.path === path)?.block).toBe(readFileSync(path, 'utf8'));
  });
});

describe("the README's tour", () => {
  it('shows a workflow that validates', async () => {
    const { validateText } = await import('../../engine/spec/validateWorkflows.js');
    const block = /```yaml\n(# yaml-language-server[^]*?)```/.exec(readFileSync('README.md', 'utf8'))?.[1];
    expect(block).toBeDefined();
    const result = validateText('README.md', block!);
    expect(result.diagnostics.filter((d) => d.severity === 'error')).toEqual([]);
    expect(result.workflow?.metadata.name).toBe('quarterly-report');
  });
});
