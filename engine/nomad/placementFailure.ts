import type { NomadEvaluation } from './NomadClient.js';

/** Nomad's AllocationMetric: why the scheduler could not place a task group's allocation. */
export interface NomadAllocationMetric {
  NodesEvaluated?: number;
  NodesFiltered?: number;
  NodesExhausted?: number;
  NodesAvailable?: Record<string, number> | null;
  ClassFiltered?: Record<string, number> | null;
  ConstraintFiltered?: Record<string, number> | null;
  ClassExhausted?: Record<string, number> | null;
  DimensionExhausted?: Record<string, number> | null;
  QuotaExhausted?: string[] | null;
}

/** `cpu on 1, memory on 2`, or '' for none. */
function counts(m: Record<string, number> | null | undefined): string {
  return Object.entries(m ?? {}).map(([k, n]) => `${k} on ${n}`).join(', ');
}

/**
 * Why Nomad cannot place an evaluated job yet, in the words of `nomad job status`'s
 * "Placement Failure" (resources or constraints), or undefined when the evaluation placed
 * everything. Nomad keeps such a job blocked until a node has room, so this is a reason to
 * wait, not a failure.
 */
export function placementFailure(e: NomadEvaluation): string | undefined {
  const groups = Object.values(e.FailedTGAllocs ?? {}) as NomadAllocationMetric[];
  if (groups.length === 0) return undefined;
  const m = groups[0]!;
  const parts: string[] = [];
  const evaluated = m.NodesEvaluated ?? 0;
  const available = counts(m.NodesAvailable);
  if (evaluated === 0) parts.push(`no node is eligible${available !== '' ? ` (nodes per datacenter: ${available})` : ' in its datacenters'}`);
  else parts.push(`${evaluated} node${evaluated === 1 ? '' : 's'} evaluated`);
  if ((m.NodesFiltered ?? 0) > 0) {
    const constraints = counts(m.ConstraintFiltered);
    const classes = counts(m.ClassFiltered);
    parts.push(`${m.NodesFiltered} filtered${constraints !== '' ? ` by constraint ${constraints}` : classes !== '' ? ` by class ${classes}` : ''}`);
  }
  if ((m.NodesExhausted ?? 0) > 0) {
    const dimensions = counts(m.DimensionExhausted);
    parts.push(`${m.NodesExhausted} out of room${dimensions !== '' ? ` (${dimensions})` : ''}`);
  }
  if ((m.QuotaExhausted ?? []).length > 0) parts.push(`quota exhausted: ${m.QuotaExhausted!.join(', ')}`);
  return `Nomad cannot place it yet: ${parts.join('; ')}; it stays queued until a node has room`;
}
