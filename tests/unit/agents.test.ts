import { createServer, type Server } from 'node:http';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentAction, AgentIo, AgentResult } from '../../agents/AgentType.js';
import { httpAgent, sleepAgent } from '../../agents/builtinAgents.js';
import { parseOutputs } from '../../agents/readOutputs.js';
import { shellAgent } from '../../agents/shellAgent.js';
import { ShellWorkerPool } from '../../agents/ShellWorkerPool.js';
import { until } from '../harness/until.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'caravan-agent-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let workers: ShellWorkerPool | undefined;

async function run(agent: { run(a: AgentAction, io: AgentIo): Promise<AgentResult> }, action: Partial<AgentAction>, abort?: AbortController): Promise<{ result: AgentResult; lines: string[] }> {
  const lines: string[] = [];
  const scratch = await mkdtemp(join(dir, 'scratch-'));
  const result = await agent.run({ agent: 'shell', env: {}, outputs: [], ...action }, { log: (s, l) => lines.push(`${s}: ${l}`), signal: (abort ?? new AbortController()).signal, scratchDir: scratch, baseDir: dir, ...(workers !== undefined ? { workers } : {}) });
  return { result, lines };
}

// The same behaviour whether commands are spawned from Node or run by the pool of shells.
describe.each(['spawned from Node', 'run by shell workers'])('shell agent, %s', (mode) => {
  beforeAll(() => {
    workers = mode === 'run by shell workers' ? new ShellWorkerPool(2, join(dir, 'workers')) : undefined;
  });
  afterAll(() => {
    workers?.close();
    workers = undefined;
  });

  it('runs through /bin/sh with env and cwd, streams lines in order, and reads key=value outputs', async () => {
    const { result, lines } = await run(shellAgent, { run: 'echo one; echo two >&2; echo "$GREETING from $(basename "$PWD")"; printf "count=3\\nname=x=y\\n" > "$CARAVAN_OUTPUTS"', env: { GREETING: 'hello' }, outputs: ['count', 'name'] });
    expect(result).toEqual({ ok: true, outputs: { count: '3', name: 'x=y' }, exitCode: 0 });
    expect(lines.filter((l) => l.startsWith('stdout'))).toEqual(['stdout: one', `stdout: hello from ${dir.split('/').pop()}`]);
    expect(lines).toContain('stderr: two');
  });

  it('runs args without a shell, and reads JSON outputs (non-strings kept as JSON)', async () => {
    await writeFile(join(dir, 'emit.sh'), '#!/bin/sh\nprintf \'{"list":[1,2],"n":"%s"}\' "$1" > "$CARAVAN_OUTPUTS"\n', { mode: 0o755 });
    const { result } = await run(shellAgent, { args: ['./emit.sh', '$HOME;not-expanded'], outputs: ['list', 'n'] });
    expect(result).toEqual({ ok: true, outputs: { list: '[1,2]', n: '$HOME;not-expanded' }, exitCode: 0 });
  });

  it('reports a missing command clearly and does not ask for a retry', async () => {
    const direct = (await run(shellAgent, { run: 'definitely-not-a-command-xyz' })).result;
    expect(direct).toMatchObject({ ok: false, retryable: false, exitCode: 127 });
    expect((direct as { error: string }).error).toMatch(/^command not found.*definitely-not-a-command-xyz/);
    const viaShell = (await run(shellAgent, { run: 'definitely-not-a-command-xyz && true' })).result;
    expect(viaShell).toMatchObject({ ok: false, retryable: false, exitCode: 127 });
    expect((viaShell as { error: string }).error).toMatch(/^command not found \(exit 127\): .*definitely-not-a-command-xyz/);
  });

  it('reports the exit code and the last stderr line of a failing command', async () => {
    expect((await run(shellAgent, { run: 'echo bad input >&2; exit 3' })).result).toEqual({ ok: false, error: 'exited with code 3: bad input', retryable: true, exitCode: 3, failure: 'exit' });
  });

  it('reports a task killed by a signal', async () => {
    expect((await run(shellAgent, { run: 'kill -9 $$' })).result).toMatchObject({ ok: false, error: 'killed by SIGKILL', retryable: true, failure: 'infrastructure' });
  });

  it('on timeout kills the whole process group, children included', async () => {
    const pidFile = join(dir, 'child.pid');
    const { result } = await run(shellAgent, { run: `sleep 30 & echo $! > ${pidFile}; wait`, timeoutMs: 300 });
    expect(result).toEqual({ ok: false, error: 'timed out after 300ms; the process group was killed', retryable: true, failure: 'timeout' });
    const child = Number(await readFile(pidFile, 'utf8'));
    // Gone, or a zombie waiting to be reaped by init: either way no longer running. SIGKILL
    // is delivered asynchronously, so the state is awaited rather than read once.
    const state = (): Promise<string> => readFile(`/proc/${child}/stat`, 'utf8').then((s) => s.split(') ')[1]?.[0] ?? '?', () => 'gone');
    await until(`process ${child} to stop running`, async () => ['gone', 'Z', 'X'].includes(await state()), 10_000);
  });

  it('stops promptly when cancelled', async () => {
    const abort = new AbortController();
    const pending = run(shellAgent, { run: 'sleep 30' }, abort);
    setTimeout(() => abort.abort(), 100);
    expect((await pending).result).toEqual({ ok: false, error: 'cancelled', retryable: false });
  });

  it('fails on missing, garbled or oversize outputs, saying which', async () => {
    expect((await run(shellAgent, { run: 'true', outputs: ['x'] })).result).toEqual({ ok: false, error: 'declared outputs x were not written to $CARAVAN_OUTPUTS', retryable: false, exitCode: 0 });
    expect((await run(shellAgent, { run: 'echo "{not json" > "$CARAVAN_OUTPUTS"', outputs: ['x'] })).result).toMatchObject({ ok: false, retryable: false });
    expect((await run(shellAgent, { run: 'head -c 1100000 /dev/zero | tr "\\0" a > "$CARAVAN_OUTPUTS"', outputs: ['x'] })).result).toEqual({ ok: false, error: 'outputs file is 1100000 bytes; the limit is 1048576', retryable: false, exitCode: 0 });
  });
});

