import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { prepareAction } from '../../agents/prepareAction.js';
import { RefConflictError } from '../../engine/audit/updateRef.js';
import { EXIT, exitCodeFor } from '../../engine/cli/exitCodes.js';
import { waitForPort } from '../../engine/dev/serverProcess.js';
import { CaravanError } from '../../engine/errors/CaravanError.js';
import { InMemoryBus } from '../../engine/local/InMemoryBus.js';
import { NomadClient } from '../../engine/nomad/NomadClient.js';
import { NomadExecutor } from '../../engine/nomad/NomadExecutor.js';
import { FakeClock } from '../../engine/run/Clock.js';
import type { Executor } from '../../engine/run/Executor.js';
import { ExpressionEvaluationError, evaluateExpression } from '../../engine/run/evaluate.js';
import type { RunEvent } from '../../engine/run/RunEvent.js';
import { buildRunPlan } from '../../engine/run/RunPlan.js';
import { PoolAgentStopping } from '../../engine/run/WorkQueue.js';
import { validateText } from '../../engine/spec/validateWorkflows.js';
import { workflow } from '../harness/gitRepo.js';
import { until } from '../harness/until.js';

const context = { params: {}, tasks: {}, run: {} };

/** What callers branch on: the class, the stable code, and the exit code the CLI gives it. */
function expectCode(err: unknown, code: CaravanError['code'], exit: number): void {
  expect(err).toBeInstanceOf(CaravanError);
  expect((err as CaravanError).code).toBe(code);
  expect(exitCodeFor(err as CaravanError)).toBe(exit);
}

describe('errors Caravan raises on purpose carry a stable code', () => {
  it('a secret that cannot be resolved here: SECRET_UNAVAILABLE, naming the secret, never a value', () => {
    const task = { name: 't', run: 'true', env: { DB: { secret: { path: 'db', key: 'password' } } } };
    let err: unknown;
    try {
      prepareAction(task, 'task', context, {}, () => undefined);
    } catch (e) {
      err = e;
    }
    expectCode(err, 'SECRET_UNAVAILABLE', EXIT.FAILED);
    expect((err as CaravanError).message).toBe('secret db#password for DB is not available here (locally, set CARAVAN_SECRET_DB_PASSWORD)');
    expect((err as CaravanError).data).toEqual({ path: 'db', key: 'password', usedFor: 'DB', variable: 'CARAVAN_SECRET_DB_PASSWORD' });
  });

  it('an expression that fails at run time: EXPRESSION_FAILED, with the expression', () => {
    let err: unknown;
    try {
      evaluateExpression('fromJSON(\'{oops\')', context);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ExpressionEvaluationError);
    expectCode(err, 'EXPRESSION_FAILED', EXIT.FAILED);
    expect((err as CaravanError).data).toEqual({ expression: 'fromJSON(\'{oops\')' });
  });

  it('the library-level signals are CaravanErrors too: a ref that moved, a pool agent that stops', () => {
    expectCode(new RefConflictError('refs/heads/caravan/runs'), 'AUDIT_REF_CONFLICT', EXIT.TEMPFAIL);
    expect(new RefConflictError('refs/x').message).toBe('refs/x moved while it was being updated');
    expectCode(new PoolAgentStopping(), 'POOL_AGENT_STOPPING', EXIT.TEMPFAIL);
    expect(new PoolAgentStopping().message).toBe('the pool agent is stopping');
  });

  it('a dev server that exits before it listens: DEV_SERVER_FAILED, saying which and how', async () => {
    const proc = spawn(process.execPath, ['-e', 'process.exit(3)'], { stdio: 'ignore' });
    await new Promise((r) => proc.once('exit', r));
    const err = await waitForPort(1, 5_000, proc, 'nats-server').catch((e: unknown) => e);
    expectCode(err, 'DEV_SERVER_FAILED', EXIT.UNAVAILABLE);
    expect((err as CaravanError).message).toBe('nats-server exited with code 3 before listening on 1');
  });
});

describe('NomadExecutor', () => {
  it('tells onError when it cannot look for an attempt\'s job, keeps the client\'s code, and still dispatches (which fails the attempt)', async () => {
    const wf = validateText('w.yaml', workflow('lookup', '  tasks:\n    - { name: a, run: "true" }\n')).workflow!;
    const plan = buildRunPlan(wf, { maxParallel: 1 });
    const bus = new InMemoryBus();
    const events: RunEvent[] = [];
    bus.subscribe('caravan.ev.>', (e) => events.push(e));
    const errors: Error[] = [];
    const fallback: Executor = { start: () => undefined, reattach: () => undefined, cancel: () => undefined, close: async () => undefined };
    const executor = new NomadExecutor(new NomadClient({ address: 'http://127.0.0.1:1', retries: 0 }), bus, new FakeClock(0), { natsServers: [], fallback, onError: (e) => errors.push(e) });
    executor.reattach({ runId: 'r1', plan, dispatch: { instance: 'a', task: 'a', attempt: 1, kind: 'task', context } });
    await until('the attempt to fail', () => events.some((e) => e.type === 'task.failed'));
    expect(errors).toHaveLength(1);
    expectCode(errors[0], 'NOMAD_UNREACHABLE', EXIT.IO);
    expect(errors[0]!.message).toMatch(/^could not look for the dispatched job of attempt r1:a:1 under caravan-lookup-a; dispatching it again: cannot reach Nomad at http:\/\/127\.0\.0\.1:1: /);
    expect(events.find((e) => e.type === 'task.failed')).toMatchObject({ error: expect.stringMatching(/^dispatch to Nomad failed: cannot reach Nomad/) });
    await executor.close();
  });
});
