import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { localSecretVariable } from '../../agents/prepareAction.js';
import { compileWorkflow } from '../../engine/compile/compileWorkflow.js';
import { taskJobId } from '../../engine/compile/jobId.js';
import { InMemoryBus } from '../../engine/local/InMemoryBus.js';
import { LocalExecutor } from '../../engine/local/LocalExecutor.js';
import { connectJetStream } from '../../engine/nats/connectJetStream.js';
import { natsConnectionOptions } from '../../engine/nats/natsConnectionOptions.js';
import { NomadClient } from '../../engine/nomad/NomadClient.js';
import { NomadExecutor } from '../../engine/nomad/NomadExecutor.js';
import { packageRoot } from '../../engine/packageRoot.js';
import { eventSubject, runSubjects, type Bus } from '../../engine/run/Bus.js';
import { realClock } from '../../engine/run/Clock.js';
import type { Executor, StartRequest } from '../../engine/run/Executor.js';
import type { Logger } from '../../engine/run/Logger.js';
import type { RunEvent } from '../../engine/run/RunEvent.js';
import { buildRunPlan, type RunPlan } from '../../engine/run/RunPlan.js';
import type { Workflow } from '../../engine/spec/Workflow.js';
import { validateText } from '../../engine/spec/validateWorkflows.js';
import { NomadAgent, requireNomad } from '../harness/nomadAgent.js';
import { NatsServer, requireServer } from '../harness/natsServer.js';
import { describeProcess, descendants, isAlive } from '../harness/processTree.js';
import { until } from '../harness/until.js';

const WF = 'execcontract';
const SECRET_PATH = 'caravan/execcontract';
const SECRET_KEY = 'token';
const MISSING = 'caravan-no-such-command-4242';

/**
 * The tasks the contract runs. `params.dir` is a directory of the test's own: `hold` writes
 * its shell's pid (and that of a child it starts) there and waits for `gate` to appear.
 * Strings are single-quoted YAML, so `${{ }}` reaches the executor as the author wrote it.
 */
const SPEC = `apiVersion: caravan/v1
kind: Workflow
metadata:
  name: ${WF}
spec:
  params:
    dir: { type: string, default: /nonexistent }
    word: { type: string, default: plain }
    items: { type: array, default: [a, b] }
  tasks:
    - name: ok
      run: 'echo "attempt \${{ run.attempt }} says \${{ params.word }}"; printf "answer=42\\nword=%s\\n" "\${{ params.word }}" > "$CARAVAN_OUTPUTS"'
      outputs: [answer, word]
    - name: quiet
      run: 'true'
    - name: chatty
      run: 'for i in $(seq 1 60); do echo "line $i"; done; echo "warn a" >&2; echo "warn b" >&2; echo "last"'
    - name: fails
      run: 'echo "about to fail"; echo "disk on fire" >&2; exit 3'
    - name: missing
      run: '${MISSING}'
    - name: hold
      run: '(while [ ! -f \${{ params.dir }}/gate ]; do sleep 0.1; done) & echo $! > \${{ params.dir }}/child-\${{ run.attempt }}; echo $$ > \${{ params.dir }}/pid-\${{ run.attempt }}; wait; echo "released \${{ run.attempt }}"'
    - name: fan
      forEach: '\${{ params.items }}'
      run: 'echo "item \${{ item }}"; printf "got=%s\\n" "\${{ item }}" > "$CARAVAN_OUTPUTS"'
      outputs: [got]
    - name: secret
      env: { TOKEN: { secret: { path: ${SECRET_PATH}, key: ${SECRET_KEY} } } }
      run: 'echo "token is $TOKEN"; echo "bad $TOKEN" >&2; exit 2'
`;

function loadWorkflow(): Workflow {
  const r = validateText(`${WF}.yaml`, SPEC);
  if (r.workflow === undefined) throw new Error(`the contract's workflow does not validate:\n${r.diagnostics.map((d) => d.message).join('\n')}`);
  return r.workflow;
}

