import { join } from 'node:path';
import { EXIT, type ExitCode } from '../errors/CaravanError.js';
import { formatGenerations } from '../graph/formatGenerations.js';
import { packageRoot } from '../packageRoot.js';
import { formatReport } from '../spec/formatDiagnostics.js';
import { validateWorkflows } from '../spec/validateWorkflows.js';
import type { Io } from './Io.js';

/**
 * `caravan demo`: Caravan's main job on the embedded default, with nothing to set up. The
 * run engine is not built yet, so today the demo validates the bundled workflows and prints
 * the plan of each: its tasks grouped into generations that can run together.
 */
export async function demoCommand(io: Io): Promise<ExitCode> {
  const dir = join(packageRoot(), 'workflows');
  const report = await validateWorkflows([dir], io.cwd);
  io.stdout('Caravan demo: validating and planning the bundled workflows (embedded default, no servers).\n\n');
  for (const f of report.files) {
    if (f.workflow === undefined || f.dag === undefined) continue;
    const w = f.workflow;
    const tasks = w.spec.tasks.length;
    io.stdout(`${w.metadata.name}  (${f.file})\n`);
    if (w.metadata.description !== undefined) io.stdout(`  ${w.metadata.description}\n`);
    const pools = Object.entries(w.spec.pools ?? {}).map(([n, p]) => `${n} x${p.count}`);
    const extra = pools.length > 0 ? `, pools: ${pools.join(', ')}` : '';
    io.stdout(`  ${tasks} task${tasks === 1 ? '' : 's'} in ${f.dag.generations.length} generation${f.dag.generations.length === 1 ? '' : 's'}${extra}\n`);
    io.stdout(formatGenerations(w, f.dag, '    ') + '\n\n');
  }
  io.stdout(formatReport(report, 'text'));
  return report.errorCount > 0 ? EXIT.INVALID : EXIT.OK;
}
