import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { caravanBin } from '../harness/cli.js';
import { tempRepo, workflow } from '../harness/gitRepo.js';
import { until } from '../harness/until.js';

/**
 * The HTTP API end to end: `caravan controller --listen 127.0.0.1:0 --tokens-file F` (the
 * built CLI, in a process of its own) on a real repository; a run is started over HTTP, its
 * log followed as NDJSON while it runs, and read back once over. No token reaches its log.
 */

const OPS = 'e2e-operator-token-00112233445566';
const VIEW = 'e2e-viewer-token-77889900aabbccdd';

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

describe('caravan controller --listen with the API', () => {
  it('starts a run over HTTP, streams its log as it is written, and reads the run back', async () => {
    const wf = workflow('stream', '  tasks:\n    - { name: talk, run: "echo one; while [ ! -f go ]; do sleep 0.05; done; echo two" }\n');
    const dir = await tempRepo({ 'stream.yaml': wf });
    const tokens = join(dir, '.git', 'tokens.yaml');
    await writeFile(join(dir, '.git', 'view.token'), `${VIEW}\n`);
    await writeFile(tokens, `- name: ops\n  token: ${OPS}\n  role: operator\n- name: watcher\n  tokenFile: view.token\n  role: viewer\n`);
    const child = spawn(process.execPath, [caravanBin, 'controller', '--repo', dir, '--interval', '1h', '--listen', '127.0.0.1:0', '--tokens-file', tokens, '--private-metrics'], { cwd: dir, env: { ...process.env, CARAVAN_LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    let err = '';
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    await until(() => `the controller to say where it listens\n${out}${err}`, () => /listening on (http:\/\/\S+)/.test(out));
    const url = /listening on (http:\/\/[^\s;]+)/.exec(out)![1]!;
    const auth = (t: string): Record<string, string> => ({ authorization: `Bearer ${t}` });

    expect((await fetch(`${url}/api/v1/runs`)).status).toBe(401);
    // --private-metrics: a scrape needs one of the API's tokens, of any role.
    expect((await fetch(`${url}/metrics`)).status).toBe(401);
    expect((await fetch(`${url}/metrics`, { headers: { authorization: 'Bearer not-a-token' } })).status).toBe(401);
    const scraped = await fetch(`${url}/metrics`, { headers: auth(VIEW) });
    expect(scraped.status).toBe(200);
    expect(await scraped.text()).toContain('# TYPE caravan_runs_started_total counter');
    const doc = (await (await fetch(`${url}/openapi.json`)).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(doc.paths)).toContain('/api/v1/workflows/{name}/runs');

    const started = await fetch(`${url}/api/v1/workflows/stream/runs`, { method: 'POST', headers: { ...auth(OPS), 'content-type': 'application/json' }, body: JSON.stringify({ idempotencyKey: 'e2e-1' }) });
    expect(started.status).toBe(201);
    const { runId, urls } = (await started.json()) as { runId: string; urls: { run: string } };
    expect((await fetch(`${url}/api/v1/workflows/stream/runs`, { method: 'POST', headers: auth(VIEW) })).status).toBe(403);

    const follow = await fetch(`${url}/api/v1/runs/${runId}/logs/talk?follow=true`, { headers: auth(VIEW) });
    expect(follow.status).toBe(200);
    expect(follow.headers.get('content-type')).toMatch(/^application\/x-ndjson/);
    const reader = follow.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    while (!text.includes('\n')) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    expect(JSON.parse(text.split('\n')[0]!)).toMatchObject({ task: 'talk', stream: 'stdout', line: 'one' });
    // The task waits for this file: the first line came while the run was still running.
    const during = (await (await fetch(`${url}${urls.run}`, { headers: auth(VIEW) })).json()) as { run: { status: string }; live: boolean };
    expect(during.run.status).toBe('running');
    await writeFile(join(dir, 'go'), '');
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    expect(text.trim().split('\n').map((l) => (JSON.parse(l) as { line: string }).line)).toEqual(['one', 'two']);

    await until('the run to be over', async () => ((await (await fetch(`${url}${urls.run}`, { headers: auth(VIEW) })).json()) as { run: { status: string } }).run.status === 'succeeded');
    const page = (await (await fetch(`${url}/api/v1/runs?workflow=stream`, { headers: auth(VIEW) })).json()) as { runs: Array<{ runId: string; status: string }> };
    expect(page.runs).toMatchObject([{ runId, status: 'succeeded' }]);

    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    const lines = err.split('\n').filter((l) => l.trim() !== '');
    expect(lines.some((l) => l.includes('"api request"'))).toBe(true);
    for (const l of lines) {
      expect(l).not.toContain(OPS);
      expect(l).not.toContain(VIEW);
    }
  });
});
