import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { CaravanApp } from '../app/CaravanApp.js';
import { WorkflowCatalog } from '../app/WorkflowCatalog.js';
import { buildGraphPicture, type GraphFormat, type RunMark } from '../compile/GraphPicture.js';
import { renderDot } from '../compile/renderDot.js';
import { renderGraphText } from '../compile/renderGraphText.js';
import { renderMermaid } from '../compile/renderMermaid.js';
import { CaravanError } from '../errors/CaravanError.js';
import { findRepoRoot } from '../gitops/readTreeAtRef.js';
import type { RunSnapshot } from '../run/RunSnapshot.js';
import { textLine } from '../spec/formatDiagnostics.js';
import { validateText } from '../spec/validateWorkflows.js';
import type { Workflow } from '../spec/Workflow.js';
import { cliLogger } from './cliLogger.js';
import { EXIT, type ExitCode } from './exitCodes.js';
import { stdoutFor } from './forTerminal.js';
import type { Io } from './Io.js';

export interface GraphOptions {
  format: GraphFormat;
  /** Colour the picture by the tasks' statuses in this run. */
  run?: string;
}

/** What a run id may look like (`newRunId` makes `20250101-120000-abc123`; triggers add words). */
const RUN_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/**
 * `caravan graph`: a workflow's DAG as Mermaid, DOT or text. With `--run`, the definition is
 * the one the run executed (recorded with it), coloured by each task's status in the run's
 * latest state (a live run's journal, else its record on caravan/runs).
 */
export async function graphCommand(workflowArg: string | undefined, options: GraphOptions, io: Io): Promise<ExitCode> {
  if (workflowArg === undefined && options.run === undefined) throw new CaravanError('USAGE', 'graph takes a workflow (name or file), or --run <run-id>');
  let workflow: Workflow;
  let marks: Map<string, RunMark> | undefined;
  if (options.run !== undefined) {
    ({ workflow, marks } = await ofRun(options.run, workflowArg, io));
  } else {
    workflow = await ofWorkingTree(workflowArg!, io);
  }
  const run = marks !== undefined ? { run: marks } : {};
  if (options.format === 'text') {
    // Expressions are the file's bytes: on a terminal their escape sequences are shown, not obeyed.
    stdoutFor(io)(renderGraphText(workflow, run));
  } else {
    const picture = buildGraphPicture(workflow, run);
    io.stdout(options.format === 'dot' ? renderDot(picture) : renderMermaid(picture));
  }
  return EXIT.OK;
}

/** A workflow of the working tree, by name or by file (relative to here or to the repository). */
async function ofWorkingTree(nameOrPath: string, io: Io): Promise<Workflow> {
  // Outside a repository a file can still be drawn: pictures record nothing.
  const root = await findRepoRoot(io.cwd).catch(() => io.cwd);
  const here = resolve(io.cwd, nameOrPath);
  const arg = /\.ya?ml$/.test(nameOrPath) && existsSync(here) ? here : nameOrPath;
  return (await new WorkflowCatalog(root).load(arg)).workflow;
}

async function ofRun(runId: string, workflowArg: string | undefined, io: Io): Promise<{ workflow: Workflow; marks: Map<string, RunMark> }> {
  if (!RUN_ID.test(runId)) throw new CaravanError('USAGE', `not a run id: '${runId}' (letters, digits, '.', '_' and '-')`, { data: { runId } });
  const root = await findRepoRoot(io.cwd).catch((e: unknown) => {
    throw new CaravanError('NOT_A_REPOSITORY', `${io.cwd} is not inside a Git repository; runs are recorded in Git`, { cause: e, data: { dir: io.cwd } });
  });
  const app = new CaravanApp({ repoDir: root, logger: cliLogger(io.stderr) });
  const { snapshot } = await app.queries.get(runId);
  if (workflowArg !== undefined && workflowArg !== snapshot.workflow) {
    throw new CaravanError('USAGE', `run ${runId} is a run of ${snapshot.workflow}, not of ${workflowArg}`, { data: { runId, workflow: snapshot.workflow } });
  }
  const source = await app.queries.definition(runId);
  let workflow: Workflow;
  if (source !== undefined) {
    const parsed = validateText(`${runId}/workflow.yaml`, source);
    if (parsed.workflow === undefined) {
      throw new CaravanError('WORKFLOW_INVALID', `the recorded workflow of run ${runId} no longer validates:\n${parsed.diagnostics.map((d) => textLine(d).trimEnd()).join('\n')}`, { data: { runId } });
    }
    workflow = parsed.workflow;
  } else {
    // Recorded without its definition: the working tree's may have changed since.
    io.stderr(`caravan: run ${runId} was recorded without its workflow file; drawing ${snapshot.workflow} as it is in the working tree\n`);
    workflow = (await app.loadWorkflow(snapshot.workflow)).workflow;
  }
  return { workflow, marks: runMarks(snapshot) };
}

/** Which statuses win when a task's compensations (one per forEach item) differ. */
const PRECEDENCE = ['failed', 'running', 'retrying', 'queued', 'pending', 'cancelled', 'skipped', 'succeeded'];

/** Each task's status in the run, and each compensation's (`<task>.compensate`), folded over its items. */
export function runMarks(snapshot: RunSnapshot): Map<string, RunMark> {
  const marks = new Map<string, RunMark>();
  for (const [name, t] of Object.entries(snapshot.tasks)) marks.set(name, { status: t.status, ...(t.instances !== undefined ? { items: t.instances.length } : {}) });
  const undo = new Map<string, string[]>();
  for (const c of snapshot.compensations ?? []) {
    // Keys are `<task>:compensate` or `<task>[i]:compensate`.
    const task = /^[^[:]+/.exec(c.key ?? '')?.[0];
    if (task === undefined) continue;
    undo.set(task, [...(undo.get(task) ?? []), c.status]);
  }
  for (const [task, statuses] of undo) {
    const status = PRECEDENCE.find((s) => statuses.includes(s)) ?? statuses[0]!;
    marks.set(`${task}.compensate`, { status, ...(statuses.length > 1 ? { items: statuses.length } : {}) });
  }
  return marks;
}
