import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentAction, AgentIo, AgentResult } from '../../agents/AgentType.js';
import { AgentRegistry } from '../../agents/builtinAgents.js';
import { maskSecrets, SecretMask } from '../../agents/maskSecrets.js';
import { AttemptRunner, MAX_LOG_LINE, type Attempt, type AttemptRunnerOptions } from '../../agents/runAttempt.js';
import { LineSplitter, MAX_SPLIT_LINE, ShellWorkerPool } from '../../agents/ShellWorkerPool.js';
import { FakeClock, realClock } from '../../engine/run/Clock.js';
import type { RunEvent } from '../../engine/run/RunEvent.js';
import type { TaskSpec } from '../../engine/spec/Workflow.js';

const SECRET = 'Sup3rS3cretValue';
const PEM = '-----BEGIN KEY-----\nLineOneOfTheKey\nLineTwoOfTheKey\n-----END KEY-----\n';
const SECRETS: Record<string, string> = { 'db#password': SECRET, 'tls#key': PEM };
const resolver = (path: string, key: string): string | undefined => SECRETS[`${path}#${key}`];
const context = { params: {}, tasks: {}, run: {} };
const S = { S: { secret: { path: 'db', key: 'password' } } };

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'caravan-runner-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A runner whose events are collected; `task` is a TaskSpec without its name. */
function harness(o: Partial<AttemptRunnerOptions> = {}): { runner: AttemptRunner; events: RunEvent[]; attempt: (task: Omit<TaskSpec, 'name'>, more?: Partial<Attempt>) => Attempt } {
  const events: RunEvent[] = [];
  const runner = new AttemptRunner({ events: { publish: (_s, e) => void events.push(e) }, clock: realClock(), registry: new AgentRegistry(), secrets: resolver, scratchRoot: join(dir, 'scratch'), baseDir: dir, ...o });
  const attempt = (task: Omit<TaskSpec, 'name'>, more: Partial<Attempt> = {}): Attempt => ({ runId: 'r1', workflow: 'wf', instance: 't', attempt: 1, kind: 'task', task: { name: 't', ...task }, context, ...more });
  return { runner, events, attempt };
}

const logs = (events: RunEvent[]): string[] => events.flatMap((e) => (e.type === 'task.log' ? [`${e.stream}: ${e.line}`] : []));
const final = (events: RunEvent[]): RunEvent => events.filter((e) => e.type === 'task.succeeded' || e.type === 'task.failed').at(-1)!;

describe('SecretMask', () => {
  it('masks each value and each line of a multi-line one, longest first, and leaves values under 3 characters alone', () => {
    const mask = new SecretMask(['ab', 'abcdef', 'abc', 'first line\nsecond\r\nx\n']);
    expect(mask.apply('ab abc abcdef abcdefg')).toBe('ab *** *** ***g');
    expect(mask.apply('got first line and second, x')).toBe('got *** and ***, x');
    expect(maskSecrets('a  b', ['  ', 'a '])).toBe('a  b');
    expect(SecretMask.none.apply('anything')).toBe('anything');
    expect(new SecretMask(['token\n']).apply('token')).toBe('***');
  });

  it('in a message, also masks the beginning of a secret cut off right before a closing quote', () => {
    const mask = new SecretMask([SECRET]);
    expect(mask.message(`outputs line 1 is not key=value: '${'0'.repeat(50)}${SECRET.slice(0, 10)}'`)).toBe(`outputs line 1 is not key=value: '${'0'.repeat(50)}***'`);
    expect(mask.message(`a '${SECRET}' and 'Sup3r' but 'Su'`)).toBe("a '***' and '***' but 'Su'");
    expect(mask.message("nothing 'here'")).toBe("nothing 'here'");
  });
});

describe('LineSplitter', () => {
  it('hands on lines across pieces, cuts a long line once and counts it as one', () => {
    const lines: string[] = [];
    const split = new LineSplitter((l) => lines.push(l), 5);
    for (const piece of ['ab', 'c\nde', 'fghijkl', 'mn\nop\n\nq', 'rstuvwxyz']) split.push(piece);
    split.end();
    expect(lines).toEqual(['abc', 'defgh', 'op', '', 'qrstu']);
  });
});

