import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../engine/cli/main.js';
import { runBin, startBin } from '../harness/cli.js';
import { tempRepo } from '../harness/gitRepo.js';
import { until } from '../harness/until.js';

/** `caravan graph` through the built CLI (run `npm run build` first), in a process of its own. */

const fixture = (path: string): Promise<string> => readFile(new URL(`../fixtures/${path}`, import.meta.url), 'utf8');
const runIdOf = (out: string): string => /^(?:\d\d:\d\d:\d\d )?run (\S+) of /m.exec(out)?.[1] ?? '';

async function repo(): Promise<string> {
  const dir = await tempRepo({ 'coinflip.yaml': await fixture('argo/coinflip.yaml'), 'exit-handlers.yaml': await fixture('argo/exit-handlers.yaml') });
  await writeFile(join(dir, '.gitignore'), 'go\n');
  return dir;
}

describe('caravan graph', () => {
  it('draws a workflow by name or by file, in each format, as the golden files show', async () => {
    const dir = await repo();
    for (const [format, ext] of [['mermaid', 'mmd'], ['dot', 'dot'], ['text', 'txt']] as const) {
      const r = await runBin(['graph', 'coinflip', '--format', format], { cwd: dir });
      expect(r).toEqual({ code: 0, out: await fixture(`graph/coinflip.${ext}`), err: '' });
    }
    // Mermaid is the default; a file is found relative to the current directory.
    await mkdir(join(dir, 'sub'));
    expect(await runBin(['graph', '../workflows/exit-handlers.yaml'], { cwd: join(dir, 'sub') })).toEqual({ code: 0, out: await fixture('graph/exit-handlers.mmd'), err: '' });
  });

  it('colours a finished run by its tasks, from its record on caravan/runs', async () => {
    const dir = await repo();
    const run = await runBin(['run', 'coinflip', '--param', 'force=tails'], { cwd: dir });
    expect(run.code).toBe(0);
    const id = runIdOf(run.out);
    const text = await runBin(['graph', '--run', id, '-f', 'text'], { cwd: dir });
    expect(text).toEqual({
      code: 0,
      err: '',
      out:
        'workflow coinflip\n' +
        '  1. flip-coin (succeeded)\n' +
        '  2. heads [when] (skipped), tails [when] (succeeded)\n' +
        '  3. join [when] (succeeded)\n' +
        'conditions and fan-out:\n' +
        "  heads when: tasks.flip-coin.outputs.result == 'heads'\n" +
        "  tails when: tasks.flip-coin.outputs.result == 'tails'\n" +
        '  join when: !failure() && !cancelled()\n',
    });
    const mermaid = await runBin(['graph', 'coinflip', '--run', id], { cwd: dir });
    expect(mermaid.code).toBe(0);
    expect(mermaid.out).toContain(`  n2("heads<br/>when: tasks.flip-coin.outputs.result == 'heads'<br/>skipped")\n`);
    expect(mermaid.out).toMatch(/^ {2}classDef succeeded fill:#d3f9d8,/m);
    expect(mermaid.out).toContain('  class n1,n3,n4 succeeded\n');
    expect(mermaid.out).toContain('  class n2 skipped\n');
    const dot = await runBin(['graph', '--run', id, '--format', 'dot'], { cwd: dir });
    expect(dot.out).toContain('n2 [label="heads\\nwhen: tasks.flip-coin.outputs.result == \'heads\'\\nskipped", shape=box, style="rounded,filled", fillcolor="#f1f3f5"');
  });

  it("colours a live run from its journal, then the same run once it is over", async () => {
    const dir = await repo();
    const running = startBin(['run', 'exit-handlers', '--param', 'outcome=wait'], { cwd: dir });
    const exited = running.exited;
    await until('the waiting task to start', () => running.out().includes('intentional-fail started'));
    const id = runIdOf(running.out());
    const live = await runBin(['graph', '--run', id, '-f', 'text'], { cwd: dir });
    expect(live.code).toBe(0);
    expect(live.out).toContain('  1. intentional-fail (running)\n');
    expect(live.out).toContain('finally:\n  1. send-email (pending), celebrate [when] (pending), cry [when] (pending)\n');
    await writeFile(join(dir, 'go'), '');
    expect(await exited).toBe(1);
    const over = await runBin(['graph', '--run', id, '-f', 'text'], { cwd: dir });
    expect(over.out).toContain('  1. intentional-fail (failed)\n');
    expect(over.out).toContain('finally:\n  1. send-email (succeeded), celebrate [when] (skipped), cry [when] (succeeded)\n');
  });

  it('says what is wrong, with the exit code of each error', async () => {
    const dir = await repo();
    const unknown = await runBin(['graph', 'nope'], { cwd: dir });
    expect(unknown).toEqual({ code: 66, out: '', err: "caravan: unknown workflow 'nope'; workflows here: coinflip, exit-handlers\n" });
    const noRun = await runBin(['graph', '--run', '20990101-000000-abcdef'], { cwd: dir });
    expect(noRun).toEqual({ code: 66, out: '', err: 'caravan: no run 20990101-000000-abcdef on caravan/runs or in the local journal\n' });
    const format = await runBin(['graph', 'coinflip', '--format', 'png'], { cwd: dir });
    expect(format.code).toBe(64);
    expect(format.err).toContain("error: option '-f, --format <format>' argument 'png' is invalid. Allowed choices are mermaid, dot, text.");
    const traversal = await runBin(['graph', '--run', '../../HEAD'], { cwd: dir });
    expect(traversal).toEqual({ code: 64, out: '', err: "caravan: not a run id: '../../HEAD' (letters, digits, '.', '_' and '-')\n" });
    expect(await runBin(['graph'], { cwd: dir })).toEqual({ code: 64, out: '', err: 'caravan: graph takes a workflow (name or file), or --run <run-id>\n' });
    const run = await runBin(['run', 'coinflip', '--param', 'force=heads'], { cwd: dir });
    const other = await runBin(['graph', 'exit-handlers', '--run', runIdOf(run.out)], { cwd: dir });
    expect(other).toEqual({ code: 64, out: '', err: `caravan: run ${runIdOf(run.out)} is a run of coinflip, not of exit-handlers\n` });
    const outside = await runBin(['graph', '--run', runIdOf(run.out)], { cwd: tmpdir() });
    expect(outside.code).toBe(64);
    expect(outside.err).toMatch(/^caravan: \S+ is not inside a Git repository; runs are recorded in Git\n$/);
  });

  it('documents itself in --help, examples included', async () => {
    const help = await runBin(['graph', '--help'], { cwd: tmpdir() });
    expect(help.code).toBe(0);
    expect(help.out).toContain('Usage: caravan graph [options] [workflow]');
    // Commander wraps lines to the terminal's width.
    expect(help.out.replace(/\s+/g, ' ')).toContain('(choices: "mermaid", "dot", "text", default: "mermaid")');
    expect(help.out).toContain('caravan graph --run 20250101-120000-abc123 --format text');
  });

  it('shows escape sequences in a condition instead of sending them to a terminal', async () => {
    const dir = await tempRepo({ 'esc.yaml': 'apiVersion: caravan/v1\nkind: Workflow\nmetadata:\n  name: esc\nspec:\n  params:\n    x: { type: string, default: "" }\n  tasks:\n    - name: a\n      when: "${{ params.x == \'\\u001b]0;pwned\\u0007\' }}"\n      run: echo\n' });
    let out = '';
    const code = await main(['graph', 'esc', '-f', 'text'], { cwd: dir, stdout: (t) => { out += t; }, stderr: () => undefined, isTTY: true });
    expect(code).toBe(0);
    expect(out).toContain("a when: params.x == '\\x1b]0;pwned\\x07'\n");
    expect(out).not.toContain('\u001b');
  });
});
