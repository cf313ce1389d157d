import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cli, withEnv } from '../harness/cli.js';
import { git, repoWith, workflow } from '../harness/gitRepo.js';

// Issue 11: an env secret leaked through a failing command (`/bin/sh: <secret>: not found`
// in task.failed), an output-parse error quoting the line, an output a downstream task
// splices into its command line, and line by line when the secret spans lines. The canary
// values run through every one of those routes; afterwards not even a fragment of them may
// be found in anything Caravan printed or stored.
const CANARY = 'cnry7Fh2Qp9Lw3Xv';
/** A param declared `secret: true`, given on the command line. */
const PARAM_CANARY = 'prmQ4Zt8Vb1Nc6Kd';
const PEM_LINES = ['mlA-Zt5Rk8Yc2Wq', 'mlB-Hd4Nv6Ju1Px'];
const PEM = `-----BEGIN KEY-----\n${PEM_LINES[0]}\n${PEM_LINES[1]}\n-----END KEY-----`;

const secretEnv = '      env: { S: { secret: { path: app/db, key: password } } }';
// Everything else needs `leaky`: once one task fails no new task starts, so the task that
// splices its output must start together with the failing ones.
const spec = [
  '  params:',
  '    token: { type: string, secret: true }',
  '  tasks:',
  // A secret param echoed, spliced into a command line and run as a command.
  '    - name: param-user',
  '      needs: [leaky]',
  '      run: \'echo "token ${{ params.token }}"; echo "err ${{ params.token }}" >&2; ${{ params.token }}\'',
  // An output carrying the secret, spliced into the next task's command line.
  '    - name: leaky',
  '      run: \'printf "x=%s\\n" "$S" > "$CARAVAN_OUTPUTS"\'',
  '      outputs: [x]',
  secretEnv,
  '    - name: downstream',
  '      needs: [leaky]',
  '      run: \'echo "got ${{ tasks.leaky.outputs.x }}" >&2; exit 3\'',
  // Echoed, and run as a command: the shell's "not found" line quotes it in the failure.
  '    - name: failing-command',
  '      needs: [leaky]',
  '      run: \'echo "value $S"; echo "err $S" >&2; $S\'',
  secretEnv,
  // An outputs line that is not key=value: the parse error quotes the line.
  '    - name: bad-outputs',
  '      needs: [leaky]',
  '      run: \'printf "oops %s\\n" "$S" > "$CARAVAN_OUTPUTS"\'',
  '      outputs: [x]',
  secretEnv,
  // The same, with the secret straddling the 60 characters the parse error quotes.
  '    - name: cut-outputs',
  '      needs: [leaky]',
  '      run: \'printf "%050d%s\\n" 0 "$S" > "$CARAVAN_OUTPUTS"\'',
  '      outputs: [x]',
  secretEnv,
  // A secret that spans lines is logged line by line.
  '    - name: multi-line',
  '      needs: [leaky]',
  '      run: \'echo "$M"; echo "$M" >&2; exit 1\'',
  '      env: { M: { secret: { path: app/key, key: pem } } }',
  '',
].join('\n');

/** The secret lines, each with every 8-character piece of it: a cut secret leaks a fragment, not the whole. */
const SECRET_PIECES = [CANARY, PARAM_CANARY, ...PEM_LINES].map((s) => ({ secret: s, pieces: Array.from({ length: s.length - 7 }, (_, i) => s.slice(i, i + 8)) }));

/** One entry per secret line that `text` holds a piece of, naming where and the first piece found. */
function leaks(where: string, text: string): string[] {
  const out: string[] = [];
  for (const { pieces } of SECRET_PIECES) {
    const hit = pieces.find((p) => text.includes(p));
    if (hit !== undefined) out.push(`${where}: ${hit}`);
  }
  return out;
}