// The same runner behaviour whether commands are spawned from Node or run by shell workers.
describe.each(['spawned from Node', 'run by shell workers'])('attempt runner, %s', (mode) => {
  let workers: ShellWorkerPool | undefined;
  beforeAll(() => {
    workers = mode === 'run by shell workers' ? new ShellWorkerPool(2, join(dir, `workers-${mode.length}`)) : undefined;
  });
  afterAll(() => workers?.close());
  const h = (o: Partial<AttemptRunnerOptions> = {}): ReturnType<typeof harness> => harness({ ...(workers !== undefined ? { workers } : {}), ...o });

  it('masks secrets in log lines, line by line for a multi-line secret, and in the failure of a command that is the secret', async () => {
    const { runner, events, attempt } = h();
    const { result } = await runner.run(attempt({ run: 'echo "value $S"; printf "%s" "$K"; echo "err $S" >&2; $S', env: { ...S, K: { secret: { path: 'tls', key: 'key' } } } }));
    expect(result).toMatchObject({ ok: false, exitCode: 127 });
    const all = JSON.stringify(events);
    for (const piece of [SECRET, 'LineOneOfTheKey', 'LineTwoOfTheKey']) expect(all).not.toContain(piece);
    expect(logs(events)).toEqual(expect.arrayContaining(['stdout: value ***', 'stdout: ***', 'stderr: err ***']));
    expect((final(events) as { error: string }).error).toMatch(/^command not found \(exit 127\): .*\*\*\*: .*not found$/);
  });

  it('masks output-parse errors, whole or cut at their quote, and output values', async () => {
    const { runner, events, attempt } = h();
    const bad = await runner.run(attempt({ run: 'printf "oops %s\\n" "$S" > "$CARAVAN_OUTPUTS"', env: S, outputs: ['x'] }));
    expect(bad.result).toEqual({ ok: false, error: "outputs line 1 is not key=value: 'oops ***'", retryable: false, exitCode: 0 });
    const cutAt60 = await runner.run(attempt({ run: 'printf "%050d%s\\n" 0 "$S" > "$CARAVAN_OUTPUTS"', env: S, outputs: ['x'] }, { attempt: 2 }));
    expect(cutAt60.result).toMatchObject({ ok: false, error: `outputs line 1 is not key=value: '${'0'.repeat(50)}***'` });
    const ok = await runner.run(attempt({ run: 'printf "x=%s\\ny=plain\\n" "$S" > "$CARAVAN_OUTPUTS"', env: S, outputs: ['x', 'y'] }, { attempt: 3 }));
    expect(ok.result).toEqual({ ok: true, outputs: { x: '***', y: 'plain' }, exitCode: 0 });
    expect(final(events)).toMatchObject({ type: 'task.succeeded', outputs: { x: '***', y: 'plain' } });
    expect(JSON.stringify(events)).not.toContain(SECRET.slice(0, 8));
  });

  it('keeps one cut line of output without newlines, however long, and counts what follows exactly', async () => {
    const { runner, events, attempt } = h();
    await runner.run(attempt({ run: "head -c 50000000 /dev/zero | tr '\\0' a; echo; seq 1 3000" }));
    const lines = logs(events);
    expect(lines[0]).toBe(`stdout: ${'a'.repeat(MAX_LOG_LINE)}`);
    expect(lines.slice(1, 3)).toEqual(['stdout: 1', 'stdout: 2']);
    // 1 long line and 3,000 short ones: 1,000 kept, then one line about the other 2,001.
    expect(lines).toHaveLength(1001);
    expect(lines.at(-1)).toBe('stderr: [caravan] 2001 more log lines were not kept (limit 1000 per attempt)');
  });

  it('counts dropped lines exactly when a task prints two million short lines', async () => {
    const { runner, events, attempt } = h();
    await runner.run(attempt({ run: 'seq 1 2000000' }));
    const lines = logs(events);
    expect(lines.slice(0, 2)).toEqual(['stdout: 1', 'stdout: 2']);
    expect(lines.at(-2)).toBe('stdout: 1000');
    expect(lines.at(-1)).toBe('stderr: [caravan] 1999000 more log lines were not kept (limit 1000 per attempt)');
  });

  it('caps the log by bytes as well as by lines', async () => {
    const { runner, events, attempt } = h({ maxLogBytes: 100_000 });
    await runner.run(attempt({ run: 's=$(head -c 3000 /dev/zero | tr "\\0" b); i=0; while [ $i -lt 400 ]; do echo "$s"; i=$((i+1)); done' }));
    const lines = logs(events);
    // 33 lines of 3,000 bytes fit in 100,000; the 34th does not, nor anything after it.
    expect(lines).toHaveLength(34);
    expect(lines.at(-1)).toBe('stderr: [caravan] 367 more log lines were not kept (limit 100000 bytes per attempt)');
  });

  it('gives each spawned shell attempt its own scratch directory and removes it', async () => {
    const { runner, attempt } = h({ scratchRoot: join(dir, `scratch-${mode.length}`) });
    const { result } = await runner.run(attempt({ run: 'printf "dir=%s\\n" "$(dirname "$CARAVAN_OUTPUTS")" > "$CARAVAN_OUTPUTS"', outputs: ['dir'] }));
    expect(result.ok).toBe(true);
    const used = (result as { outputs: Record<string, string> }).outputs['dir']!;
    if (workers === undefined) expect(used).toMatch(new RegExp(`^${join(dir, `scratch-${mode.length}`)}/attempt-`));
    expect(await readdir(join(dir, `scratch-${mode.length}`)).catch(() => [])).toEqual([]);
  });
});

