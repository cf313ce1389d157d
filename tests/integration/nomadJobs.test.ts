import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileWorkflow } from '../../engine/compile/compileWorkflow.js';
import type { CompiledJob, NomadJob } from '../../engine/compile/NomadJob.js';
import { allocationFailure } from '../../engine/nomad/allocationFailure.js';
import { NomadEventStream, type NomadEvent } from '../../engine/nomad/NomadEventStream.js';
import { NomadApiError, NomadClient, type NomadAllocation } from '../../engine/nomad/NomadClient.js';
import { validateWorkflows } from '../../engine/spec/validateWorkflows.js';
import { NomadAgent, requireNomad } from '../harness/nomadAgent.js';
import { until } from '../harness/until.js';
import { gatePath } from '../harness/gatePath.js';

const bin = requireNomad();

describe.skipIf(bin === undefined)('compiled jobs on a live `nomad agent -dev`', () => {
  let agent: NomadAgent;
  let nomad: NomadClient;
  let jobs: CompiledJob[];
  beforeAll(async () => {
    agent = await NomadAgent.start(bin!);
    nomad = new NomadClient({ address: agent.address });
    const report = await validateWorkflows(['workflows'], fileURLToPath(new URL('../../', import.meta.url)));
    jobs = report.files.flatMap((f) => compileWorkflow(f.workflow!, { gitCommit: '0123456789abcdef0123456789abcdef01234567' }));
  }, 120_000);
  afterAll(async () => {
    await agent?.close();
  });

  it('every example job passes /v1/validate/job', async () => {
    for (const j of jobs) {
      const r = await nomad.validateJob(j.job);
      expect([j.id, r.ValidationErrors ?? [], r.Error]).toEqual([j.id, [], '']);
    }
  });

  it('registers and plans cleanly, with its meta readable back', async () => {
    for (const j of jobs) {
      const reg = await nomad.registerJob(j.job);
      expect(reg.EvalID === '' || /^[0-9a-f-]{36}$/.test(reg.EvalID)).toBe(true);
      const plan = await nomad.planJob(j.job);
      expect(plan.Diff?.Type).toBe('None');
      const back = await nomad.readJob(j.id);
      expect(back.Meta).toEqual(j.job.Meta);
      expect(back.Type).toBe(j.job.Type);
      if (j.kind === 'task') expect(back.ParameterizedJob?.MetaRequired).toEqual(['caravan_run', 'caravan_attempt']);
    }
  });

  it('check-and-set registration refuses a stale index', async () => {
    const j = jobs[0]!;
    const current = await nomad.readJob(j.id);
    const err = await nomad.registerJob(j.job, current.JobModifyIndex - 1).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NomadApiError);
    expect((err as NomadApiError).status).toBeGreaterThanOrEqual(400);
    await nomad.registerJob(j.job, current.JobModifyIndex);
  });
});

/** A parameterized batch job that runs `sh -c <cmd>` with raw_exec (what a dispatched task looks like to Nomad). */
function shellJob(id: string, cmd: string): NomadJob {
  return {
    ID: id, Name: id, Type: 'batch', Datacenters: ['*'],
    ParameterizedJob: { Payload: 'optional', MetaOptional: ['n'] },
    TaskGroups: [{ Name: 'g', Count: 1, RestartPolicy: { Attempts: 0, Mode: 'fail' }, ReschedulePolicy: { Attempts: 0, Unlimited: false }, Tasks: [{ Name: 't', Driver: 'raw_exec', Config: { command: '/bin/sh', args: ['-c', cmd] }, Resources: { CPU: 50, MemoryMB: 32 } }] }],
  } as unknown as NomadJob;
}

