import { cp, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cli, runBin } from '../harness/cli.js';

const root = fileURLToPath(new URL('../../', import.meta.url));


async function tree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) {
      const full = join(e.parentPath, e.name);
      out[full.slice(dir.length + 1)] = await readFile(full, 'utf8');
    }
  }
  return out;
}

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'caravan-render-'));
  await cp(join(root, 'workflows'), join(dir, 'workflows'), { recursive: true });
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('caravan render', () => {
  it('the repository itself is up to date (render --check passes)', async () => {
    const r = await cli(root, 'render', '--check');
    expect(r.out).toBe("nomad-jobs/ is up to date (20 jobs from 6 workflows, and the controller's)\n");
    expect(r.code).toBe(0);
  });

  it('writes, then --check passes; an edit makes it stale; render fixes it and removes jobs that went away', async () => {
    expect((await cli(dir, 'render')).out).toBe('nomad-jobs/: 20 written, 0 removed, 0 unchanged (20 jobs from 6 workflows); README.md written\n');
    expect((await cli(dir, 'render', '--check')).code).toBe(0);

    const saga = join(dir, 'workflows', 'order-saga.yaml');
    const text = await readFile(saga, 'utf8');
    await writeFile(saga, text.replace('echo "booking shipping', 'echo "booking express shipping').replace('    - name: book-shipping', '    - name: ship'));
    await writeFile(join(dir, 'nomad-jobs', 'README.md'), 'edited by hand\n');
    await rm(join(dir, 'nomad-jobs', 'order-saga', 'caravan-order-saga-alert.json'));

    const check = await cli(dir, 'render', '--check');
    expect(check.code).toBe(1);
    expect(check.out).toBe([
      'stale:   nomad-jobs/README.md',
      'missing: nomad-jobs/order-saga/caravan-order-saga-alert.json',
      'missing: nomad-jobs/order-saga/caravan-order-saga-ship.json',
      'extra:   nomad-jobs/order-saga/caravan-order-saga-book-shipping.json',
      'nomad-jobs/ is out of date: run `caravan render` and commit the result',
      '',
    ].join('\n'));

    expect((await cli(dir, 'render')).out).toBe('nomad-jobs/: 2 written, 1 removed, 18 unchanged (20 jobs from 6 workflows); README.md written\n');
    // Nothing changed: every job file counts as unchanged, and the README is no job.
    expect((await cli(dir, 'render')).out).toBe('nomad-jobs/: 0 written, 0 removed, 20 unchanged (20 jobs from 6 workflows)\n');
    expect((await cli(dir, 'render', '--check')).code).toBe(0);
    expect(Object.keys(await tree(join(dir, 'nomad-jobs'))).filter((p) => p.startsWith('order-saga/')).sort()).toEqual([
      'order-saga/caravan-order-saga-alert.json',
      'order-saga/caravan-order-saga-charge-card-compensate.json',
      'order-saga/caravan-order-saga-charge-card.json',
      'order-saga/caravan-order-saga-reserve-stock-compensate.json',
      'order-saga/caravan-order-saga-reserve-stock.json',
      'order-saga/caravan-order-saga-ship.json',
    ]);
  });

  it('refuses to render invalid workflows (exit 2) and writes nothing', async () => {
    await writeFile(join(dir, 'workflows', 'broken.yaml'), 'apiVersion: caravan/v1\nkind: Workflow\nmetadata: { name: broken }\nspec: { tasks: [{ name: a, needs: [zz], run: x }] }\n');
    const r = await cli(dir, 'render');
    expect(r.code).toBe(2);
    expect(r.out).toContain("workflows/broken.yaml:4:36: error NEEDS_UNKNOWN: task 'a' needs unknown task 'zz'");
    expect(r.err).toBe('caravan: nothing rendered: fix the workflows first\n');
    await expect(readdir(join(dir, 'nomad-jobs'))).rejects.toThrow();
  });

  it('reports job ID collisions with exit 2', async () => {
    await writeFile(join(dir, 'workflows', 'twins.yaml'), 'apiVersion: caravan/v1\nkind: Workflow\nmetadata: { name: twins }\nspec: { tasks: [{ name: Build, run: a }, { name: build, run: b }] }\n');
    const r = await cli(dir, 'render');
    expect(r).toEqual({ code: 2, err: '', out: "workflows/twins.yaml: error COMPILE: task 'build' and task 'Build' both compile to Nomad job ID 'caravan-twins-build'; rename one of them\n" });
  });

  it('renders identical bytes in another process with another time zone, locale and working directory', async () => {
    await cli(dir, 'render');
    const other = join(dir, 'elsewhere');
    const r = await runBin(['render', '--out', other, join(dir, 'workflows')], {
      cwd: tmpdir(),
      env: { ...process.env, TZ: 'Pacific/Chatham', LANG: 'tr_TR.UTF-8', LC_ALL: 'tr_TR.UTF-8' },
    });
    expect(r.code, r.err).toBe(0);
    expect(await tree(other)).toEqual(await tree(join(dir, 'nomad-jobs')));
  });
});
