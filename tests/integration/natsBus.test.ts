import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalExecutor } from '../../engine/local/LocalExecutor.js';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connectJetStream, type ConnectJetStreamOptions, type JetStreamBackends } from '../../engine/nats/connectJetStream.js';
import { natsConnectionOptions } from '../../engine/nats/natsConnectionOptions.js';
import { runSubjects, eventSubject } from '../../engine/run/Bus.js';
import { realClock } from '../../engine/run/Clock.js';
import { RunEngine } from '../../engine/run/RunEngine.js';
import type { ExpressionContext } from '../../engine/run/evaluate.js';
import type { WorkItem } from '../../engine/run/protocol.js';
import { eventId, type RunEvent } from '../../engine/run/RunEvent.js';
import type { TaskSpec } from '../../engine/spec/Workflow.js';
import { buildRunPlan } from '../../engine/run/RunPlan.js';
import { validateText } from '../../engine/spec/validateWorkflows.js';
import { NatsServer, natsServerBinaries, requireServer } from '../harness/natsServer.js';
import { until } from '../harness/until.js';
import { caravanBin } from '../harness/cli.js';
import { repoWith, workflow } from '../harness/gitRepo.js';

const available = requireServer('nats-server', 'apt-get install -y nats-server');
/** The context of a task whose expressions read nothing. */
const EMPTY: ExpressionContext = { params: {}, tasks: {}, run: {} };