/** A TCP relay to Nomad whose open connections the test can cut (a network fault, not a fake server). */
async function relay(target: number): Promise<{ port: number; requests: string[]; cut: () => void; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const requests: string[] = [];
  const server = createServer((client) => {
    const upstream = connect(target, '127.0.0.1');
    sockets.add(client).add(upstream);
    client.once('data', (c: Buffer) => requests.push(c.toString('latin1').split('\r\n')[0]!));
    client.pipe(upstream).pipe(client);
    const end = (): void => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream); };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    cut: () => { for (const s of sockets) s.destroy(); },
    close: () => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }),
  };
}

describe.skipIf(bin === undefined)('watching Nomad: event stream, blocking queries, evaluations and versions', () => {
  let agent: NomadAgent;
  let nomad: NomadClient;
  beforeAll(async () => {
    agent = await NomadAgent.start(bin!);
    nomad = new NomadClient({ address: agent.address });
    await nomad.registerJob(shellJob('fails', 'exit 3'));
  }, 120_000);
  afterAll(async () => {
    await agent?.close();
  });

  it('a blocking query on allocations answers when they change, with a higher index', async () => {
    const { writeFile } = await import('node:fs/promises');
    const gate = await gatePath('open');
    await nomad.registerJob(shellJob('gated', `while [ ! -f ${gate} ]; do sleep 0.1; done`));
    const child = (await nomad.dispatchJob('gated', new Uint8Array(), {}, 'blocking-1')).DispatchedJobID;
    let seen = await nomad.watchJobAllocations(child, 1, 5);
    while (!seen.value.some((a) => a.ClientStatus === 'running')) seen = await nomad.watchJobAllocations(child, seen.index, 30);
    // Nothing changes until the gate opens: the query blocks, then answers with the change.
    const blocked = nomad.watchJobAllocations(child, seen.index, 120);
    await writeFile(gate, '');
    let next = await blocked;
    while (!next.value.some((a) => a.ClientStatus === 'complete')) next = await nomad.watchJobAllocations(child, next.index, 30);
    expect(next.index).toBeGreaterThan(seen.index);
    expect(next.value.map((a) => [a.JobID, a.ClientStatus])).toEqual([[child, 'complete']]);
  }, 90_000);

  it('evaluations and versions of a job can be read', async () => {
    await nomad.registerJob(shellJob('versioned', 'exit 0'));
    // A parameterized job is only evaluated when dispatched.
    const d = await nomad.dispatchJob('versioned', new Uint8Array(), {}, 'eval-1');
    const ev = await nomad.evaluation(d.EvalID);
    expect([ev.JobID, ev.TriggeredBy]).toEqual([d.DispatchedJobID, 'job-register']);
    expect((await nomad.jobEvaluations(d.DispatchedJobID)).map((e) => e.ID)).toContain(d.EvalID);
    await nomad.registerJob(shellJob('versioned', 'exit 0 # changed'));
    const versions = await nomad.jobVersions('versioned');
    expect(versions.map((v) => v.Version).sort()).toEqual([0, 1]);
    await expect(nomad.evaluation('00000000-0000-0000-0000-000000000000')).rejects.toMatchObject({ code: 'NOMAD_API', status: 404 });
  });

  it('the event stream delivers allocation endings, and resumes after a cut connection from the next index', async () => {
    const r = await relay(agent.httpPort);
    const seen: NomadEvent[] = [];
    const connects: boolean[] = [];
    const viaRelay = new NomadClient({ address: `http://127.0.0.1:${r.port}` });
    const stream = new NomadEventStream(viaRelay, { topics: ['Allocation:*'], onEvent: (e) => seen.push(e), onConnected: (again) => connects.push(again) });
    try {
      await until('the stream to connect', () => connects.length > 0, 60_000);
      const ended = (job: string, status: string): NomadEvent | undefined => seen.find((e) => (e.Payload['Allocation'] as NomadAllocation).JobID === job && (e.Payload['Allocation'] as NomadAllocation).ClientStatus === status);
      const one = (await nomad.dispatchJob('fails', new Uint8Array(), {}, 'stream-1')).DispatchedJobID;
      await until('the first child to fail', () => ended(one, 'failed') !== undefined, 60_000);
      const failed = ended(one, 'failed')!;
      expect(allocationFailure(failed.Payload['Allocation'] as NomadAllocation)?.message).toMatch(/failed: Exit Code: 3/);
      const before = stream.index;
      r.cut();
      const two = (await nomad.dispatchJob('fails', new Uint8Array(), {}, 'stream-2')).DispatchedJobID;
      await until('the second child to fail, seen after the reconnect', () => ended(two, 'failed') !== undefined, 60_000);
      expect(connects).toEqual([false, true]);
      const streamRequests = r.requests.filter((q) => q.startsWith('GET /v1/event/stream'));
      expect(streamRequests[1]).toContain(`index=${before + 1}`);
      // Every batch once: indexes never go back, and no allocation update is delivered twice.
      const keys = seen.map((e) => `${e.Index}:${e.Key}:${e.Type}`);
      expect(new Set(keys).size).toBe(keys.length);
      const indexes = seen.map((e) => e.Index);
      expect(indexes).toEqual([...indexes].sort((a, b) => a - b));
    } finally {
      await stream.close();
      await r.close();
    }
  }, 90_000);
});

