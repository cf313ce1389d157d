import { describe, expect, it } from 'vitest';
import type { NomadEvaluation } from '../../engine/nomad/NomadClient.js';
import { placementFailure } from '../../engine/nomad/placementFailure.js';

// FailedTGAllocs as Nomad 1.6 sends them on an evaluation (structs.AllocMetric).
function evaluation(failed: Record<string, unknown> | null): NomadEvaluation {
  return { ID: 'e1', JobID: 'caravan-w-t/dispatch-1700000000-abcd1234', Status: 'complete', FailedTGAllocs: failed };
}

describe('placementFailure', () => {
  it('says nothing about an evaluation that placed everything', () => {
    expect(placementFailure(evaluation(null))).toBeUndefined();
    expect(placementFailure(evaluation({}))).toBeUndefined();
  });

  it('names the exhausted resource and on how many nodes', () => {
    expect(placementFailure(evaluation({ task: { NodesEvaluated: 1, NodesFiltered: 0, NodesExhausted: 1, DimensionExhausted: { cpu: 1 }, NodesAvailable: { dc1: 1 } } }))).toBe('Nomad cannot place it yet: 1 node evaluated; 1 out of room (cpu on 1); it stays queued until a node has room');
  });

  it('names the constraints that filtered nodes out', () => {
    expect(placementFailure(evaluation({ task: { NodesEvaluated: 3, NodesFiltered: 3, ConstraintFiltered: { '${attr.kernel.name} = windows': 3 } } }))).toBe('Nomad cannot place it yet: 3 nodes evaluated; 3 filtered by constraint ${attr.kernel.name} = windows on 3; it stays queued until a node has room');
  });

  it('says when no node is eligible at all', () => {
    expect(placementFailure(evaluation({ task: { NodesEvaluated: 0, NodesAvailable: { dc1: 0 } } }))).toBe('Nomad cannot place it yet: no node is eligible (nodes per datacenter: dc1 on 0); it stays queued until a node has room');
  });
});
