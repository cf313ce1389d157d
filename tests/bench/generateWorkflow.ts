/**
 * A synthetic workflow of `n` tasks: a chain through all tasks plus a fan-out edge from an
 * earlier task, about 2 edges per task, with realistic commands, timeouts and outputs.
 */
export function generateWorkflow(n: number, name = 'synthetic'): string {
  const lines = [
    '# yaml-language-server: $schema=../schemas/workflow.v1.json',
    'apiVersion: caravan/v1',
    'kind: Workflow',
    'metadata:',
    `  name: ${name}`,
    '  description: generated for benchmarks',
    'spec:',
    '  params:',
    '    dataset: { type: string, default: sales }',
    '  defaults:',
    '    timeout: 5m',
    '    retry: { attempts: 3, backoff: exponential, delay: 1s, maxDelay: 30s }',
    '  tasks:',
  ];
  for (let i = 0; i < n; i++) {
    lines.push(`    - name: t${i}`);
    const needs: string[] = [];
    if (i > 0) needs.push(`t${i - 1}`);
    if (i > 10) needs.push(`t${Math.floor(i / 2)}`);
    if (needs.length > 0) lines.push(`      needs: [${needs.join(', ')}]`);
    lines.push(`      run: ./bin/step --dataset \${{ params.dataset }} --part ${i}`);
    lines.push('      outputs: [rows]');
  }
  return lines.join('\n') + '\n';
}

/** Edges (upstream, downstream) of the generated workflow, for peers that need them. */
export function generatedEdges(n: number): Array<[number, number]> {
  const edges: Array<[number, number]> = [];
  for (let i = 1; i < n; i++) {
    edges.push([i - 1, i]);
    if (i > 10) edges.push([Math.floor(i / 2), i]);
  }
  return edges;
}