const workflow = loadWorkflow();
const plan: RunPlan = buildRunPlan(workflow, { maxParallel: 8 });

type Succeeded = Extract<RunEvent, { type: 'task.succeeded' }>;
type Failed = Extract<RunEvent, { type: 'task.failed' }>;
type Log = Extract<RunEvent, { type: 'task.log' }>;
type Result = Succeeded | Failed;

/**
 * What an implementation does on purpose that another does not; each test asserts the
 * behaviour its implementation documents.
 */
interface Documented {
  /**
   * How a reported failure ends: the agent in a Nomad allocation names its host
   * (` (on <host>)`, agents/agentCommand.ts) so that an operator knows which machine; the
   * local executor adds nothing.
   */
  failureSuffix: string;
  /**
   * `now`: task.started goes out as the attempt starts (the local executor leaves the
   * runner's startReportDelayMs unset). `deferred`: the agent reports it after 100 ms or at the
   * first log line, and an attempt that ends sooner reports once, with `startedAt` on its result.
   */
  startReport: 'now' | 'deferred';
  /**
   * What a cancelled attempt reports. `nothing`: the local executor leaves it unreported (the
   * engine records the cancel itself). `killed`: Nomad stops the attempt's job, and the
   * executor's watch of the allocation reports the kill as task.failed.
   */
  afterCancel: 'nothing' | 'killed';
  /**
   * Whether close() ends attempts in flight. The local executor's attempts are processes of
   * this one and die with it; a Nomad attempt is the cluster's allocation, which goes on and
   * reports over NATS (a new engine picks it up with reattach()).
   */
  closeEndsAttempts: boolean;
}

/** Cases an implementation fails today, by key, with what is wrong (each a defect to fix, not a difference). */
type DefectKey = 'cancel-at-start' | 'over-capacity';
type KnownDefects = Partial<Record<DefectKey, string>>;

/** An implementation opened on its servers for the suite. */
interface Opened extends Documented {
  bus: Bus;
  /** A new executor on the suite's bus and servers. */
  executor(): Executor;
  /**
   * For an attempt cancelled while a later one was started and has begun to run: waits until
   * what the executor ran for it has been told to stop and has ended, and says whether any of
   * it started (then it has reported, or been reported, an end). Locally: false at once (a
   * cancel aborts the attempt in this process, unreported). On Nomad: the attempt's dispatched
   * job must have been stopped by then (the later attempt's dispatch was answered after it),
   * and then be dead; whether an allocation of it started.
   */
  stopped(runId: string, task: string, attempt: number): Promise<boolean>;
  /** Makes `value` the secret at SECRET_PATH#SECRET_KEY where this executor's tasks run. */
  setSecret(value: string): Promise<void>;
  /** Failures the executors could only log (or hand to onError) since the last call. */
  unheard(): string[];
  close(): Promise<void>;
}

/** A Logger port that keeps what it is told at warn and error. */
function recordingLogger(lines: string[]): Logger {
  const logger: Logger = {
    debug: () => undefined,
    info: () => undefined,
    warn: (msg, fields) => void lines.push(`warn: ${msg} ${JSON.stringify(fields ?? {})}`),
    error: (msg, fields) => void lines.push(`error: ${msg} ${JSON.stringify(fields ?? {})}`),
    child: () => logger,
    withSecrets: () => logger,
  };
  return logger;
}

/** Every event of a run as the bus delivers it, with its subject and origin. */
class RunWatch {
  readonly seen: Array<{ event: RunEvent; subject: string; origin: string }> = [];
  private readonly stop: () => void;

  constructor(bus: Bus, readonly runId: string) {
    this.stop = bus.subscribe(runSubjects(WF, runId), (event, meta) => this.seen.push({ event, ...meta }));
  }

