import { describe, expect, it } from 'vitest';
import type { NomadAllocation, NomadTaskEvent } from '../../engine/nomad/NomadClient.js';
import { allocationFailure } from '../../engine/nomad/allocationFailure.js';

// Shapes as Nomad 1.6 sends them (GET /v1/allocation/:id and the event stream's payload);
// the event types and messages are Nomad's own constants (nomad/structs TaskEvent types).
function alloc(ClientStatus: string, events: NomadTaskEvent[], extra: Partial<NomadAllocation> = {}): NomadAllocation {
  return { ID: '3f2a9c1e-0000-4000-8000-000000000001', JobID: 'caravan-w-t/dispatch-1700000000-abcd1234', NodeID: 'b1e4c3d2-0000-4000-8000-000000000002', ClientStatus, TaskStates: { agent: { State: 'dead', Failed: ClientStatus === 'failed', Events: events } }, ...extra };
}
const ev = (Type: string, DisplayMessage: string, more: Partial<NomadTaskEvent> = {}): NomadTaskEvent => ({ Type, DisplayMessage, ...more });
const received = ev('Received', 'Task received by client');
const started = ev('Started', 'Task started by client');

describe('allocationFailure', () => {
  it('says nothing while the allocation runs, or when it ended cleanly', () => {
    expect(allocationFailure(alloc('pending', [received]))).toBeUndefined();
    expect(allocationFailure(alloc('running', [received, started]))).toBeUndefined();
    expect(allocationFailure(alloc('complete', [received, started, ev('Terminated', 'Exit Code: 0', { ExitCode: 0 })]))).toBeUndefined();
  });

  it('a driver that cannot start the runner is a driver error, with Nomad\'s message', () => {
    const f = allocationFailure(alloc('failed', [received, ev('Driver Failure', 'failed to launch command with executor: rpc error: code = Unknown desc = fork/exec /nonexistent/caravan: no such file or directory'), ev('Not Restarting', 'Error was unrecoverable')]));
    expect(f).toEqual({ kind: 'driver error', message: 'Nomad allocation 3f2a9c1e driver error: failed to launch command with executor: rpc error: code = Unknown desc = fork/exec /nonexistent/caravan: no such file or directory' });
  });

  it('a task that fails before its driver runs (setup, validation, artifacts) failed to start', () => {
    expect(allocationFailure(alloc('failed', [received, ev('Setup Failure', 'failed to setup alloc: pre-run hook "alloc_dir" failed')]))?.message).toBe('Nomad allocation 3f2a9c1e failed to start: Setup Failure: failed to setup alloc: pre-run hook "alloc_dir" failed');
    expect(allocationFailure(alloc('failed', [received, ev('Failed Artifact Download', 'bad source')]))?.kind).toBe('failed to start');
  });

  it('an exit flagged oom_killed is OOM killed, even though it is a Terminated event', () => {
    const f = allocationFailure(alloc('failed', [received, started, ev('Terminated', 'Exit Code: 137, Signal: 9', { ExitCode: 137, Signal: 9, Details: { exit_code: '137', signal: '9', oom_killed: 'true' } }), ev('Not Restarting', 'Policy allows no restarts')]));
    expect(f).toEqual({ kind: 'OOM killed', message: 'Nomad allocation 3f2a9c1e OOM killed: Exit Code: 137, Signal: 9' });
    // The same exit without the flag is an ordinary failure.
    expect(allocationFailure(alloc('failed', [received, started, ev('Terminated', 'Exit Code: 137', { ExitCode: 137, Details: { oom_killed: 'false' } })]))).toEqual({ kind: 'failed', message: 'Nomad allocation 3f2a9c1e failed: Exit Code: 137 (SIGKILL: out of memory, or killed from outside)' });
    expect(allocationFailure(alloc('failed', [received, started, ev('Terminated', 'Exit Code: 2', { ExitCode: 2 })]))?.message).toBe('Nomad allocation 3f2a9c1e failed: Exit Code: 2');
  });

  it('an allocation on a node that went down is lost, with the scheduler\'s reason', () => {
    const f = allocationFailure(alloc('lost', [received, started], { DesiredStatus: 'stop', DesiredDescription: 'alloc is lost since its node is down' }));
    expect(f).toEqual({ kind: 'lost node', message: 'Nomad allocation 3f2a9c1e lost node: alloc is lost since its node is down' });
  });

  it('a stopped allocation ends complete but with a Killed event: killed', () => {
    const f = allocationFailure(alloc('complete', [received, started, ev('Killing', 'Sent interrupt. Waiting 5s before force killing'), ev('Terminated', 'Exit Code: 130, Signal: 2'), ev('Killed', 'Task successfully killed')], { DesiredStatus: 'stop', DesiredDescription: 'alloc was stopped' }));
    expect(f).toEqual({ kind: 'killed', message: 'Nomad allocation 3f2a9c1e killed: Task successfully killed' });
  });

  it('an allocation with no task state at all still gets a reason', () => {
    expect(allocationFailure({ ID: 'abcdef0123', JobID: 'j', ClientStatus: 'failed', ClientDescription: 'Failed tasks', TaskStates: null })).toEqual({ kind: 'failed', message: 'Nomad allocation abcdef01 failed: Failed tasks' });
  });

  it('a runner that exited non-zero on its own failed by the task (retry.on exit); a SIGKILL or no exit code is not the task\'s', () => {
    const exit = alloc('failed', [received, started, ev('Terminated', 'Exit Code: 3', { ExitCode: 3, Signal: 0 })]);
    expect(allocationFailure(exit)).toEqual({ kind: 'failed', message: 'Nomad allocation 3f2a9c1e failed: Exit Code: 3', byTask: true });
    const killed = alloc('failed', [received, started, ev('Terminated', 'Exit Code: 137', { ExitCode: 137, Details: { oom_killed: 'false' } })]);
    expect(allocationFailure(killed)?.byTask).toBeUndefined();
    const signalled = alloc('failed', [received, started, ev('Terminated', 'Exit Code: 0, Signal: 15', { ExitCode: 0, Signal: 15 })]);
    expect(allocationFailure(signalled)?.byTask).toBeUndefined();
  });
});