for (const { label, bin } of natsServerBinaries()) describe(`the NATS JetStream bus against a real ${label}`, () => {
  let server: NatsServer;
  beforeAll(async () => {
    server = await NatsServer.start(undefined, { bin });
  });
  afterAll(async () => {
    await server.close();
  });

  /** The JetStream backends of one (simulated) process: one connection. */
  async function nats(o: Partial<ConnectJetStreamOptions> = {}): Promise<JetStreamBackends> {
    return connectJetStream({ connection: await natsConnectionOptions({}, [server.url]), limits: { maxAgeMs: 3_600_000, duplicateWindowMs: 60_000 }, ...o });
  }

  /** The server's stream and consumer API, on the backends' own connection. */
  function admin(n: JetStreamBackends): Promise<JetStreamManager> {
    return jetstreamManager(n.connection);
  }

  /** A scratch directory, and the engine's side of the bus following run r1 of `workflow`. */
  async function poolScene(workflow: string): Promise<{ dir: string; engineSide: JetStreamBackends; got: RunEvent[]; close: () => Promise<void> }> {
    const dir = await mkdtemp(join(tmpdir(), 'caravan-pool-'));
    const engineSide = await nats();
    const got: RunEvent[] = [];
    const stopSub = engineSide.bus.subscribe(runSubjects(workflow, 'r1'), (e) => got.push(e));
    return {
      dir, engineSide, got,
      close: async () => {
        stopSub();
        await engineSide.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  }

  /** A real `caravan agent pool` process of pool `p`, with `env` added to its environment. */
  function poolAgentProcess(workflow: string, concurrency: number, env: Record<string, string>): { proc: ChildProcess; exited: Promise<number | null> } {
    const proc = spawn(process.execPath, [caravanBin, 'agent', 'pool', '--workflow', workflow, '--pool', 'p', '--concurrency', String(concurrency)], { env: { ...process.env, NATS_URL: server.url, ...env }, stdio: 'ignore' });
    return { proc, exited: new Promise((r) => proc.once('exit', (code) => r(code))) };
  }

  it('creates its stream idempotently, with the configured limits', async () => {
    const a = await nats();
    const b = await nats();
    const info = await (await admin(b)).streams.info('CARAVAN_EVENTS');
    expect(info.config.subjects).toEqual(['caravan.ev.>']);
    expect(info.config.max_age).toBe(3_600_000 * 1_000_000);
    expect(info.config.duplicate_window).toBe(60_000 * 1_000_000);
    await a.close();
    await b.close();
  });

  it('loses nothing and duplicates nothing when the server restarts while events are published', async () => {
    const n = await nats();
    const b = n.bus;
    const got: string[] = [];
    const stop = b.subscribe(runSubjects('wf', 'restart'), (e) => got.push('task' in e ? e.task : ''));
    const send = (i: number): void => {
      const e: RunEvent = { runId: 'restart', at: i, type: 'task.started', task: `t${i}`, attempt: 1 };
      b.publish(eventSubject('wf', 'restart', `t${i}`), e, { msgId: eventId(e), origin: 'agent' });
    };
    for (let i = 0; i < 200; i++) send(i);
    await b.flush();
    await until('the first 200', () => got.length >= 200);
    const restarting = server.restart();
    for (let i = 200; i < 400; i++) send(i);
    // Republished with the same ids: stored once.
    for (let i = 150; i < 250; i++) send(i);
    await restarting;
    await b.flush();
    await until('all 400', () => got.length >= 400);
    for (let i = 400; i < 410; i++) send(i);
    await until('the marker events', () => got.length >= 410);
    expect(got).toHaveLength(410);
    expect(new Set(got).size).toBe(410);
    stop();
    await n.close();
  });

  it('a pool agent reports a short task once (its result, with startedAt) and a longer one as started, then its result', async () => {
    const { startPoolAgent } = await import('../../agents/agentCommand.js');
    const engineSide = await nats();
    const agentSide = await nats();
    const got: RunEvent[] = [];
    const stopSub = engineSide.bus.subscribe(runSubjects('pooled', 'once'), (e) => got.push(e));
    const stopAgent = await startPoolAgent(agentSide.workQueue, agentSide.bus, 'pooled', 'p', 4);
    const item = (instance: string, task: TaskSpec): WorkItem => ({ runId: 'once', workflow: 'pooled', instance, attempt: 1, task, context: EMPTY });
    const before = Date.now();
    await engineSide.workQueue.enqueue('pooled', 'p', item('quick', { name: 'quick', agent: 'noop' }));
    await engineSide.workQueue.enqueue('pooled', 'p', item('slow', { name: 'slow', sleep: '400ms' }));
    await until('both results', () => got.filter((e) => e.type === 'task.succeeded').length === 2);
    const of = (task: string) => got.filter((e) => 'task' in e && e.task === task);
    expect(of('quick').map((e) => e.type)).toEqual(['task.succeeded']);
    const quick = of('quick')[0] as Extract<RunEvent, { type: 'task.succeeded' }>;
    expect(quick.startedAt).toBeGreaterThanOrEqual(before);
    expect(quick.startedAt).toBeLessThanOrEqual(quick.at);
    expect(of('slow').map((e) => e.type)).toEqual(['task.started', 'task.succeeded']);
    expect((of('slow')[1] as Extract<RunEvent, { type: 'task.succeeded' }>).startedAt).toBeUndefined();
    stopSub();
    await stopAgent();
    await agentSide.close();
    await engineSide.close();
  });

  it('a pool agent masks the secret values its task resolved, in log lines and errors', async () => {
    const { startPoolAgent } = await import('../../agents/agentCommand.js');
    const engineSide = await nats();
    const agentSide = await nats();
    const got: RunEvent[] = [];
    const stopSub = engineSide.bus.subscribe(runSubjects('masked', 'm1'), (e) => got.push(e));
    const stopAgent = await startPoolAgent(agentSide.workQueue, agentSide.bus, 'masked', 'p', 1);
    const secret = 's3cr3t-4c1d-token';
    process.env['CARAVAN_SECRET_CARAVAN_PROD_TOKEN'] = secret;
    try {
      const task = { name: 'leak', env: { TOKEN: { secret: { path: 'caravan/prod', key: 'token' } } }, run: 'echo "token is $TOKEN"; echo "bad $TOKEN" >&2; exit 3' };
      await engineSide.workQueue.enqueue('masked', 'p', { runId: 'm1', workflow: 'masked', instance: 'leak', attempt: 1, task, context: EMPTY });
      await until('the result', () => got.some((e) => e.type === 'task.failed'));
    } finally {
      delete process.env['CARAVAN_SECRET_CARAVAN_PROD_TOKEN'];
    }
    const text = JSON.stringify(got);
    expect(text).not.toContain(secret);
    expect(got.filter((e) => e.type === 'task.log').map((e) => (e as Extract<RunEvent, { type: 'task.log' }>).line).sort()).toEqual(['bad ***', 'token is ***']);
    stopSub();
    await stopAgent();
    await agentSide.close();
    await engineSide.close();
  });

  it('cancelling a run stops a pooled attempt an agent has taken, and an agent skips a cancelled item it has not', async () => {
    const { startPoolAgent } = await import('../../agents/agentCommand.js');
    const { NomadExecutor } = await import('../../engine/nomad/NomadExecutor.js');
    const { NomadClient } = await import('../../engine/nomad/NomadClient.js');
    const engineSide = await nats();
    const agentSide = await nats();
    const reports: RunEvent[] = [];
    const stopSub = engineSide.bus.subscribe('caravan.ev.cancelpool.>', (e) => reports.push(e));
    const stopAgent = await startPoolAgent(agentSide.workQueue, agentSide.bus, 'cancelpool', 'p', 1);
    const wf = validateText('c.yaml', workflow('cancelpool', '  pools:\n    p: { count: 1, concurrency: 2 }\n  tasks:\n    - { name: long, pool: p, sleep: 60s }\n    - { name: queued, pool: p, sleep: 60s }\n')).workflow!;
    const plan = buildRunPlan(wf, { maxParallel: 4 });
    const clock = realClock();
    const executor = new NomadExecutor(new NomadClient({ address: 'http://127.0.0.1:1' }), engineSide.bus, clock, {
      natsServers: [server.url],
      fallback: new LocalExecutor(engineSide.bus, clock, { baseDir: process.cwd() }),
      workQueue: engineSide.workQueue,
    });
    const engine = new RunEngine({ plan, runId: 'cp1', executor, bus: engineSide.bus, clock, publishDecisions: false });
    engine.start({}, 'test');
    // The agent takes one item at a time: one task runs, the other waits in the queue.
    await until('one task to start', () => engine.state.instances.get('long')?.status === 'running' || engine.state.instances.get('queued')?.status === 'running');
    const running = engine.state.instances.get('long')!.status === 'running' ? 'long' : 'queued';
    const waiting = running === 'long' ? 'queued' : 'long';
    // Both were handed to the queue (the pool has room for two); the agent took one.
    expect(engine.state.instances.get(waiting)!.status).toBe('queued');
    engine.cancel('test', 'stop');
    expect((await engine.done()).status).toBe('cancelled');
    // The runner stopped its sleep (60 s) at once and said so; the queued item never ran.
    await until('the running attempt to stop', () => reports.some((e) => e.type === 'task.failed' && e.task === running));
    expect(reports.find((e) => e.type === 'task.failed' && e.task === running)).toMatchObject({ error: expect.stringMatching(/^cancelled/) });
    const jsm = await admin(engineSide);
    const info = async () => (await jsm.streams.info('CARAVAN_WORK')).state.messages;
    await until('the queue to drain', async () => (await info()) === 0);
    expect(reports.filter((e) => 'task' in e && e.task === waiting)).toEqual([]);
    stopSub();
    await stopAgent();
    await executor.close();
    await agentSide.close();
    await engineSide.close();
  }, 60_000);

  it('a pool runs count x concurrency items at once: two agents of concurrency 1 run two items together', async () => {
    const { startPoolAgent } = await import('../../agents/agentCommand.js');
    const { dir, engineSide, got, close } = await poolScene('twoagents');
    const a = await nats();
    const b = await nats();
    const stops = [await startPoolAgent(a.workQueue, a.bus, 'twoagents', 'p', 1), await startPoolAgent(b.workQueue, b.bus, 'twoagents', 'p', 1)];
    // Each task waits for the other to have started: they finish only if they run together.
    const task = (me: string, other: string) => ({ name: me, run: `touch ${dir}/${me}; i=0; while [ ! -e ${dir}/${other} ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; test -e ${dir}/${other}` });
    await engineSide.workQueue.enqueue('twoagents', 'p', { runId: 'r1', workflow: 'twoagents', instance: 'x', attempt: 1, task: task('x', 'y'), context: EMPTY });
    await engineSide.workQueue.enqueue('twoagents', 'p', { runId: 'r1', workflow: 'twoagents', instance: 'y', attempt: 1, task: task('y', 'x'), context: EMPTY });
    await until('both results', () => got.filter((e) => e.type === 'task.succeeded' || e.type === 'task.failed').length === 2);
    expect(got.filter((e) => e.type === 'task.succeeded').map((e) => (e as { task: string }).task).sort()).toEqual(['x', 'y']);
    for (const stop of stops) await stop();
    await a.close();
    await b.close();
    await close();
  });

  it('the item of a pool agent killed mid-task goes to another agent once the ack wait has passed', async () => {
    const { startPoolAgent } = await import('../../agents/agentCommand.js');
    const { dir, engineSide, got, close } = await poolScene('killedagent');
    // Agent A is a real `caravan agent pool` process, SIGKILLed while its task runs.
    const a = poolAgentProcess('killedagent', 1, { CARAVAN_WORK_ACK_WAIT_S: '1' });
    // The first run records its shell's pid and sleeps; a second run of the item finds that and succeeds.
    const run = `if [ -e ${dir}/pid ]; then echo second; exit 0; fi; echo $$ > ${dir}/pid; exec sleep 30`;
    await engineSide.workQueue.enqueue('killedagent', 'p', { runId: 'r1', workflow: 'killedagent', instance: 't', attempt: 1, task: { name: 't', run }, context: EMPTY });
    await until('agent A to start the task', async () => (await readFile(join(dir, 'pid'), 'utf8').catch(() => '')).trim() !== '');
    a.proc.kill('SIGKILL');
    await a.exited;
    process.kill(Number((await readFile(join(dir, 'pid'), 'utf8')).trim()), 'SIGKILL');
    const b = await nats({ workAckWaitMs: 1000 });
    const stopB = await startPoolAgent(b.workQueue, b.bus, 'killedagent', 'p', 1);
    await until('the second run to succeed', () => got.some((e) => e.type === 'task.succeeded'));
    expect(got.filter((e) => e.type === 'task.log').map((e) => (e as { line: string }).line)).toEqual(['second']);
    // Acknowledged once its report was stored: nothing is left in the queue.
    const jsm = await admin(engineSide);
    await until('the queue to drain', async () => (await jsm.streams.info('CARAVAN_WORK')).state.messages === 0);
    await stopB();
    await b.close();
    await close();
  });

  it('a pool agent told to stop lets a short task finish and hands a long one back to the queue at once', async () => {
    const { startPoolAgent } = await import('../../agents/agentCommand.js');
    const { dir, engineSide, got, close } = await poolScene('stopagent');
    // An ack wait of ten minutes: an item that comes back within the test came back because
    // the stopping agent handed it back, not because the server gave up on it.
    const a = poolAgentProcess('stopagent', 2, { CARAVAN_WORK_ACK_WAIT_S: '600', CARAVAN_DRAIN_S: '2' });
    const long = `if [ -e ${dir}/long ]; then echo second; exit 0; fi; echo $$ > ${dir}/long; exec sleep 30`;
    const short = `touch ${dir}/short; sleep 1; echo short done`;
    await engineSide.workQueue.enqueue('stopagent', 'p', { runId: 'r1', workflow: 'stopagent', instance: 'long', attempt: 1, task: { name: 'long', run: long }, context: EMPTY });
    await engineSide.workQueue.enqueue('stopagent', 'p', { runId: 'r1', workflow: 'stopagent', instance: 'short', attempt: 1, task: { name: 'short', run: short }, context: EMPTY });
    await until('agent A to start both', async () => (await readFile(join(dir, 'long'), 'utf8').catch(() => '')).trim() !== '' && (await readFile(join(dir, 'short')).then(() => true, () => false)));
    const sleeper = Number((await readFile(join(dir, 'long'), 'utf8')).trim());
    a.proc.kill('SIGTERM');
    expect(await a.exited).toBe(0);
    // The short task finished within the drain and reported; the long one was stopped, its
    // process group killed, and not reported as failed.
    expect(got.filter((e) => e.type === 'task.succeeded').map((e) => (e as { task: string }).task)).toEqual(['short']);
    expect(got.some((e) => e.type === 'task.failed')).toBe(false);
    expect(() => process.kill(sleeper, 0)).toThrow();
    const b = await nats({ workAckWaitMs: 600_000 });
    const stopB = await startPoolAgent(b.workQueue, b.bus, 'stopagent', 'p', 1);
    await until('the long task to run again on agent B', () => got.some((e) => e.type === 'task.succeeded' && e.task === 'long'));
    expect(got.filter((e) => e.type === 'task.log' && e.task === 'long').map((e) => (e as { line: string }).line)).toEqual(['second']);
    const jsm = await admin(engineSide);
    await until('the queue to drain', async () => (await jsm.streams.info('CARAVAN_WORK')).state.messages === 0);
    await stopB();
    await b.close();
    await close();
  });

  it('an agent stopped with every slot busy hands back what it runs and what it holds, at once', async () => {
    // Ten minutes' ack wait: what reaches the other agent within the test was handed back.
    const b = await nats({ workAckWaitMs: 600_000 });
    let started = 0;
    // Attempts that end only when aborted: every slot stays busy until the agent stops.
    const stop = await b.workQueue.consume('busystop', 'p', 2, async (_item, signal) => {
      started++;
      await new Promise<void>((r) => signal.addEventListener('abort', () => r()));
      return {};
    });
    for (let i = 0; i < 5; i++) await b.workQueue.enqueue('busystop', 'p', { runId: 'r1', workflow: 'busystop', instance: `t${i}`, attempt: 1, task: { name: `t${i}` }, context: EMPTY });
    await until('both slots busy', () => started === 2);
    await stop(0);
    // A second agent gets all five, the two that ran included, long before the ack wait.
    const taken = new Set<string>();
    const other = await nats({ workAckWaitMs: 600_000 });
    const stopOther = await other.workQueue.consume('busystop', 'p', 8, async (item) => {
      taken.add(item.instance);
      return {};
    });
    await until('all five on the other agent', () => taken.size === 5);
    await stopOther();
    await other.close();
    await b.close();
  });

  it('brings durable consumers made by an older build to the current config', async () => {
    const { startPoolAgent } = await import('../../agents/agentCommand.js');
    const { AckPolicy, DeliverPolicy } = await import('@nats-io/jetstream');
    const { createHash } = await import('node:crypto');
    const b = await nats();
    await b.workQueue.ensureStream();
    const jsm = await admin(b);
    // As session 2 made them: the pool capped at one agent's concurrency, an hour's ack wait,
    // and the events consumer at the server's default of 1,000 unacknowledged messages.
    await jsm.consumers.add('CARAVAN_WORK', { durable_name: 'pool-oldpool-p', filter_subject: 'caravan.work.oldpool.p', ack_policy: AckPolicy.Explicit, max_ack_pending: 4, ack_wait: 3_600_000 * 1_000_000 });
    const pattern = runSubjects('oldpool', 'r1');
    const durable = `caravan-${createHash('sha256').update(`CARAVAN_EVENTS/${pattern}`).digest('hex').slice(0, 20)}`;
    await jsm.consumers.add('CARAVAN_EVENTS', { durable_name: durable, filter_subject: pattern, ack_policy: AckPolicy.All, deliver_policy: DeliverPolicy.All, max_ack_pending: 1000 });
    const got: RunEvent[] = [];
    const stopSub = b.bus.subscribe(pattern, (e) => got.push(e));
    const stopAgent = await startPoolAgent(b.workQueue, b.bus, 'oldpool', 'p', 4);
    const pool = (await jsm.consumers.info('CARAVAN_WORK', 'pool-oldpool-p')).config;
    expect(pool.max_ack_pending).toBe(-1);
    expect(pool.ack_wait).toBe(30_000 * 1_000_000);
    await until('the events consumer to be updated', async () => (await jsm.consumers.info('CARAVAN_EVENTS', durable)).config.max_ack_pending === 16_384);
    // And both still work.
    await b.workQueue.enqueue('oldpool', 'p', { runId: 'r1', workflow: 'oldpool', instance: 'a', attempt: 1, task: { name: 'a', agent: 'noop' }, context: EMPTY });
    await until('the result', () => got.some((e) => e.type === 'task.succeeded'));
    stopSub();
    await stopAgent();
    await b.close();
  });

  it('a runner whose server is gone gives up its reports after the deadline instead of hanging', async () => {
    const own = await NatsServer.start(undefined, { bin });
    const n = await connectJetStream({ connection: await natsConnectionOptions({}, [own.url]) });
    await own.close();
    const e: RunEvent = { runId: 'gone', at: 1, type: 'task.succeeded', task: 't', attempt: 1, outputs: {} };
    n.bus.publish(eventSubject('wf', 'gone', 't'), e, { msgId: eventId(e), origin: 'agent' });
    expect(await n.bus.flushWithin(300)).toBe(false);
    await n.close();
  });

  it('flushWithin answers true once every publish is stored', async () => {
    const n = await nats();
    const e: RunEvent = { runId: 'here', at: 1, type: 'task.succeeded', task: 't', attempt: 1, outputs: {} };
    n.bus.publish(eventSubject('wf', 'here', 't'), e, { msgId: eventId(e), origin: 'agent' });
    expect(await n.bus.flushWithin(30_000)).toBe(true);
    await n.close();
  });

  it('carries a real run: local agents report over JetStream to the engine, across a server restart', async () => {
    const tasks = Array.from({ length: 30 }, (_, i) => `    - { name: t${i}, run: "sleep 0.02"${i > 0 ? `, needs: [t${i - 1}]` : ''} }\n`).join('');
    const wf = validateText('n.yaml', workflow('natsrun', `  tasks:\n${tasks}`)).workflow!;
    const n = await nats();
    const b = n.bus;
    const clock = realClock();
    const executor = new LocalExecutor(b, clock, { baseDir: process.cwd() });
    const engine = new RunEngine({ plan: buildRunPlan(wf, { maxParallel: 4 }), runId: 'nats-run', executor, bus: b, clock });
    const succeeded: string[] = [];
    engine.onEvent((e) => {
      if (e.type === 'task.succeeded') succeeded.push(e.task);
    });
    engine.start({}, 'test');
    await until('a third of the run', () => succeeded.length >= 10);
    await server.restart();
    const state = await engine.done();
    expect(state.status).toBe('succeeded');
    expect(succeeded).toEqual(Array.from({ length: 30 }, (_, i) => `t${i}`));
    await executor.close();
    await n.close();
  });
});

describe.skipIf(!available)('caravan run --bus nats', () => {
  it('runs with its events on JetStream, and says clearly when NATS is not there', async () => {
    const { main } = await import('../../engine/cli/main.js');
    const { rm } = await import('node:fs/promises');
    const server = await NatsServer.start();
    const dir = await repoWith({ 'ok.yaml': workflow('ok', '  tasks:\n    - { name: a, run: "echo hi" }\n    - { name: b, needs: [a], agent: noop }\n') });
    const saved = process.env['NATS_URL'];
    try {
      process.env['NATS_URL'] = server.url;
      let out = '';
      const code = await main(['run', 'ok', '--bus', 'nats'], { cwd: dir, stdout: (t) => { out += t; }, stderr: (t) => { out += t; } });
      expect(code).toBe(0);
      expect(out).toMatch(/run \S+ of ok succeeded/);
      const b = await connectJetStream({ connection: await natsConnectionOptions({}, [server.url]) });
      const info = await (await jetstreamManager(b.connection)).streams.info('CARAVAN_EVENTS');
      // Every event of the run, the engine's decisions included.
      expect(info.state.messages).toBeGreaterThanOrEqual(8);
      await b.close();
      await server.stop();
      let err = '';
      const down = await main(['run', 'ok', '--bus', 'nats'], { cwd: dir, stdout: () => undefined, stderr: (t) => { err += t; } });
      expect(down).toBe(74);
      expect(err).toMatch(new RegExp(`^caravan: cannot use NATS JetStream at ${server.url.replace(/[.]/g, '\\.')}: .*\\(set NATS_URL, or run without --bus nats\\)\\n$`));
    } finally {
      if (saved === undefined) delete process.env['NATS_URL'];
      else process.env['NATS_URL'] = saved;
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!available)('one NATS connection per process', () => {
  /** The client connections the server has open now, by name (its monitoring endpoint `/connz`). */
  async function connections(server: NatsServer): Promise<string[]> {
    const r = await fetch(`${server.monitorUrl}/connz`);
    const body = (await r.json()) as { num_connections: number; connections?: Array<{ name?: string }> };
    expect(body.connections ?? []).toHaveLength(body.num_connections);
    return (body.connections ?? []).map((c) => c.name ?? '');
  }

  it('connectJetStream carries the bus, the work queue and the context store on one connection, and closes it', async () => {
    const server = await NatsServer.start(undefined, { monitor: true });
    try {
      expect(await connections(server)).toEqual([]);
      const n = await connectJetStream({ connection: { ...(await natsConnectionOptions({}, [server.url])), name: 'caravan-one' } });
      // Every backend in use: an event published and received, a work item queued and taken,
      // a context stored and read, a cancel broadcast.
      const got: RunEvent[] = [];
      const stopSub = n.bus.subscribe(runSubjects('conn', 'r1'), (e) => got.push(e));
      const e: RunEvent = { runId: 'r1', at: 1, type: 'task.started', task: 't', attempt: 1 };
      n.bus.publish(eventSubject('conn', 'r1', 't'), e, { msgId: eventId(e), origin: 'agent' });
      const taken: string[] = [];
      const stopWork = await n.workQueue.consume('conn', 'p', 2, async (item) => {
        taken.push(item.instance);
        return { reported: Promise.resolve() };
      });
      await n.workQueue.enqueue('conn', 'p', { runId: 'r1', workflow: 'conn', instance: 'w', attempt: 1, task: { name: 'w', agent: 'noop' }, context: EMPTY });
      n.workQueue.cancel('conn', 'p', { runId: 'r1', instance: 'gone', attempt: 1 });
      await n.contexts.put('r1:c:1', '{"big":true}');
      expect(await n.contexts.get('r1:c:1')).toBe('{"big":true}');
      await until('the event and the item', () => got.length === 1 && taken.length === 1);
      expect(await connections(server)).toEqual(['caravan-one']);
      await stopWork();
      stopSub();
      await n.close();
      await n.close();
      await until('the connection to close', async () => (await connections(server)).length === 0);
    } finally {
      await server.close();
    }
  });
});
