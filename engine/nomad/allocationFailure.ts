import type { NomadAllocation, NomadTaskEvent } from './NomadClient.js';

export type AllocationFailureKind = 'failed to start' | 'driver error' | 'OOM killed' | 'lost node' | 'killed' | 'failed';

export interface AllocationFailure {
  kind: AllocationFailureKind;
  /** One line for the attempt's error: the kind, then Nomad's own words. */
  message: string;
  /**
   * The task's own process ended with a non-zero code (not a SIGKILL): its failure, not the
   * infrastructure's, for `retry.on`. Everything else here is the infrastructure's.
   */
  byTask?: boolean;
}

const START_FAILURES = new Set(['Setup Failure', 'Failed Validation', 'Failed Artifact Download', 'Template failure']);

/**
 * Why an ended allocation of a dispatched attempt failed, in the terms an operator looks
 * for, or undefined when it is still running or ended cleanly. These are the failures the
 * runner inside cannot always report itself (it never started, or it was killed with its
 * process group or its node). When the runner did report, both reports carry the same
 * event id and the run applies one.
 */
export function allocationFailure(a: NomadAllocation): AllocationFailure | undefined {
  const ended = a.ClientStatus === 'failed' || a.ClientStatus === 'lost' || a.ClientStatus === 'complete';
  if (!ended) return undefined;
  const events: NomadTaskEvent[] = Object.values(a.TaskStates ?? {}).flatMap((t) => t.Events ?? []);
  const last = (types: (t: string) => boolean): NomadTaskEvent | undefined => [...events].reverse().find((e) => types(e.Type));
  const id = a.ID.slice(0, 8);
  const say = (kind: AllocationFailureKind, detail: string | undefined): AllocationFailure => ({ kind, message: `Nomad allocation ${id} ${kind}${detail !== undefined && detail !== '' ? `: ${detail}` : ''}` });

  if (a.ClientStatus === 'lost') return say('lost node', a.DesiredDescription ?? a.ClientDescription ?? `node ${a.NodeID?.slice(0, 8) ?? '?'} is down`);
  const oom = last((t) => t === 'Terminated' || t === 'OOM Killed');
  if (oom !== undefined && (oom.Type === 'OOM Killed' || oom.Details?.['oom_killed'] === 'true')) return say('OOM killed', oom.DisplayMessage.trim());
  const driver = last((t) => t === 'Driver Failure');
  if (driver !== undefined) return say('driver error', driver.DisplayMessage.trim());
  const setup = last((t) => START_FAILURES.has(t));
  if (setup !== undefined) return say('failed to start', `${setup.Type}: ${setup.DisplayMessage.trim()}`);
  // A stopped allocation ends "complete" with a Killed event: the runner was killed and may
  // not have reported.
  const killed = last((t) => t === 'Killed');
  if (killed !== undefined) return say('killed', killed.DisplayMessage.trim() || a.DesiredDescription);
  if (a.ClientStatus === 'failed') {
    const term = last((t) => t === 'Terminated');
    // Under cgroups v1 in a container Nomad may not see the OOM notification (oom_killed
    // stays "false"); a SIGKILL exit is then all there is, and the memory limit the usual cause.
    const sigkill = term !== undefined && (term.ExitCode === 137 || term.Signal === 9);
    const f = say('failed', term === undefined ? a.ClientDescription : `${term.DisplayMessage.trim()}${sigkill ? ' (SIGKILL: out of memory, or killed from outside)' : ''}`);
    return term !== undefined && !sigkill && (term.Signal ?? 0) === 0 && (term.ExitCode ?? 0) !== 0 ? { ...f, byTask: true } : f;
  }
  return undefined;
}
