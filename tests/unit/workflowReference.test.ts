import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { currentWorkflowReference, REFERENCE_PATH } from '../../scripts/workflowReference.js';

const schema = JSON.parse(readFileSync('schemas/workflow.v1.json', 'utf8')) as { $defs: Record<string, { properties?: Record<string, unknown> }> };

describe('docs/workflow-reference.md', () => {
  const page = currentWorkflowReference();

  it('is what scripts/workflowReference.ts generates from the schema (run it when this fails)', () => {
    expect(readFileSync(REFERENCE_PATH, 'utf8')).toBe(page);
  });

  it('has a row with a type and an example for every field of every object', () => {
    const rows = page.split('\n').filter((l) => l.startsWith('| `'));
    const fields = Object.values(schema.$defs).flatMap((d) => Object.keys(d.properties ?? {}));
    for (const field of new Set(fields)) expect(rows.some((r) => r.startsWith(`| \`${field}\``)), field).toBe(true);
    for (const row of rows) {
      const cells = row.split(/(?<!\\)\|/).map((c) => c.trim());
      // | field | type | default | example | description |
      expect(cells[2], row).not.toBe('');
      expect(cells[4], row).not.toBe('');
    }
  });

  it('links every shared definition it names to a section of the page', () => {
    // GitHub's anchors: headings lower-cased, spaces to dashes, punctuation dropped.
    const anchors = new Set([
      ...[...page.matchAll(/^#+ (.+)$/gm)].map(([, h]) => (h ?? '').toLowerCase().replace(/[^a-z0-9 -]/g, '').replace(/ /g, '-')),
      ...[...page.matchAll(/<a id="([^"]+)"><\/a>/g)].map(([, id]) => id),
    ]);
    const targets = [...page.matchAll(/\]\(#([a-z0-9-]+)\)/g)].map(([, t]) => t);
    expect(targets.length).toBeGreaterThan(10);
    for (const target of targets) expect(anchors.has(target), target).toBe(true);
  });
});