  /** The events of one attempt, in delivery order. */
  of(instance: string, attempt: number): RunEvent[] {
    return this.seen.map((s) => s.event).filter((e) => 'task' in e && e.task === instance && 'attempt' in e && e.attempt === attempt);
  }

  logs(instance: string, attempt: number, stream?: 'stdout' | 'stderr'): string[] {
    return this.of(instance, attempt).filter((e): e is Log => e.type === 'task.log' && (stream === undefined || e.stream === stream)).map((e) => e.line);
  }

  resultOf(instance: string, attempt: number): Result | undefined {
    return this.of(instance, attempt).find((e): e is Result => e.type === 'task.succeeded' || e.type === 'task.failed');
  }

  async result(instance: string, attempt: number): Promise<Result> {
    await until(`the result of ${instance} attempt ${attempt}`, () => this.resultOf(instance, attempt) !== undefined, 60_000);
    return this.resultOf(instance, attempt)!;
  }

  close(): void {
    this.stop();
  }
}

/** A start request as the scheduler makes it (scheduleRun's Dispatch and contextFor). */
function request(runId: string, task: string, attempt: number, params: Record<string, unknown>, item?: { index: number; value: unknown }): StartRequest {
  const instance = item !== undefined ? `${task}[${item.index}]` : task;
  const defaults = { dir: '/nonexistent', word: 'plain', items: ['a', 'b'] };
  const context: StartRequest['dispatch']['context'] = {
    params: { ...defaults, ...params },
    tasks: {},
    run: { id: runId, workflow: WF, commit: '', trigger: 'test', startedAt: new Date().toISOString(), attempt },
    ...(item !== undefined ? { item: item.value } : {}),
  };
  return { runId, plan, dispatch: { instance, task, attempt, kind: 'task', context, ...(item !== undefined ? { index: item.index, item: item.value } : {}) } };
}

/** The pid a task wrote to `file`, once it has. */
async function pidIn(file: string): Promise<number> {
  let pid = 0;
  await until(`a pid in ${file}`, async () => {
    pid = Number((await readFile(file, 'utf8').catch(() => '')).trim());
    return Number.isInteger(pid) && pid > 0;
  }, 60_000);
  return pid;
}

function living(pids: readonly number[]): number[] {
  return pids.filter(isAlive);
}

/** Waits for every one of `pids` to be gone; a timeout names those still there. */
async function gone(what: string, pids: readonly number[]): Promise<void> {
  await until(what, () => living(pids).length === 0).catch((e: unknown) => {
    throw new Error(`${(e as Error).message}; still running: ${living(pids).map(describeProcess).join('; ')}`, { cause: e });
  });
}