describe.skipIf(bin === undefined)('a task over its memory limit on a live Nomad', () => {
  it('is reported as OOM killed, or as a SIGKILL exit where Nomad cannot see the OOM', async () => {
    // The exec driver builds a chroot per task; the default one copies /usr (a minute here).
    const chroot = ['/usr/bin/dash:/bin/sh', '/usr/bin/head:/bin/head', '/usr/bin/tail:/bin/tail', '/usr/lib/x86_64-linux-gnu/libc.so.6:/lib/x86_64-linux-gnu/libc.so.6', '/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2:/lib64/ld-linux-x86-64.so.2', '/etc/ld.so.cache:/etc/ld.so.cache', '/etc/passwd:/etc/passwd', '/etc/group:/etc/group'];
    const agent = await NomadAgent.start(bin!, undefined, `client {\n  chroot_env {\n${chroot.map((m) => `    "${m.split(':')[0]!}" = "${m.split(':')[1]!}"\n`).join('')}  }\n}\n`);
    try {
      const nomad = new NomadClient({ address: agent.address });
      const node = (await (await fetch(`${agent.address}/v1/nodes`)).json()) as Array<{ ID: string }>;
      const drivers = ((await (await fetch(`${agent.address}/v1/node/${node[0]!.ID}`)).json()) as { Drivers: Record<string, { Healthy: boolean; HealthDescription: string }> }).Drivers;
      // raw_exec has no memory limit; the exec driver (root, cgroups) enforces MemoryMB.
      expect(drivers['exec'], 'the exec driver must be healthy (root and cgroups) for this test').toMatchObject({ Healthy: true });
      const job = shellJob('hog', '/bin/head -c 400000000 /dev/zero | /bin/tail > /dev/null') as unknown as { TaskGroups: Array<{ Tasks: Array<{ Driver: string; Resources: { MemoryMB: number } }> }> };
      job.TaskGroups[0]!.Tasks[0]!.Driver = 'exec';
      job.TaskGroups[0]!.Tasks[0]!.Resources.MemoryMB = 20;
      await nomad.registerJob(job as unknown as NomadJob);
      const child = (await nomad.dispatchJob('hog', new Uint8Array(), {}, 'hog-1')).DispatchedJobID;
      let seen = await nomad.watchJobAllocations(child, 1, 5);
      while (!seen.value.some((a) => a.ClientStatus === 'failed' || a.ClientStatus === 'complete')) seen = await nomad.watchJobAllocations(child, seen.index, 30);
      const f = allocationFailure(seen.value[0]!);
      expect(f?.message).toMatch(/ OOM killed: | failed: Exit Code: 137 \(SIGKILL: out of memory/);
    } finally {
      await agent.close();
    }
  }, 120_000);
});
