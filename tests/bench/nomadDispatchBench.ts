import type { NomadJob } from '../../engine/compile/NomadJob.js';
import { NomadClient } from '../../engine/nomad/NomadClient.js';
import { NomadAgent, requireNomad } from '../harness/nomadAgent.js';
import { percentile, round } from './stats.js';

export interface DispatchResult {
  suite: 'nomad-dispatch';
  dispatches: number;
  dispatch_per_s: number;
  to_running_p50_ms: number;
  to_running_p99_ms: number;
}

/**
 * Nomad's own figures on the dev agent: how fast dispatches are accepted (4 in flight), and
 * the time from a dispatch call to its allocation running (polled every 20 ms).
 */
export async function nomadDispatchBench(n = 60): Promise<DispatchResult> {
  const bin = requireNomad();
  if (bin === undefined) throw new Error('nomad is required (bash scripts/build-nomad.sh)');
  const agent = await NomadAgent.start(bin);
  try {
    const client = new NomadClient({ address: agent.address });
    const job: NomadJob = {
      ID: 'caravan-bench-dispatch', Name: 'caravan-bench-dispatch', Type: 'batch', Namespace: 'default', Region: 'global', Datacenters: ['*'], Priority: 50, Meta: {},
      ParameterizedJob: { Payload: 'optional', MetaRequired: [], MetaOptional: [] },
      TaskGroups: [{ Name: 'task', Count: 1, RestartPolicy: { Attempts: 0, Mode: 'fail' }, ReschedulePolicy: { Attempts: 0, Unlimited: false }, Tasks: [{ Name: 'agent', Driver: 'raw_exec', Config: { command: '/bin/sleep', args: ['2'] }, Env: {}, Resources: { CPU: 20, MemoryMB: 16 }, KillTimeout: 1_000_000_000 }] }],
    };
    await client.registerJob(job);
    const started = new Map<string, number>();
    const t0 = performance.now();
    let next = 0;
    await Promise.all(Array.from({ length: 4 }, async () => {
      while (next < n) {
        const i = next++;
        const at = performance.now();
        const r = await client.dispatchJob(job.ID, new Uint8Array(), {}, `bench-${i}`);
        started.set(r.DispatchedJobID, at);
      }
    }));
    const dispatchS = (performance.now() - t0) / 1000;
    const running = new Map<string, number>();
    const deadline = Date.now() + 120_000;
    while (running.size < n && Date.now() < deadline) {
      for (const id of started.keys()) {
        if (running.has(id)) continue;
        const allocs = await client.jobAllocations(id);
        if (allocs.some((a) => a.ClientStatus === 'running' || a.ClientStatus === 'complete')) running.set(id, performance.now());
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    const lat = [...running].map(([id, at]) => at - started.get(id)!);
    return { suite: 'nomad-dispatch', dispatches: n, dispatch_per_s: round(n / dispatchS, 1), to_running_p50_ms: Math.round(percentile(lat, 50)), to_running_p99_ms: Math.round(percentile(lat, 99)) };
  } finally {
    await agent.close();
  }
}