/** The behaviour every Executor must have (engine/run/Executor.ts), whatever runs the attempts. */
function executorContract(name: string, open: () => Promise<Opened>, available: boolean, known: KnownDefects = {}): void {
  /**
   * A case this implementation is known to fail (see KnownDefects): it runs, and passes only
   * while it fails, so that the fix shows up as a failure and its entry is removed.
   */
  const test = (key: DefectKey, title: string, fn: () => Promise<void>): void => {
    const defect = known[key];
    if (defect !== undefined) it.fails(`${title} [known defect: ${defect}]`, fn);
    else it(title, fn);
  };
  // A Nomad case waits for dispatches, allocations and a Node agent starting in each.
  describe.skipIf(!available)(`Executor contract: ${name}`, { timeout: 120_000 }, () => {
    let impl: Opened;
    let n = 0;
    const executors: Executor[] = [];
    const closed = new Set<Executor>();
    const watches: RunWatch[] = [];
    const dirs: string[] = [];

    beforeAll(async () => {
      impl = await open();
    }, 180_000);
    afterEach(async () => {
      // Release whatever still waits for its gate, so that no attempt outlives its test.
      for (const d of dirs.splice(0)) {
        await writeFile(join(d, 'gate'), '').catch(() => undefined);
      }
      for (const w of watches.splice(0)) w.close();
      for (const e of executors.splice(0)) if (!closed.has(e)) await e.close();
      expect(impl.unheard()).toEqual([]);
    });
    afterAll(async () => {
      await impl?.close();
    }, 60_000);

    /** A fresh executor, a run id of the test's own, its events, and a directory for its tasks. */
    async function scene(): Promise<{ executor: Executor; runId: string; run: RunWatch; dir: string }> {
      const executor = impl.executor();
      executors.push(executor);
      const runId = `xc${++n}-${Math.random().toString(36).slice(2, 8)}`;
      const run = new RunWatch(impl.bus, runId);
      watches.push(run);
      const dir = await mkdtemp(join(tmpdir(), 'caravan-exec-contract-'));
      dirs.push(dir);
      return { executor, runId, run, dir };
    }

    /** Every event of the attempt travels on its instance's subject, as the agent's. */
    function expectOnItsSubject(run: RunWatch, instance: string, attempt: number): void {
      const mine = run.seen.filter((s) => 'task' in s.event && s.event.task === instance && 'attempt' in s.event && s.event.attempt === attempt);
      expect(mine.length).toBeGreaterThan(0);
      for (const s of mine) expect([s.subject, s.origin, s.event.runId]).toEqual([eventSubject(WF, run.runId, instance), 'agent', run.runId]);
    }

    /** Started once: a task.started ahead of everything else of the attempt, or `startedAt` on its result. */
    function expectStartedOnce(run: RunWatch, instance: string, attempt: number): void {
      const events = run.of(instance, attempt);
      const result = run.resultOf(instance, attempt)!;
      const started = events.filter((e) => e.type === 'task.started');
      if (started.length > 0) {
        expect([started.length, events[0]!.type, result.startedAt]).toEqual([1, 'task.started', undefined]);
      } else {
        expect(result.startedAt).toEqual(expect.any(Number));
        expect(result.startedAt!).toBeLessThanOrEqual(result.at);
      }
    }

    it('a succeeding shell task reports its start and task.succeeded with its outputs and exit code 0, under the request\'s attempt and instance', async () => {
      const { executor, runId, run } = await scene();
      executor.start(request(runId, 'ok', 1, { word: 'caravan' }));
      executor.start(request(runId, 'quiet', 1, {}));
      expect(await run.result('ok', 1)).toEqual({ runId, type: 'task.succeeded', task: 'ok', attempt: 1, at: expect.any(Number), outputs: { answer: '42', word: 'caravan' }, exitCode: 0 });
      expectStartedOnce(run, 'ok', 1);
      // The context of the request reached the command.
      expect(run.logs('ok', 1)).toEqual(['attempt 1 says caravan']);
      // The result is the attempt's last word.
      expect(run.of('ok', 1).at(-1)!.type).toBe('task.succeeded');
      expectOnItsSubject(run, 'ok', 1);

      const quiet = await run.result('quiet', 1);
      expect(quiet).toMatchObject({ type: 'task.succeeded', task: 'quiet', attempt: 1, outputs: {}, exitCode: 0 });
      expectStartedOnce(run, 'quiet', 1);
      // A silent attempt that ends at once: reported at its start, or once, at its end.
      if (impl.startReport === 'now') expect(run.of('quiet', 1).map((e) => e.type)).toEqual(['task.started', 'task.succeeded']);
      else expect([run.of('quiet', 1).map((e) => e.type), quiet.startedAt]).toEqual([['task.succeeded'], expect.any(Number)]);
    });

    it('a failing command reports task.failed with its exit code and a message naming the failure; a missing command likewise', async () => {
      const { executor, runId, run } = await scene();
      executor.start(request(runId, 'fails', 1, {}));
      executor.start(request(runId, 'missing', 1, {}));
      expect(await run.result('fails', 1)).toMatchObject({ runId, type: 'task.failed', task: 'fails', attempt: 1, exitCode: 3, retryable: true, error: `exited with code 3: disk on fire${impl.failureSuffix}` });
      expectStartedOnce(run, 'fails', 1);
      expect(run.logs('fails', 1, 'stdout')).toEqual(['about to fail']);
      expectOnItsSubject(run, 'fails', 1);

      const missing = await run.result('missing', 1) as Failed;
      expect(missing).toMatchObject({ runId, type: 'task.failed', task: 'missing', attempt: 1, exitCode: 127, retryable: false });
      // A spawned command says `command not found: <name>`; one run by a shell quotes the shell's own words.
      expect(missing.error).toMatch(/^command not found\b/);
      expect(missing.error).toContain(MISSING);
      expect(missing.error.endsWith(impl.failureSuffix)).toBe(true);
      expectOnItsSubject(run, 'missing', 1);
      for (const t of ['fails', 'missing']) expect(run.of(t, 1).filter((e) => e.type === 'task.succeeded')).toEqual([]);
    });

    it('log lines arrive as task.log events, in order within each stream, with their stream, before the result', async () => {
      const { executor, runId, run } = await scene();
      executor.start(request(runId, 'chatty', 1, {}));
      await run.result('chatty', 1);
      // Standard output and error are two pipes: their order relative to each other is not kept.
      expect(run.logs('chatty', 1, 'stdout')).toEqual([...Array.from({ length: 60 }, (_, i) => `line ${i + 1}`), 'last']);
      expect(run.logs('chatty', 1, 'stderr')).toEqual(['warn a', 'warn b']);
      const types = run.of('chatty', 1).map((e) => e.type).filter((t) => t !== 'task.heartbeat');
      expect(types).toEqual(['task.started', ...Array<string>(63).fill('task.log'), 'task.succeeded']);
      expectOnItsSubject(run, 'chatty', 1);
    });

    it('cancel() of a running attempt stops its processes, the shell and what it started, and no task.succeeded arrives for it', async () => {
      const { executor, runId, run, dir } = await scene();
      executor.start(request(runId, 'hold', 1, { dir }));
      const pids = [await pidIn(join(dir, 'pid-1')), await pidIn(join(dir, 'child-1'))];
      expect(living(pids)).toEqual(pids);
      executor.cancel(runId, 'hold', 1);
      await gone('the cancelled attempt\'s processes to be gone', pids);
      // Were anything of it left, it would now go on and succeed.
      await writeFile(join(dir, 'gate'), '');
      if (impl.afterCancel === 'killed') {
        const failed = await run.result('hold', 1);
        expect(failed).toMatchObject({ type: 'task.failed', attempt: 1, error: expect.stringMatching(/^Nomad allocation [0-9a-f]{8} killed/) });
      } else {
        // Nothing is reported for it: let a later attempt's result mark the time it would have taken.
        executor.start(request(runId, 'quiet', 1, {}));
        await run.result('quiet', 1);
        expect(run.resultOf('hold', 1)).toBeUndefined();
      }
      expect(run.of('hold', 1).filter((e) => e.type === 'task.succeeded')).toEqual([]);
      expect(run.logs('hold', 1)).not.toContain('released 1');
    });

    it('two attempts of one instance are independent: each reports under its own number, and cancelling one leaves the other running', async () => {
      const { executor, runId, run, dir } = await scene();
      executor.start(request(runId, 'ok', 1, { word: 'first' }));
      executor.start(request(runId, 'ok', 2, { word: 'second' }));
      expect(await run.result('ok', 1)).toMatchObject({ type: 'task.succeeded', task: 'ok', attempt: 1, outputs: { answer: '42', word: 'first' } });
      expect(await run.result('ok', 2)).toMatchObject({ type: 'task.succeeded', task: 'ok', attempt: 2, outputs: { answer: '42', word: 'second' } });
      expect([run.logs('ok', 1), run.logs('ok', 2)]).toEqual([['attempt 1 says first'], ['attempt 2 says second']]);

      executor.start(request(runId, 'hold', 1, { dir }));
      executor.start(request(runId, 'hold', 2, { dir }));
      const first = [await pidIn(join(dir, 'pid-1')), await pidIn(join(dir, 'child-1'))];
      const second = [await pidIn(join(dir, 'pid-2')), await pidIn(join(dir, 'child-2'))];
      executor.cancel(runId, 'hold', 1);
      await gone('attempt 1\'s processes to be gone', first);
      expect(living(second)).toEqual(second);
      await writeFile(join(dir, 'gate'), '');
      expect(await run.result('hold', 2)).toMatchObject({ type: 'task.succeeded', task: 'hold', attempt: 2, exitCode: 0 });
      expect(run.logs('hold', 2)).toEqual(['released 2']);
      if (impl.afterCancel === 'killed') await run.result('hold', 1);
      expect(run.of('hold', 1).filter((e) => e.type === 'task.succeeded' || e.type === 'task.log')).toEqual([]);
      for (const [t, a] of [['ok', 1], ['ok', 2], ['hold', 2]] as const) expectOnItsSubject(run, t, a);
    });

    test('cancel-at-start', 'cancel() right after start(): the attempt is stopped, whatever of it started ends, and it reports no success', async () => {
      const { executor, runId, run, dir } = await scene();
      // The engine cancels whatever it started, however recently (a run cancelled as it
      // starts). A quick task could finish before a stop reaches a cluster; one that waits cannot.
      executor.start(request(runId, 'hold', 1, { dir }));
      executor.cancel(runId, 'hold', 1);
      // Attempt 2, started just after and not cancelled: once it runs, attempt 1 would run too.
      executor.start(request(runId, 'hold', 2, { dir }));
      const second = [await pidIn(join(dir, 'pid-2')), await pidIn(join(dir, 'child-2'))];
      const ran = await impl.stopped(runId, 'hold', 1);
      const first = await Promise.all(['pid-1', 'child-1'].map(async (f) => Number((await readFile(join(dir, f), 'utf8').catch(() => '')).trim())));
      await gone('whatever attempt 1 started to be gone', first.filter((p) => p > 0));
      expect(living(second)).toEqual(second);
      // Were anything of attempt 1 left, it would now go on and succeed.
      await writeFile(join(dir, 'gate'), '');
      expect(await run.result('hold', 2)).toMatchObject({ type: 'task.succeeded', attempt: 2 });
      if (ran) await run.result('hold', 1);
      expect(run.of('hold', 1).filter((e) => e.type === 'task.succeeded')).toEqual([]);
      expect(run.logs('hold', 1)).not.toContain('released 1');
    });

    test('over-capacity', 'more attempts at once than it runs at once: the rest wait, and each reports its own outputs', async () => {
      const { executor, runId, run } = await scene();
      const attempts = [1, 2, 3, 4, 5];
      for (const a of attempts) executor.start(request(runId, 'ok', a, { word: `w${a}` }));
      for (const a of attempts) expect(await run.result('ok', a)).toMatchObject({ type: 'task.succeeded', attempt: a, outputs: { answer: '42', word: `w${a}` } });
    });

    it('a forEach item\'s instance key (name[i]) travels intact, with its item', async () => {
      const { executor, runId, run } = await scene();
      executor.start(request(runId, 'fan', 1, {}, { index: 0, value: 'a' }));
      executor.start(request(runId, 'fan', 1, {}, { index: 1, value: 'b' }));
      expect(await run.result('fan[1]', 1)).toMatchObject({ runId, type: 'task.succeeded', task: 'fan[1]', attempt: 1, outputs: { got: 'b' } });
      expect(await run.result('fan[0]', 1)).toMatchObject({ runId, type: 'task.succeeded', task: 'fan[0]', attempt: 1, outputs: { got: 'a' } });
      expect([run.logs('fan[0]', 1), run.logs('fan[1]', 1)]).toEqual([['item a'], ['item b']]);
      expectOnItsSubject(run, 'fan[0]', 1);
      expectOnItsSubject(run, 'fan[1]', 1);
      // Nothing under the bare task name.
      expect(run.of('fan', 1)).toEqual([]);
    });

    it('a task\'s env secret shows in its output and failure masked, and no event carries it', async () => {
      const secret = `s3cr3t-${Math.random().toString(36).slice(2, 10)}`;
      await impl.setSecret(secret);
      const { executor, runId, run } = await scene();
      executor.start(request(runId, 'secret', 1, {}));
      expect(await run.result('secret', 1)).toMatchObject({ type: 'task.failed', attempt: 1, exitCode: 2, error: `exited with code 2: bad ***${impl.failureSuffix}` });
      expect([run.logs('secret', 1, 'stdout'), run.logs('secret', 1, 'stderr')]).toEqual([['token is ***'], ['bad ***']]);
      expect(JSON.stringify(run.seen)).not.toContain(secret);
    });

    it('close() resolves, and leaves no process of its own behind', async () => {
      const before = new Set(await descendants(process.pid));
      const { executor, runId, run, dir } = await scene();
      executor.start(request(runId, 'hold', 1, { dir }));
      const pids = [await pidIn(join(dir, 'pid-1')), await pidIn(join(dir, 'child-1'))];
      closed.add(executor);
      await executor.close();
      if (impl.closeEndsAttempts) {
        await gone('the attempt\'s processes to be gone', pids);
        // Whatever the executor started below this process (attempts, shell workers) is gone.
        await gone('no new process below this one', (await descendants(process.pid)).filter((p) => !before.has(p)));
        await writeFile(join(dir, 'gate'), '');
        // A closed executor's attempts died with it: nothing is reported for them.
        expect(run.of('hold', 1).filter((e) => e.type === 'task.succeeded' || e.type === 'task.failed')).toEqual([]);
      } else {
        // The attempt goes on without this executor, and its agent still reports; then it ends.
        // (Below this process Nomad's own processes come and go: the Nomad agent is a child.)
        expect(living(pids)).toEqual(pids);
        await writeFile(join(dir, 'gate'), '');
        expect(await run.result('hold', 1)).toMatchObject({ type: 'task.succeeded', attempt: 1 });
        await gone('the attempt\'s processes to end', pids);
      }
    });
  });
}

