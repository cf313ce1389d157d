import { compileWorkflow } from '../../engine/compile/compileWorkflow.js';
import { renderJobs } from '../../engine/compile/renderJobs.js';
import { validateText } from '../../engine/spec/validateWorkflows.js';
import { generateWorkflow } from './generateWorkflow.js';
import { median, round, timeMs } from './stats.js';

export interface CompileResult {
  tasks: number;
  compile_ms: number;
  render_ms: number;
}

/**
 * Median time to compile a validated workflow into Nomad jobs (one per task) and to render
 * those jobs to file contents. Writing to disk is left out: it measures the disk, not Caravan.
 */
export function compileBench(sizes: number[] = [1_000, 10_000], runs = 9): { suite: 'compile'; results: CompileResult[] } {
  const results: CompileResult[] = [];
  for (const n of sizes) {
    const wf = validateText('bench.yaml', generateWorkflow(n)).workflow;
    if (wf === undefined) throw new Error('generated workflow is invalid');
    renderJobs(compileWorkflow(wf));
    const compile: number[] = [];
    const render: number[] = [];
    for (let i = 0; i < runs; i++) {
      let jobs: ReturnType<typeof compileWorkflow> = [];
      compile.push(timeMs(() => { jobs = compileWorkflow(wf); }));
      let files = 0;
      render.push(timeMs(() => { files = renderJobs(jobs).size; }));
      if (jobs.length !== n || files !== n + 1) throw new Error(`expected ${n} jobs, got ${jobs.length} jobs and ${files} files`);
    }
    results.push({ tasks: n, compile_ms: round(median(compile)), render_ms: round(median(render)) });
  }
  return { suite: 'compile', results };
}
