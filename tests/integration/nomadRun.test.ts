import { rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openApp } from '../harness/openApp.js';
import { NomadClient } from '../../engine/nomad/NomadClient.js';
import { NomadAgent, requireNomad } from '../harness/nomadAgent.js';
import { NatsServer, requireServer } from '../harness/natsServer.js';
import { caravanBin, withEnv } from '../harness/cli.js';
import { until } from '../harness/until.js';
import type { RunEvent } from '../../engine/run/RunEvent.js';
import { snapshotRun } from '../../engine/run/RunState.js';
import { git, repoWith, workflow } from '../harness/gitRepo.js';
import { gatePath } from '../harness/gatePath.js';

const nomadBin = requireNomad();
const natsOk = requireServer('nats-server', 'apt-get install -y nats-server');

/** Fresh Nomad and NATS servers, with NOMAD_ADDR and NATS_URL pointing at them, for one test. */
async function withServers(fn: (nomad: NomadAgent, nats: NatsServer) => Promise<void>): Promise<void> {
  const [nomad, nats] = await Promise.all([NomadAgent.start(nomadBin!), NatsServer.start()]);
  try {
    await withEnv({ NOMAD_ADDR: nomad.address, NATS_URL: nats.url }, () => fn(nomad, nats));
  } finally {
    await Promise.all([nomad.close(), nats.close()]);
  }
}