// 1. The embedded executor, on the in-memory bus: a process per command (its defaults), and
// with the shell workers the composition root gives it (engine/app/createBackends.ts).
for (const shellWorkers of [0, 2]) {
  executorContract(`LocalExecutor (${shellWorkers === 0 ? 'a process per command' : `${shellWorkers} shell workers`}), in-memory bus`, async () => {
    const bus = new InMemoryBus();
    const baseDir = await mkdtemp(join(tmpdir(), 'caravan-exec-local-'));
    const variable = localSecretVariable(SECRET_PATH, SECRET_KEY);
    const saved = process.env[variable];
    const logged: string[] = [];
    return {
      bus,
      executor: () => new LocalExecutor(bus, realClock(), { baseDir, shellWorkers, logger: recordingLogger(logged) }),
      unheard: () => logged.splice(0),
      stopped: () => Promise.resolve(false),
      setSecret: async (value) => {
        process.env[variable] = value;
      },
      failureSuffix: '',
      startReport: 'now',
      afterCancel: 'nothing',
      closeEndsAttempts: true,
      close: async () => {
        if (saved === undefined) delete process.env[variable];
        else process.env[variable] = saved;
        await bus.close();
        await rm(baseDir, { recursive: true, force: true });
      },
    };
  }, true);
}

