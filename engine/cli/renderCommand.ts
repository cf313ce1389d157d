import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CONTROLLER_JOB_PATH, controllerJob, readControllerDeploy } from '../compile/controllerJob.js';
import type { NomadJob } from '../compile/NomadJob.js';
import { textLine } from '../spec/formatDiagnostics.js';
import { readBoundedFile } from '../spec/readBoundedFile.js';
import { CompileError } from '../compile/CompileError.js';
import type { CompileOptions } from '../compile/CompileOptions.js';
import { compileWorkflow } from '../compile/compileWorkflow.js';
import type { CompiledJob } from '../compile/NomadJob.js';
import { checkRendered, renderJobs, writeRendered } from '../compile/renderJobs.js';
import { EXIT, type ExitCode } from './exitCodes.js';
import { formatReport } from '../spec/formatDiagnostics.js';
import { validateWorkflows } from '../spec/validateWorkflows.js';
import type { Io } from './Io.js';

export interface RenderOptions {
  out: string;
  check: boolean;
  compile: Partial<CompileOptions>;
}

/**
 * `caravan render [paths...] [--out nomad-jobs] [--check]`. Invalid workflows (exit 2) are
 * never rendered; --check writes nothing and exits 1 when the directory has drifted.
 */
export async function renderCommand(paths: string[], options: RenderOptions, io: Io): Promise<ExitCode> {
  const report = await validateWorkflows(paths.length > 0 ? paths : ['workflows'], io.cwd);
  if (report.errorCount > 0) {
    io.stdout(formatReport(report, 'text'));
    io.stderr('caravan: nothing rendered: fix the workflows first\n');
    return EXIT.INVALID;
  }
  const jobs: CompiledJob[] = [];
  const problems: string[] = [];
  for (const f of report.files) {
    try {
      jobs.push(...compileWorkflow(f.workflow!, options.compile));
    } catch (e) {
      if (!(e instanceof CompileError)) throw e;
      problems.push(...e.problems.map((p) => `${f.file}: error COMPILE: ${p.message}`));
    }
  }
  if (problems.length > 0) {
    io.stdout(problems.join('\n') + '\n');
    return EXIT.INVALID;
  }
  // The controller's own job, when the repository has its settings (this one does).
  const settings = join(io.cwd, 'deploy', 'controller.yaml');
  const extra: Array<{ path: string; job: NomadJob }> = [];
  if (existsSync(settings)) {
    const read = await readBoundedFile(settings, 64 * 1024, io.cwd);
    const r = read.ok ? readControllerDeploy('deploy/controller.yaml', read.bytes) : { ok: false as const, diagnostics: [{ file: 'deploy/controller.yaml', line: 1, col: 1, severity: 'error' as const, code: 'FILE_REFUSED' as const, message: read.refusal.message, path: '' }] };
    if (!r.ok) {
      io.stdout(r.diagnostics.map((d) => textLine(d)).join(''));
      io.stderr('caravan: nothing rendered: fix deploy/controller.yaml first\n');
      return EXIT.INVALID;
    }
    extra.push({ path: CONTROLLER_JOB_PATH, job: controllerJob(r.deploy) });
  }
  const files = renderJobs(jobs, extra);
  const outDir = resolve(io.cwd, options.out);
  if (options.check) {
    const drift = await checkRendered(outDir, files);
    const lines = [
      ...drift.stale.map((p) => `stale:   ${options.out}/${p}`),
      ...drift.missing.map((p) => `missing: ${options.out}/${p}`),
      ...drift.extra.map((p) => `extra:   ${options.out}/${p}`),
    ];
    if (lines.length === 0) {
      io.stdout(`${options.out}/ is up to date (${jobs.length} jobs from ${report.files.length} workflows${extra.length > 0 ? ', and the controller\'s' : ''})\n`);
      return EXIT.OK;
    }
    io.stdout(lines.join('\n') + `\n${options.out}/ is out of date: run \`caravan render\` and commit the result\n`);
    return EXIT.FAILED;
  }
  const drift = await writeRendered(outDir, files);
  // The counts are of job files (`<workflow>/<job-id>.json`); the README render keeps beside
  // them is no job, and is named on its own when it was written.
  const isJob = (p: string): boolean => p.endsWith('.json');
  const changed = [...drift.missing, ...drift.stale];
  const written = changed.filter(isJob).length;
  const unchanged = [...files.keys()].filter(isJob).length - written;
  const readme = changed.filter((p) => !isJob(p)).map((p) => `; ${p} written`).join('');
  io.stdout(`${options.out}/: ${written} written, ${drift.extra.filter(isJob).length} removed, ${unchanged} unchanged (${jobs.length} jobs from ${report.files.length} workflows${extra.length > 0 ? ', and the controller\'s' : ''})${readme}\n`);
  return EXIT.OK;
}