describe('outputs format', () => {
  it('accepts JSON objects and key=value lines; rejects the rest with the line', () => {
    expect(parseOutputs('{"a": "1", "b": {"c": 2}}')).toEqual({ ok: true, outputs: { a: '1', b: '{"c":2}' } });
    expect(parseOutputs('a=1\r\n\nb = 2\n')).toEqual({ ok: false, error: "outputs line 3: 'b ' is not a valid output name" });
    expect(parseOutputs('a=1\njust text\n')).toEqual({ ok: false, error: "outputs line 2 is not key=value: 'just text'" });
    expect(parseOutputs('[1,2]')).toEqual({ ok: false, error: "outputs line 1 is not key=value: '[1,2]'" });
    expect(parseOutputs('{"bad key": 1}')).toEqual({ ok: false, error: "output name 'bad key' is not valid" });
  });
});

describe('http agent', () => {
  let server: Server;
  let base: string;
  const seen: Array<{ method: string; url: string; body: string; auth: string | undefined }> = [];
  beforeAll(async () => {
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => { body += c.toString(); });
      req.on('end', () => {
        seen.push({ method: req.method!, url: req.url!, body, auth: req.headers.authorization });
        if (req.url === '/fail') { res.statusCode = 503; res.end('down'); return; }
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ id: 'abc', items: [1] }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('sends the request and turns a 2xx JSON answer into outputs', async () => {
    const { result } = await run(httpAgent, { agent: 'http', http: { url: `${base}/hook`, method: 'POST', headers: { Authorization: 'Bearer t' }, body: { text: 'hi' } }, outputs: ['status', 'id', 'items'] });
    expect(result).toEqual({ ok: true, outputs: { status: '200', id: 'abc', items: '[1]' } });
    expect(seen.at(-1)).toEqual({ method: 'POST', url: '/hook', body: '{"text":"hi"}', auth: 'Bearer t' });
  });

  it('treats a non-2xx answer as a failure, retryable for 5xx', async () => {
    expect((await run(httpAgent, { agent: 'http', http: { url: `${base}/fail` } })).result).toEqual({ ok: false, error: `HTTP 503 from ${base}/fail`, retryable: true, failure: 'exit' });
  });

  it('refuses non-HTTP URLs', async () => {
    expect((await run(httpAgent, { agent: 'http', http: { url: 'file:///etc/passwd' } })).result).toEqual({ ok: false, error: 'unsupported URL scheme file:', retryable: false });
  });
});

describe('sleep agent', () => {
  it('is cancellable', async () => {
    const abort = new AbortController();
    const p = run(sleepAgent, { agent: 'sleep', sleepMs: 60_000 }, abort);
    abort.abort();
    expect((await p).result).toEqual({ ok: false, error: 'cancelled', retryable: false });
  });
});