/** Every regular file under `dir` but Git's compressed objects, read raw (journals, live files). */
async function plainFiles(dir: string): Promise<Array<[string, string]>> {
  const out: Array<[string, string]> = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    const path = join(e.parentPath, e.name);
    if (!e.isFile() || path.includes(`${join('.git', 'objects')}`)) continue;
    out.push([path, await readFile(path, 'latin1')]);
  }
  return out;
}

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('secret canary', () => {
  it('a failing local run whose commands and outputs carry env secrets leaves no trace of them', async () => {
    const dir = await repoWith({ 'canary.yaml': workflow('canary', spec) });
    dirs.push(dir);
    const found: string[] = [];
    await withEnv({ CARAVAN_SECRET_APP_DB_PASSWORD: CANARY, CARAVAN_SECRET_APP_KEY_PEM: PEM }, async () => {
      const plain = await cli(dir, 'run', 'canary', '--param', `token=${PARAM_CANARY}`);
      expect(plain.code).toBe(1);
      found.push(...leaks('run stdout', plain.out), ...leaks('run stderr', plain.err));
      const json = await cli(dir, 'run', 'canary', '--json', '--param', `token=${PARAM_CANARY}`);
      expect(json.code).toBe(1);
      found.push(...leaks('run --json stdout', json.out), ...leaks('run --json stderr', json.err));
      const events = json.out.trim().split('\n').map((l) => JSON.parse(l) as { runId: string; type: string; task?: string; error?: string });
      // The routes were taken: each task failed the way the test means it to.
      const failed = new Map(events.filter((e) => e.type === 'task.failed').map((e) => [e.task, e.error ?? '']));
      expect(failed.get('failing-command')).toMatch(/^command not found \(exit 127\): .*not found/);
      expect(failed.get('bad-outputs')).toMatch(/^outputs line 1 is not key=value: 'oops /);
      expect(failed.get('cut-outputs')).toMatch(/^outputs line 1 is not key=value: '0{50}/);
      expect(failed.get('downstream')).toMatch(/^exited with code 3: got /);
      expect(failed.get('multi-line')).toMatch(/^exited with code 1: /);
      expect(failed.get('param-user')).toMatch(/^command not found \(exit 127\)/);
      // The param is recorded, as ***; the task had its real value (it ran it as a command).
      expect(events.find((e) => e.type === 'run.started')).toMatchObject({ params: { token: '***' } });
      expect(events.some((e) => e.type === 'task.succeeded' && e.task === 'leaky')).toBe(true);
      const runId = events[0]!.runId;
      for (const args of [['status', runId], ['status', runId, '--json'], ['logs', runId], ['runs']]) {
        const r = await cli(dir, ...args);
        found.push(...leaks(`caravan ${args.join(' ')}`, r.out + r.err));
      }
    });
    found.push(...leaks('git log -p --all', await git(dir, 'log', '-p', '--all')));
    found.push(...leaks('git log -p caravan/runs', await git(dir, 'log', '-p', 'caravan/runs')));
    for (const [path, text] of await plainFiles(dir)) found.push(...leaks(path, text));
    expect(found).toEqual([]);
  });

  it('stdout captured as an output and the run outputs a parent reads carry no secret: masked before they are stored or logged', async () => {
    const child = [
      '  params:',
      '    token: { type: string, secret: true }',
      '  outputs:',
      '    said: ${{ tasks.speak.outputs.result }}',
      '    token: ${{ params.token }}',
      '  tasks:',
      '    - name: speak',
      '      run: \'echo "s=$S"; echo "$M"; echo "t=${{ params.token }}"\'',
      '      env: { S: { secret: { path: app/db, key: password } }, M: { secret: { path: app/key, key: pem } } }',
      '      outputs: [{ name: result, from: stdout }]',
      '    - name: listen',
      '      needs: [speak]',
      '      run: \'echo "heard ${{ tasks.speak.outputs.result }}"\'',
      '',
    ].join('\n');
    const parent = [
      '  params:',
      '    token: { type: string, secret: true }',
      '  tasks:',
      '    - name: call',
      '      workflow: { name: canary-stdout, params: { token: "${{ params.token }}" } }',
      '    - name: use',
      '      needs: [call]',
      '      run: \'echo "child said ${{ tasks.call.outputs.said }} / ${{ tasks.call.outputs.token }}"\'',
      '',
    ].join('\n');
    const dir = await repoWith({ 'canary-stdout.yaml': workflow('canary-stdout', child), 'canary-parent.yaml': workflow('canary-parent', parent) });
    dirs.push(dir);
    const found: string[] = [];
    await withEnv({ CARAVAN_SECRET_APP_DB_PASSWORD: CANARY, CARAVAN_SECRET_APP_KEY_PEM: PEM }, async () => {
      const r = await cli(dir, 'run', 'canary-parent', '--json', '--param', `token=${PARAM_CANARY}`);
      found.push(...leaks('run stdout', r.out), ...leaks('run stderr', r.err));
      expect(r.code).toBe(0);
      const parentId = (JSON.parse(r.out.split('\n')[0]!) as { runId: string }).runId;
      const p = JSON.parse((await cli(dir, 'status', parentId, '--json')).out) as { tasks: Record<string, { outputs: Record<string, string> }> };
      const childId = p.tasks['call']!.outputs['runId']!;
      const c = JSON.parse((await cli(dir, 'status', childId, '--json')).out) as { outputs: Record<string, string>; tasks: Record<string, { outputs: Record<string, string> }> };
      // The route was taken: the value held each secret, masked whole (the PEM as one).
      expect(c.tasks['speak']!.outputs).toEqual({ result: 's=***\n***\nt=***' });
      expect(c.outputs).toEqual({ said: 's=***\n***\nt=***', token: '***' });
      expect(p.tasks['call']!.outputs).toEqual({ said: 's=***\n***\nt=***', token: '***', runId: childId, status: 'succeeded' });
      for (const args of [['status', childId, '--json'], ['status', parentId, '--json'], ['logs', childId], ['logs', parentId]]) {
        const out = await cli(dir, ...args);
        found.push(...leaks(`caravan ${args.join(' ')}`, out.out + out.err));
      }
    });
    found.push(...leaks('git log -p caravan/runs', await git(dir, 'log', '-p', 'caravan/runs')));
    for (const [path, text] of await plainFiles(dir)) found.push(...leaks(path, text));
    expect(found).toEqual([]);
  });
});
