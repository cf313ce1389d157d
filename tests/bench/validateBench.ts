import { buildDag } from '../../engine/graph/buildDag.js';
import { checkSemantics, mainTaskNodes } from '../../engine/spec/checkSemantics.js';
import { parseYamlSource } from '../../engine/spec/parseYamlSource.js';
import { validateSchema } from '../../engine/spec/validateSchema.js';
import { validateText } from '../../engine/spec/validateWorkflows.js';
import { generateWorkflow } from './generateWorkflow.js';
import { median, round, timeMs } from './stats.js';

export interface ValidateResult {
  tasks: number;
  parse_ms: number;
  schema_ms: number;
  semantic_ms: number;
  graph_ms: number;
  total_ms: number;
  /** The same file with one typo at the end: the cost of finding line and column. */
  error_path_ms: number;
}

/**
 * Median time of each validation phase on generated workflows. The total is measured end to
 * end (validateText), not summed, so it includes the glue between phases.
 */
export function validateBench(sizes: number[] = [1_000, 10_000], runs = 9): { suite: 'validate'; results: ValidateResult[] } {
  const results: ValidateResult[] = [];
  for (const n of sizes) {
    const text = generateWorkflow(n);
    const broken = text.replace(/timeout: 5m/, 'tiemout: 5m');
    const t = { parse: [] as number[], schema: [] as number[], semantic: [] as number[], graph: [] as number[], total: [] as number[], error: [] as number[] };
    // One warm-up pass: ajv compiles the schema and V8 optimises on first use.
    validateText('bench.yaml', text);
    for (let i = 0; i < runs; i++) {
      let doc: Record<string, unknown> | undefined;
      t.parse.push(timeMs(() => { doc = parseYamlSource(text).value; }));
      if (doc === undefined) throw new Error('generated workflow did not parse');
      const d = doc;
      t.schema.push(timeMs(() => { validateSchema(d); }));
      let dag: ReturnType<typeof buildDag> | undefined;
      t.graph.push(timeMs(() => { dag = buildDag(mainTaskNodes(d)); }));
      t.semantic.push(timeMs(() => { checkSemantics(d, dag); }));
      const counts: number[] = [];
      t.total.push(timeMs(() => { counts.push(validateText('bench.yaml', text).diagnostics.length); }));
      t.error.push(timeMs(() => { counts.push(validateText('bench.yaml', broken).diagnostics.length); }));
      if (counts[0] !== 0 || counts[1] !== 1) throw new Error(`expected 0 and 1 diagnostics, got ${counts.join(' and ')}`);
    }
    results.push({
      tasks: n,
      parse_ms: round(median(t.parse)),
      schema_ms: round(median(t.schema)),
      semantic_ms: round(median(t.semantic)),
      graph_ms: round(median(t.graph)),
      total_ms: round(median(t.total)),
      error_path_ms: round(median(t.error)),
    });
  }
  return { suite: 'validate', results };
}