// 2. Nomad: a real `nomad agent -dev` and nats-server, the workflow's jobs registered as the
// composition root does, and the agent in each allocation running this checkout's dist/.
const nomadBin = requireNomad();
const natsOk = requireServer('nats-server', 'apt-get install -y nats-server');

executorContract('NomadExecutor (dispatch jobs), NATS JetStream bus', async () => {
  const servers: Array<{ close: () => Promise<void> }> = [];
  try {
    const [nomad, nats] = await Promise.all([NomadAgent.start(nomadBin!), NatsServer.start()]);
    servers.push(nomad, nats);
    const js = await connectJetStream({ connection: await natsConnectionOptions({}, [nats.url]) });
    servers.unshift(js);
    const client = new NomadClient({ address: nomad.address });
    const agentCommand = [process.execPath, join(packageRoot(), 'bin', 'caravan.js'), 'agent'];
    for (const j of compileWorkflow(workflow, { agentCommand, agentEnv: { NATS_URL: nats.url } })) await client.registerJob(j.job);
    const baseDir = await mkdtemp(join(tmpdir(), 'caravan-exec-nomad-'));
    servers.push({ close: () => rm(baseDir, { recursive: true, force: true }) });
    const clock = realClock();
    const errors: string[] = [];
    const logged: string[] = [];
    return {
      bus: js.bus,
      executor: () => new NomadExecutor(client, js.bus, clock, {
        natsServers: [nats.url],
        fallback: new LocalExecutor(js.bus, clock, { baseDir, logger: recordingLogger(logged) }),
        workQueue: js.workQueue,
        contexts: js.contexts,
        onError: (e) => errors.push(e.message),
      }),
      unheard: () => [...errors.splice(0), ...logged.splice(0)],
      stopped: async (runId, task, attempt) => {
        const jobs = async (): Promise<Array<{ id: string; stop: boolean; dead: boolean }>> => {
          const out = [];
          for (const id of await client.dispatchedChildren(taskJobId(WF, task))) {
            const job = (await (await fetch(`${nomad.address}/v1/job/${encodeURIComponent(id)}`)).json()) as { Status: string; Stop?: boolean; Meta: Record<string, string> | null };
            if (job.Meta?.['caravan_run'] === runId && job.Meta['caravan_attempt'] === String(attempt)) out.push({ id, stop: job.Stop === true, dead: job.Status === 'dead' });
          }
          return out;
        };
        // Only a short wait: the stop is due already, and a lost one must fail, not hang.
        await until(`Nomad to have been told to stop ${task} attempt ${attempt}`, async () => (await jobs()).every((j) => j.stop || j.dead), 10_000, 200);
        await until(`the jobs of ${task} attempt ${attempt} to be dead`, async () => (await jobs()).every((j) => j.dead), 60_000, 200);
        let ran = false;
        for (const j of await jobs()) ran ||= (await client.jobAllocations(j.id)).some((a) => Object.values(a.TaskStates ?? {}).some((t) => (t.Events ?? []).some((e) => e.Type === 'Started')));
        return ran;
      },
      // A Nomad Variable, which the job's template puts in the allocation's environment.
      setSecret: async (value) => {
        const res = await fetch(`${nomad.address}/v1/var/${SECRET_PATH}`, { method: 'PUT', body: JSON.stringify({ Path: SECRET_PATH, Items: { [SECRET_KEY]: value } }) });
        if (!res.ok) throw new Error(`could not write the Nomad Variable: ${res.status} ${await res.text()}`);
      },
      failureSuffix: ` (on ${hostname()})`,
      startReport: 'deferred',
      afterCancel: 'killed',
      closeEndsAttempts: false,
      close: async () => {
        for (const s of servers) await s.close();
      },
    };
  } catch (e) {
    for (const s of servers) await s.close().catch(() => undefined);
    throw e;
  }
}, nomadBin !== undefined && natsOk);