/** An agent that runs until the test lets it go, logging what it is told to. */
function heldAgent(): { registry: AgentRegistry; release: (r: AgentResult) => void; io: () => AgentIo } {
  let io: AgentIo | undefined;
  const waiting: Array<(r: AgentResult) => void> = [];
  const registry = new AgentRegistry();
  registry.register({
    name: 'held',
    run: (_a: AgentAction, given: AgentIo) => {
      io = given;
      return new Promise((r) => {
        waiting.push(r);
        given.signal.addEventListener('abort', () => r({ ok: false, error: 'cancelled', retryable: false }));
      });
    },
  });
  return { registry, release: (r) => waiting.shift()!(r), io: () => io! };
}

describe('attempt runner reports', () => {
  it('with a deferred start, a short attempt reports once with startedAt; a longer one reports task.started', async () => {
    const clock = new FakeClock();
    const held = heldAgent();
    const { runner, events, attempt } = harness({ clock, registry: held.registry, startReportDelayMs: 100 });
    const short = runner.run(attempt({ agent: 'held' }));
    await new Promise((r) => setImmediate(r));
    clock.advance(40);
    held.release({ ok: true, outputs: {} });
    await short;
    expect(events).toEqual([{ runId: 'r1', task: 't', attempt: 1, type: 'task.succeeded', at: clock.now(), outputs: {}, startedAt: clock.now() - 40 }]);
    const long = runner.run(attempt({ agent: 'held' }, { attempt: 2 }));
    await new Promise((r) => setImmediate(r));
    clock.advance(150);
    expect(events.at(-1)).toMatchObject({ type: 'task.started', attempt: 2 });
    held.release({ ok: false, error: 'no', retryable: true });
    await long;
    expect(events.at(-1)).not.toHaveProperty('startedAt');
  });

  it('without a deferred start, reports task.started at once; one timer beats for every attempt in flight', async () => {
    const clock = new FakeClock();
    const held = heldAgent();
    const { runner, events, attempt } = harness({ clock, registry: held.registry, heartbeatMs: 1000 });
    const runs = [1, 2, 3].map((n) => runner.run(attempt({ agent: 'held' }, { attempt: n })));
    expect(events.map((e) => e.type)).toEqual(['task.started', 'task.started', 'task.started']);
    await new Promise((r) => setImmediate(r));
    expect(clock.pending).toBe(1);
    clock.advance(1000);
    expect(events.filter((e) => e.type === 'task.heartbeat').map((e) => (e as { attempt: number }).attempt)).toEqual([1, 2, 3]);
    for (let i = 0; i < 3; i++) held.release({ ok: true, outputs: {} });
    await Promise.all(runs);
    // Nothing in flight: the timer lapses at its next tick.
    clock.advance(1000);
    expect(clock.pending).toBe(0);
    runner.close();
  });

  it('masks the variables named by maskEnv, appends the host to a reported failure, and says when it is stored', async () => {
    process.env['CARAVAN_TEST_MASKED'] = 'FromNomadVariables';
    try {
      const held = heldAgent();
      let store: () => void = () => undefined;
      const events: RunEvent[] = [];
      const runner = new AttemptRunner({ events: { publish: (_s, e) => { events.push(e); return e.type === 'task.failed' ? new Promise<void>((r) => { store = r; }) : undefined; } }, clock: realClock(), registry: held.registry, secrets: resolver, scratchRoot: dir, baseDir: dir, maskEnv: ['CARAVAN_TEST_MASKED', 'CARAVAN_TEST_UNSET'], host: 'node-7' });
      const pending = runner.run({ runId: 'r1', workflow: 'wf', instance: 't', attempt: 1, kind: 'task', task: { name: 't', agent: 'held' }, context });
      await new Promise((r) => setImmediate(r));
      held.io().log('stdout', 'see FromNomadVariables');
      held.release({ ok: false, error: 'failed with FromNomadVariables', retryable: true });
      const { result, reported } = await pending;
      expect(result).toEqual({ ok: false, error: 'failed with ***', retryable: true });
      expect(logs(events)).toEqual(['stdout: see ***']);
      expect(final(events)).toMatchObject({ error: 'failed with *** (on node-7)' });
      let stored = false;
      void reported!.then(() => { stored = true; });
      await new Promise((r) => setImmediate(r));
      expect(stored).toBe(false);
      store();
      await reported;
      runner.close();
    } finally {
      delete process.env['CARAVAN_TEST_MASKED'];
    }
  });

  it('does not report an attempt aborted for a reason it is told to leave unreported; reports other cancels', async () => {
    class Stopping extends Error {}
    const held = heldAgent();
    const { runner, events, attempt } = harness({ registry: held.registry, unreported: (reason) => reason instanceof Stopping, startReportDelayMs: 100 });
    const stop = new AbortController();
    const handedBack = runner.run(attempt({ agent: 'held' }), stop.signal);
    await new Promise((r) => setImmediate(r));
    stop.abort(new Stopping());
    expect(await handedBack).toEqual({ result: { ok: false, error: 'cancelled', retryable: false } });
    const cancel = new AbortController();
    const cancelled = runner.run(attempt({ agent: 'held' }, { attempt: 2 }), cancel.signal);
    await new Promise((r) => setImmediate(r));
    cancel.abort();
    expect((await cancelled).reported).toBeInstanceOf(Promise);
    expect(events).toEqual([expect.objectContaining({ type: 'task.failed', attempt: 2, error: 'cancelled' })]);
    runner.close();
  });

  it('turns a task that cannot be prepared, an unknown agent and a thrown perform into failures', async () => {
    const { runner, attempt } = harness();
    expect((await runner.run(attempt({ run: 'true', env: { X: { secret: { path: 'nope', key: 'k' } } } }))).result).toMatchObject({ ok: false, retryable: false, error: expect.stringMatching(/^secret nope#k for X is not available here/) });
    expect((await runner.run(attempt({ agent: 'nosuch' }))).result).toMatchObject({ ok: false, error: expect.stringMatching(/^unknown agent type 'nosuch' \(known: /) });
    expect((await runner.run(attempt({}, { perform: () => Promise.reject(new Error('child failed')) }))).result).toEqual({ ok: false, error: 'child failed', retryable: false });
  });

  it('cuts a long log line after masking, so a secret at the cut is not half shown', async () => {
    const held = heldAgent();
    const { runner, events, attempt } = harness({ registry: held.registry });
    const pending = runner.run(attempt({ agent: 'held', env: S }));
    await new Promise((r) => setImmediate(r));
    held.io().log('stdout', `${'x'.repeat(MAX_LOG_LINE - 5)}${SECRET}${'y'.repeat(MAX_SPLIT_LINE)}`);
    held.release({ ok: true, outputs: {} });
    await pending;
    expect(logs(events)).toEqual([`stdout: ${'x'.repeat(MAX_LOG_LINE - 5)}***yy`]);
  });
});