describe.skipIf(nomadBin === undefined || !natsOk)('a run on Nomad, reporting over NATS JetStream', () => {
  let nomad: NomadAgent;
  let nats: NatsServer;
  let dir: string;
  const saved = { NOMAD_ADDR: process.env['NOMAD_ADDR'], NATS_URL: process.env['NATS_URL'] };
  beforeAll(async () => {
    [nomad, nats] = await Promise.all([NomadAgent.start(nomadBin!), NatsServer.start()]);
    process.env['NOMAD_ADDR'] = nomad.address;
    process.env['NATS_URL'] = nats.url;
    dir = await repoWith({
      'onnomad.yaml': workflow('onnomad', [
        '  tasks:',
        '    - { name: a, run: "printf \'x=41\\\\n\' > \\"$CARAVAN_OUTPUTS\\"", outputs: [x] }',
        '    - { name: b, needs: [a], run: "echo got ${{ tasks.a.outputs.x }}; printf \'y=%s\\\\n\' $(( ${{ tasks.a.outputs.x }} + 1 )) > \\"$CARAVAN_OUTPUTS\\"", outputs: [y] }',
        '    - { name: c, needs: [b], run: "test \\"${{ tasks.b.outputs.y }}\\" = 42" }',
        '',
      ].join('\n')),
    });
  }, 120_000);
  afterAll(async () => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    await Promise.all([nomad?.close(), nats?.close()]);
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('dispatches each task to its job, passes outputs along, and records the run in Git', async () => {
    const svc = openApp({ repoDir: dir, backend: 'nomad', bus: 'nats' });
    const run = await svc.start('onnomad', {});
    const { state } = await run.done;
    expect([state.status, state.failureReason ?? '']).toEqual(['succeeded', '']);
    expect(state.instances.get('b')!.outputs).toEqual({ y: '42' });
    const client = new NomadClient({ address: nomad.address });
    const head = (await git(dir, 'rev-parse', 'HEAD')).trim();
    const job = await client.readJob('caravan-onnomad-a');
    expect(job.Meta).toMatchObject({ 'caravan.workflow': 'onnomad', 'caravan.task': 'a', 'caravan.git-commit': head });
    const children = (await (await fetch(`${nomad.address}/v1/jobs?prefix=${encodeURIComponent('caravan-onnomad-b/dispatch')}`)).json()) as Array<{ ID: string }>;
    expect(children).toHaveLength(1);
    const logs = (await git(dir, 'show', `caravan/runs:runs/onnomad/${run.runId}/events.ndjson`)).split('\n').filter((l) => l.includes('"task.log"')).map((l) => (JSON.parse(l) as { line: string }).line);
    expect(logs).toContain('got 41');
  }, 120_000);

  it('a context over Nomad\'s 16 KiB payload reaches the runner through NATS', async () => {
    const big = await repoWith({ 'bigctx.yaml': workflow('bigctx', [
      '  params:',
      '    blob: { type: string }',
      '  tasks:',
      '    - { name: measure, run: "v=\'${{ params.blob }}\'; printf \'n=%s\\\\n\' ${#v} > \\"$CARAVAN_OUTPUTS\\"", outputs: [n] }',
      '',
    ].join('\n')) });
    try {
      const svc = openApp({ repoDir: big, backend: 'nomad', bus: 'nats' });
      const { state } = await (await svc.start('bigctx', { blob: 'x'.repeat(40_000) })).done;
      expect([state.status, state.failureReason ?? '']).toEqual(['succeeded', '']);
      expect(state.instances.get('measure')!.outputs).toEqual({ n: '40000' });
      // The payload Nomad holds carries a reference, not the 40 kB.
      const client = new NomadClient({ address: nomad.address });
      const [child] = await client.dispatchedChildren('caravan-bigctx-measure');
      const held = (await client.readJob(child!)) as unknown as { Payload: string };
      const payload = JSON.parse(Buffer.from(held.Payload, 'base64').toString()) as { context?: unknown; contextRef?: string };
      expect([payload.context, payload.contextRef]).toEqual([undefined, `${state.runId}:measure:1`]);
    } finally {
      await rm(big, { recursive: true, force: true });
    }
  }, 120_000);

  it('a failed saga undoes completed steps with their compensation jobs on Nomad', async () => {
    const saga = await repoWith({ 'undo.yaml': workflow('undo', [
      '  tasks:',
      '    - name: reserve',
      '      run: "printf \'r=res-7\\\\n\' > \\"$CARAVAN_OUTPUTS\\""',
      '      outputs: [r]',
      '      compensate: { run: "echo releasing ${{ tasks.reserve.outputs.r }} on $(hostname)" }',
      '    - { name: ship, needs: [reserve], run: "exit 4" }',
      '',
    ].join('\n')) });
    try {
      const svc = openApp({ repoDir: saga, backend: 'nomad', bus: 'nats' });
      const { state } = await (await svc.start('undo', {})).done;
      expect(state.status).toBe('failed');
      const undo = state.instances.get('reserve:compensate')!;
      expect([undo.kind, undo.status]).toEqual(['compensate', 'succeeded']);
      const client = new NomadClient({ address: nomad.address });
      // The compensation ran as a dispatch of its own job, and its log reached the record.
      const children = await client.dispatchedChildren('caravan-undo-reserve-compensate');
      expect(children).toHaveLength(1);
      expect((await client.readJob(children[0]!)).Meta).toMatchObject({ caravan_run: state.runId });
      const logs = (await git(saga, 'show', `caravan/runs:runs/undo/${state.runId}/events.ndjson`)).split('\n').filter((l) => l.includes('"task.log"')).map((l) => (JSON.parse(l) as { line: string }).line);
      expect(logs).toContain(`releasing res-7 on ${hostname()}`);
    } finally {
      await rm(saga, { recursive: true, force: true });
    }
  }, 120_000);

  it('a secret from a Nomad Variable reaches the task and is masked in everything it reports', async () => {
    const secret = 'nv-9d2e7f-secret';
    const put = await fetch(`${nomad.address}/v1/var/caravan/demo`, { method: 'PUT', body: JSON.stringify({ Path: 'caravan/demo', Items: { token: secret } }) });
    expect(put.status).toBe(200);
    const repo = await repoWith({ 'usesecret.yaml': workflow('usesecret', [
      '  tasks:',
      '    - name: use',
      '      env: { TOKEN: { secret: { path: caravan/demo, key: token } } }',
      '      run: "echo \\"token is $TOKEN\\"; test ${#TOKEN} = 16"',
      '',
    ].join('\n')) });
    try {
      const svc = openApp({ repoDir: repo, backend: 'nomad', bus: 'nats' });
      const { state } = await (await svc.start('usesecret', {})).done;
      expect([state.status, state.failureReason ?? '']).toEqual(['succeeded', '']);
      const record = await git(repo, 'show', `caravan/runs:runs/usesecret/${state.runId}/events.ndjson`);
      expect(record).toContain('token is ***');
      expect(record).not.toContain(secret);
      expect(JSON.stringify(await new NomadClient({ address: nomad.address }).readJob('caravan-usesecret-use'))).not.toContain(secret);
    } finally {
      await rm(repo, { recursive: true, force: true });
    }
  }, 120_000);

  it('a runner in the allocation captures stdout as an output, masks a Nomad Variable secret in it, and fails past the cap', async () => {
    const secret = 'nv-stdout-5b1c-secret';
    const put = await fetch(`${nomad.address}/v1/var/caravan/stdout`, { method: 'PUT', body: JSON.stringify({ Path: 'caravan/stdout', Items: { token: secret } }) });
    expect(put.status).toBe(200);
    const repo = await repoWith({ 'capture.yaml': workflow('capture', [
      '  failFast: false',
      '  tasks:',
      '    - name: speak',
      '      env: { TOKEN: { secret: { path: caravan/stdout, key: token } } }',
      '      run: |',
      '        echo "token $TOKEN"',
      '        echo "second line"',
      '      outputs: [{ name: result, from: stdout }]',
      '    - name: listen',
      '      needs: [speak]',
      '      run: echo "heard ${{ tasks.speak.outputs.result }}"',
      '    - name: flood',
      '      run: head -c 2048 /dev/zero | tr "\\0" a',
      '      outputs: [{ name: result, from: stdout, maxBytes: 1024 }]',
      '',
    ].join('\n')) });
    try {
      const svc = openApp({ repoDir: repo, backend: 'nomad', bus: 'nats' });
      const { state } = await (await svc.start('capture', {})).done;
      expect(state.status).toBe('failed');
      expect(state.instances.get('speak')!.outputs).toEqual({ result: 'token ***\nsecond line' });
      expect(state.instances.get('listen')!.status).toBe('succeeded');
      const flood = state.instances.get('flood')!;
      expect([flood.status, flood.errorCode, flood.attempts.length]).toEqual(['failed', 'OUTPUT_TOO_LARGE', 1]);
      expect(flood.error).toBe(`task 'flood' wrote more than 1024 bytes to stdout, the cap of its output 'result' (from: stdout); nothing was kept: raise maxBytes (at most 1048576) or write less (on ${hostname()})`);
      const job = await new NomadClient({ address: nomad.address }).readJob('caravan-capture-flood');
      expect(JSON.stringify(job)).toContain('"--stdout-output","result","--stdout-max-bytes","1024"');
      const record = await git(repo, 'show', `caravan/runs:runs/capture/${state.runId}/events.ndjson`);
      expect(record).toContain('heard token ***');
      expect(record + (await git(repo, 'show', `caravan/runs:runs/capture/${state.runId}/run.json`))).not.toContain(secret);
    } finally {
      await rm(repo, { recursive: true, force: true });
    }
  }, 120_000);

  it('never starts a second child for the same run, task and attempt (idempotency token)', async () => {
    const client = new NomadClient({ address: nomad.address });
    const payload = new TextEncoder().encode(JSON.stringify({ runId: 'idem', workflow: 'onnomad', instance: 'a', attempt: 1, kind: 'task', context: { params: {}, tasks: {}, run: {} }, nats: [nats.url] }));
    const meta = { caravan_run: 'idem', caravan_attempt: '1' };
    const first = await client.dispatchJob('caravan-onnomad-a', payload, meta, 'idem:a:1');
    const second = await client.dispatchJob('caravan-onnomad-a', payload, meta, 'idem:a:1');
    expect(second.DispatchedJobID).toBe(first.DispatchedJobID);
  });
});

describe.skipIf(nomadBin === undefined || !natsOk)('allocation failures the runner cannot report', () => {
  it('a runner that cannot start fails the task with Nomad\'s reason, and the run ends', async () => {
    await withServers(async () => {
      const dir = await repoWith({ 'broken.yaml': workflow('broken', '  tasks:\n    - { name: a, run: "echo never", retry: { attempts: 2, delay: 1s } }\n') });
      try {
        const svc = openApp({ repoDir: dir, backend: 'nomad', bus: 'nats', agentCommand: ['/nonexistent/caravan', 'agent'] });
        const { state } = await (await svc.start('broken', {})).done;
        expect(state.status).toBe('failed');
        const a = state.instances.get('a')!;
        expect(a.attempts).toHaveLength(2);
        expect(a.error).toMatch(/^Nomad allocation [0-9a-f]{8} driver error: .*\/nonexistent\/caravan/);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  }, 120_000);
});

describe.skipIf(nomadBin === undefined || !natsOk)('a task Nomad cannot place', () => {
  it('stays queued with Nomad\'s reason (task.pending) until it is cancelled', async () => {
    await withServers(async () => {
      // More CPU than the dev node has: Nomad accepts the job but blocks its placement.
      const dir = await repoWith({ 'toobig.yaml': workflow('toobig', '  tasks:\n    - { name: big, run: "echo never", resources: { cpu: 900000 } }\n') });
      try {
        const seen: RunEvent[] = [];
        const svc = openApp({ repoDir: dir, backend: 'nomad', bus: 'nats', onEvent: (e) => seen.push(e) });
        const started = await svc.start('toobig', {});
        await until('the reason', () => seen.some((e) => e.type === 'task.pending'));
        const pending = seen.find((e) => e.type === 'task.pending') as Extract<RunEvent, { type: 'task.pending' }>;
        expect(pending.reason).toMatch(/^Nomad cannot place it yet: 1 node evaluated; 1 out of room \(cpu on 1\)/);
        expect(started.engine.state.instances.get('big')).toMatchObject({ status: 'queued', pendingReason: pending.reason });
        // caravan status shows it from the snapshot.
        expect(snapshotRun(started.engine.state)['tasks']).toMatchObject({ big: { status: 'queued', pendingReason: pending.reason } });
        started.engine.cancel('test', 'cannot be placed');
        expect((await started.done).state.status).toBe('cancelled');
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  }, 120_000);
});

describe.skipIf(nomadBin === undefined || !natsOk)('the controller killed mid-run on Nomad', () => {
  it('resumes, reattaches to the running allocation, and dispatches no task twice', async () => {
    const { spawn } = await import('node:child_process');
    const { readFile, writeFile } = await import('node:fs/promises');
    const { main } = await import('../../engine/cli/main.js');
    const [nomad, nats] = await Promise.all([NomadAgent.start(nomadBin!), NatsServer.start()]);
    const gate = await gatePath();
    const dir = await repoWith({ 'slow.yaml': workflow('slow', `  tasks:\n    - { name: a, run: "echo a" }\n    - { name: b, needs: [a], run: "while [ ! -f ${gate} ]; do sleep 0.1; done; echo b" }\n    - { name: c, needs: [b], run: "echo c" }\n`) });
    const env = { ...process.env, NOMAD_ADDR: nomad.address, NATS_URL: nats.url };
    const saved = { NOMAD_ADDR: process.env['NOMAD_ADDR'], NATS_URL: process.env['NATS_URL'] };
    try {
      const child = spawn(process.execPath, [caravanBin, 'run', 'slow', '--backend', 'nomad', '--bus', 'nats'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (c: Buffer) => { out += c.toString(); });
      await until(() => `b to start:\n${out}`, () => /b started/.test(out), 60_000, 50);
      const runId = /run (\S+) of slow started/.exec(out)![1]!;
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      // b finishes while no controller is listening; its report waits on the stream.
      await writeFile(gate, '');
      process.env['NOMAD_ADDR'] = nomad.address;
      process.env['NATS_URL'] = nats.url;
      let resumedOut = '';
      const code = await main(['resume', runId, '--backend', 'nomad', '--bus', 'nats'], { cwd: dir, stdout: (t) => { resumedOut += t; }, stderr: (t) => { resumedOut += t; } });
      expect([code, resumedOut]).toEqual([0, expect.stringContaining(`run ${runId} of slow succeeded`)]);
      const client = new NomadClient({ address: nomad.address });
      for (const t of ['a', 'b', 'c']) expect([t, (await client.dispatchedChildren(`caravan-slow-${t}`)).length]).toEqual([t, 1]);
      const events = (await git(dir, 'show', `caravan/runs:runs/slow/${runId}/events.ndjson`)).split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as { type: string; task?: string; attempt?: number });
      expect(events.filter((e) => e.type === 'task.succeeded' && e.task === 'b').map((e) => e.attempt)).toEqual([1]);
      expect(await readFile(gate, 'utf8')).toBe('');
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      await Promise.all([nomad.close(), nats.close()]);
      await rm(dir, { recursive: true, force: true });
    }
  }, 180_000);
});

describe.skipIf(nomadBin === undefined || !natsOk)('an allocation killed under a task', () => {
  it('counts as a failed attempt and the task is retried under its policy', async () => {
    const { writeFile } = await import('node:fs/promises');
    await withServers(async (nomad) => {
    const gate = await gatePath();
    const dir = await repoWith({ 'victim.yaml': workflow('victim', `  tasks:\n    - { name: v, run: "while [ ! -f ${gate} ]; do sleep 0.1; done", retry: { attempts: 2, delay: 1s } }\n`) });
    try {
      const svc = openApp({ repoDir: dir, backend: 'nomad', bus: 'nats' });
      const run = await svc.start('victim', {});
      const client = new NomadClient({ address: nomad.address });
      // Wait for the first attempt's allocation to run, then stop it from outside.
      let alloc: string | undefined;
      await until('a running allocation', async () => {
        for (const c of await client.dispatchedChildren('caravan-victim-v')) for (const a of await client.jobAllocations(c)) if (a.ClientStatus === 'running') alloc = a.ID;
        return alloc !== undefined;
      }, 60_000, 100);
      await fetch(`${nomad.address}/v1/allocation/${alloc}/stop`, { method: 'POST' });
      // The retry finds the gate open.
      await until('a second attempt', () => (run.engine.state.instances.get('v')?.attempt ?? 0) >= 2, 60_000, 100);
      await writeFile(gate, '');
      const { state } = await run.done;
      expect(state.status).toBe('succeeded');
      const v = state.instances.get('v')!;
      expect(v.attempts.map((a) => a.status)).toEqual(['failed', 'succeeded']);
      expect(v.attempts[0]!.error).toMatch(/^Nomad allocation [0-9a-f]{8} killed/);
      expect(await client.dispatchedChildren('caravan-victim-v')).toHaveLength(2);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    });
  }, 180_000);
});

describe.skipIf(nomadBin === undefined || !natsOk)('the node under a task goes down', () => {
  it('the attempt fails as lost with its node, with the scheduler\'s reason', async () => {
    const { writeFile } = await import('node:fs/promises');
    const nats = await NatsServer.start();
    const nomad = await NomadAgent.startServerAndClient(nomadBin!).catch(async (e: unknown) => {
      await nats.close();
      throw e;
    });
    const gate = await gatePath();
    const dir = await repoWith({ 'stranded.yaml': workflow('stranded', `  tasks:\n    - { name: s, run: "while [ ! -f ${gate} ]; do sleep 0.1; done" }\n`) });
    try {
      await withEnv({ NOMAD_ADDR: nomad.address, NATS_URL: nats.url }, async () => {
        const svc = openApp({ repoDir: dir, backend: 'nomad', bus: 'nats' });
        const run = await svc.start('stranded', {});
        const client = new NomadClient({ address: nomad.address });
        await until('a running allocation', async () => {
          for (const c of await client.dispatchedChildren('caravan-stranded-s')) for (const a of await client.jobAllocations(c)) if (a.ClientStatus === 'running') return true;
          return false;
        }, 60_000, 100);
        await nomad.killClient();
        const { state } = await run.done;
        expect(state.status).toBe('failed');
        expect(state.instances.get('s')!.attempts.map((a) => [a.status, a.error])).toEqual([['failed', expect.stringMatching(/^Nomad allocation [0-9a-f]{8} lost node: alloc is lost since its node is down$/)]]);
      });
    } finally {
      // The runner outlives its killed client agent (raw_exec); let it end.
      await writeFile(gate, '');
      await Promise.all([nomad.close(), nats.close()]);
      await rm(dir, { recursive: true, force: true });
    }
  }, 180_000);
});
