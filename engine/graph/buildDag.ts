import { DirectedGraph } from 'graphology';
import { hasCycle, topologicalGenerations } from 'graphology-dag';

export interface DagNode {
  name: string;
  needs?: readonly string[];
}

export interface TaskDag {
  /** Edges run from a task to the tasks that need it (upstream to downstream). */
  readonly graph: DirectedGraph;
  /** Tasks grouped by depth: every task's needs are in earlier generations. Empty if cyclic. */
  readonly generations: string[][];
  /** Each cycle as a closed path in run order, e.g. ['a', 'b', 'c', 'a']. */
  readonly cycles: string[][];
  /** True when `upstream` must finish before `task` can start. */
  isUpstream(upstream: string, task: string): boolean;
}

const MAX_CYCLES_REPORTED = 20;

/**
 * Builds the task DAG with graphology. Unknown `needs` are left out (the validator reports
 * them); the cycle check runs once on the finished graph, never once per edge.
 */
export function buildDag(nodes: readonly DagNode[]): TaskDag {
  const graph = new DirectedGraph();
  for (const n of nodes) graph.mergeNode(n.name);
  for (const n of nodes) {
    for (const need of n.needs ?? []) {
      // A self-need is reported by the validator; as an edge it would only repeat that as a cycle.
      if (need !== n.name && graph.hasNode(need)) graph.mergeEdge(need, n.name);
    }
  }
  const cyclic = hasCycle(graph);
  const cycles = cyclic ? findCycles(graph) : [];
  const generations = cyclic ? [] : topologicalGenerations(graph);
  const ancestors = new Map<string, Set<string>>();
  return {
    graph,
    generations,
    cycles,
    isUpstream(upstream, task) {
      if (!graph.hasNode(task) || !graph.hasNode(upstream)) return false;
      let set = ancestors.get(task);
      if (set === undefined) {
        set = ancestorsOf(graph, task);
        ancestors.set(task, set);
      }
      return set.has(upstream);
    },
  };
}

function ancestorsOf(graph: DirectedGraph, task: string): Set<string> {
  const seen = new Set<string>();
  const stack = [task];
  while (stack.length > 0) {
    const n = stack.pop() as string;
    graph.forEachInNeighbor(n, (p) => {
      if (!seen.has(p)) {
        seen.add(p);
        stack.push(p);
      }
    });
  }
  return seen;
}

/** Iterative DFS (no recursion: DAGs of 100,000 tasks must not blow the stack). */
function findCycles(graph: DirectedGraph): string[][] {
  const WHITE = 0, GRAY = 1, BLACK = 2;
  const color = new Map<string, number>();
  const cycles: string[][] = [];
  const reported = new Set<string>();
  for (const start of graph.nodes()) {
    if ((color.get(start) ?? WHITE) !== WHITE) continue;
    const path: string[] = [];
    const iters: Iterator<string>[] = [];
    color.set(start, GRAY);
    path.push(start);
    iters.push(graph.outNeighbors(start)[Symbol.iterator]());
    while (iters.length > 0) {
      const step = iters[iters.length - 1]!.next();
      if (step.done === true) {
        color.set(path.pop() as string, BLACK);
        iters.pop();
        continue;
      }
      const next = step.value;
      const c = color.get(next) ?? WHITE;
      if (c === WHITE) {
        color.set(next, GRAY);
        path.push(next);
        iters.push(graph.outNeighbors(next)[Symbol.iterator]());
      } else if (c === GRAY && cycles.length < MAX_CYCLES_REPORTED) {
        const cycle = [...path.slice(path.indexOf(next)), next];
        const key = [...new Set(cycle)].sort().join('\u0000');
        if (!reported.has(key)) {
          reported.add(key);
          cycles.push(cycle);
        }
      }
    }
  }
  return cycles;
}
