import { buildDag, type TaskDag } from '../graph/buildDag.js';
import type { PendingDiagnostic } from './Diagnostic.js';
import { checkParams } from './checkParams.js';
import { checkRetryPolicy } from './checkRetryPolicy.js';
import { checkRunOutputs, checkTaskExpressions, declaredOutputs, type ExpressionScope } from './checkExpressions.js';
import { checkTriggers } from './checkTriggers.js';
import { closest } from './describePath.js';
import { asArray, asRecord, asString, asStringArray } from './shape.js';

export interface SemanticResult {
  diagnostics: PendingDiagnostic[];
  /** DAG of the main tasks; undefined when the document has no usable task list. */
  dag: TaskDag | undefined;
  /**
   * Names of workflows run by `workflow:` tasks, with where they are referenced and which of
   * the child's outputs the workflow reads from them (checked against the child's spec.outputs).
   */
  subWorkflows: SubWorkflowRef[];
}

export interface SubWorkflowRef {
  name: string;
  path: Array<string | number>;
  reads: Array<{ output: string; path: Array<string | number> }>;
}

/** Where a task is declared: the main DAG, or one of the two small DAGs that run after it. */
type TaskGroup = 'tasks' | 'onFailure' | 'finally';

interface TaskEntry {
  task: Record<string, unknown>;
  name: string;
  path: Array<string | number>;
  group: TaskGroup;
}

const ACTIONS = ['run', 'args', 'http', 'approval', 'workflow', 'sleep'] as const;
const AGENT_ACTION: Record<string, string | undefined> = { shell: undefined, http: 'http', sleep: 'sleep', noop: undefined };

/**
 * Checks what the schema cannot: names are unique, `needs` and `pool` point at something,
 * the graph has no cycle, expressions read only what exists and is upstream, and params,
 * triggers and retry settings make sense. Runs on any shape of document without throwing.
 */
export function checkSemantics(doc: Record<string, unknown>, prebuilt?: TaskDag): SemanticResult {
  const out: PendingDiagnostic[] = [];
  const spec = asRecord(doc['spec']);
  if (spec === undefined) return { diagnostics: out, dag: undefined, subWorkflows: [] };
  const workflowName = asString(asRecord(doc['metadata'])?.['name']);

  const main = entries(spec['tasks'], 'tasks');
  const onFailure = entries(spec['onFailure'], 'onFailure');
  const final = entries(spec['finally'], 'finally');
  const all = [...main, ...onFailure, ...final];

  const firstByName = new Map<string, TaskEntry>();
  for (const e of all) {
    const prev = firstByName.get(e.name);
    if (prev !== undefined) {
      out.push(err('TASK_DUPLICATE', `task name '${e.name}' is already used by ${prev.group === 'tasks' ? '' : `${prev.group} `}task #${Number(prev.path[2]) + 1}; task names must be unique in a workflow`, [...e.path, 'name']));
    } else {
      firstByName.set(e.name, e);
    }
  }
  const groupOf = new Map([...firstByName].map(([name, e]) => [name, e.group]));

  for (const e of all) checkAction(e, out);
  for (const e of all) checkNeeds(e, groupOf, out);
  for (const e of all) checkCompensate(e, out);
  for (const e of all) checkOutputs(e, out);
  checkPools(spec, all, out);

  const dag = prebuilt ?? buildDag(main.map((e) => ({ name: e.name, needs: asStringArray(e.task['needs']) })));
  const failureDag = buildDag(onFailure.map((e) => ({ name: e.name, needs: asStringArray(e.task['needs']) })));
  const finallyDag = buildDag(final.map((e) => ({ name: e.name, needs: asStringArray(e.task['needs']) })));
  for (const [d, list] of [[dag, main], [failureDag, onFailure], [finallyDag, final]] as const) {
    for (const cycle of d.cycles) {
      // The closing edge: the first task of the path needs the last distinct one.
      const owner = list.find((e) => e.name === cycle[0]);
      const needIndex = owner === undefined ? -1 : asStringArray(owner.task['needs']).indexOf(cycle[cycle.length - 2]!);
      const path = owner === undefined ? [] : needIndex >= 0 ? [...owner.path, 'needs', needIndex] : owner.path;
      out.push(err('DAG_CYCLE', `dependency cycle: ${cycle.join(' -> ')}`, path));
    }
  }

  const children = new Map<string, { workflow: string; wait: boolean }>();
  for (const e of all) {
    const w = asRecord(e.task['workflow']);
    const target = asString(w?.['name']);
    if (target !== undefined) children.set(e.name, { workflow: target, wait: w?.['wait'] !== false });
  }
  const childReads: NonNullable<ExpressionScope['childReads']> = [];
  const scope: ExpressionScope = {
    params: asRecord(spec['params']) ?? {},
    outputs: new Map(all.map((e) => [e.name, declaredOutputs(e.task)])),
    mainDag: dag,
    children,
    childReads,
    onFailureTasks: new Set(onFailure.map((e) => e.name)),
  };
  for (const e of all) out.push(...checkTaskExpressions(e.task, e.path, e.group !== 'tasks', scope));
  const runOutputs = asRecord(spec['outputs']);
  if (runOutputs !== undefined) out.push(...checkRunOutputs(runOutputs, scope));

  out.push(...checkParams(spec));
  out.push(...checkTriggers(spec));
  out.push(...checkRetryPolicy(spec, all));

  const subWorkflows: SemanticResult['subWorkflows'] = [];
  for (const e of all) {
    const target = asString(asRecord(e.task['workflow'])?.['name']);
    if (target === undefined) continue;
    const path = [...e.path, 'workflow', 'name'];
    if (target === workflowName) {
      out.push(err('WORKFLOW_RECURSION', `task '${e.name}' runs its own workflow '${target}', which would recurse forever`, path));
    } else {
      subWorkflows.push({ name: target, path, reads: childReads.filter((r) => r.task === e.name).map((r) => ({ output: r.output, path: r.path })) });
    }
  }
  return { diagnostics: out, dag: dag.cycles.length === 0 ? dag : undefined, subWorkflows };
}

/** The main tasks as DAG nodes, tolerating any document shape. */
export function mainTaskNodes(doc: Record<string, unknown>): Array<{ name: string; needs: string[] }> {
  return entries(asRecord(doc['spec'])?.['tasks'], 'tasks').map((e) => ({ name: e.name, needs: asStringArray(e.task['needs']) }));
}

function entries(list: unknown, group: TaskGroup): TaskEntry[] {
  const out: TaskEntry[] = [];
  asArray(list).forEach((t, i) => {
    const task = asRecord(t);
    const name = asString(task?.['name']);
    if (task !== undefined && name !== undefined) out.push({ task, name, path: ['spec', group, i], group });
  });
  return out;
}

function checkAction(e: TaskEntry, out: PendingDiagnostic[]): void {
  const present = ACTIONS.filter((a) => e.task[a] !== undefined);
  const agent = asString(e.task['agent']);
  const who = `task '${e.name}'`;
  if (present.length > 1) {
    out.push(err('TASK_ACTION_CONFLICT', `${who} sets ${present.join(' and ')}; a task does exactly one of run, args, http, approval, workflow or sleep`, [...e.path, present[1]!], 'key'));
    return;
  }
  const action = present[0];
  if (agent === undefined) {
    if (action === undefined) {
      out.push(err('TASK_NO_ACTION', `${who} does nothing: give it run, args, http, approval, workflow or sleep, or set agent: noop`, e.path));
    }
    return;
  }
  if (action === 'approval' || action === 'workflow') {
    out.push(err('TASK_AGENT_MISMATCH', `${who} is ${action === 'approval' ? 'an approval gate' : 'a sub-workflow'} and runs no agent; remove agent: ${agent}`, [...e.path, 'agent']));
    return;
  }
  if (agent in AGENT_ACTION) {
    const wants = AGENT_ACTION[agent];
    if (wants !== undefined && action !== wants) {
      out.push(err('TASK_AGENT_MISMATCH', `${who} uses agent '${agent}' but sets ${action ?? 'nothing'}; the ${agent} agent takes '${wants}'`, [...e.path, 'agent']));
    } else if (agent === 'shell' && action !== 'run' && action !== 'args') {
      out.push(err('TASK_AGENT_MISMATCH', `${who} uses the shell agent but sets ${action ?? 'neither run nor args'}; give it run or args`, [...e.path, 'agent']));
    } else if (agent === 'noop' && action !== undefined) {
      out.push(err('TASK_AGENT_MISMATCH', `${who} uses the noop agent, which ignores ${action}`, [...e.path, 'agent']));
    }
  }
}

/** Why a task of one group cannot need a task of another: each group runs as a DAG of its own. */
const CROSS_GROUP: Record<TaskGroup, string> = {
  tasks: 'main tasks may only need other main tasks',
  onFailure: 'onFailure tasks run after the main tasks and may only need other onFailure tasks',
  finally: 'finally tasks run after everything else and may only need other finally tasks',
};

function checkNeeds(e: TaskEntry, groupOf: Map<string, TaskGroup>, out: PendingDiagnostic[]): void {
  asArray(e.task['needs']).forEach((n, j) => {
    if (typeof n !== 'string') return;
    const path = [...e.path, 'needs', j];
    const other = groupOf.get(n);
    if (n === e.name) {
      out.push(err('NEEDS_SELF', `task '${e.name}' needs itself`, path));
    } else if (other !== e.group) {
      let why: string;
      if (other === 'onFailure' && e.group === 'tasks') {
        why = `; '${n}' is an onFailure task and only runs when the workflow fails`;
      } else if (other === 'finally' && e.group === 'tasks') {
        why = `; '${n}' is a finally task and runs after all the main tasks`;
      } else if (other !== undefined) {
        why = `; ${CROSS_GROUP[e.group]}`;
      } else {
        const hint = closest(n, [...groupOf].filter(([x, g]) => g === e.group && x !== e.name).map(([x]) => x));
        why = hint !== undefined ? `; did you mean '${hint}'?` : '';
      }
      out.push(err('NEEDS_UNKNOWN', `task '${e.name}' needs unknown task '${n}'${why}`, path));
    }
  });
}

/**
 * A task's outputs: names are unique, and stdout is captured once, by a shell task (the
 * only agent whose standard output is the task's).
 */
function checkOutputs(e: TaskEntry, out: PendingDiagnostic[]): void {
  const seen = new Set<string>();
  let stdout: number | undefined;
  asArray(e.task['outputs']).forEach((o, i) => {
    const rec = asRecord(o);
    const name = typeof o === 'string' ? o : asString(rec?.['name']);
    const path = [...e.path, 'outputs', i];
    if (name !== undefined && seen.has(name)) out.push(err('OUTPUT_DUPLICATE', `task '${e.name}' declares output '${name}' twice`, typeof o === 'string' ? path : [...path, 'name']));
    if (name !== undefined) seen.add(name);
    if (rec?.['from'] !== 'stdout') return;
    if (stdout !== undefined) {
      out.push(err('OUTPUT_STDOUT_TWICE', `task '${e.name}' captures stdout as outputs #${stdout + 1} and #${i + 1}; one output holds it, read it under that name`, [...path, 'from']));
      return;
    }
    stdout = i;
    const agent = asString(e.task['agent']);
    const shell = (e.task['run'] !== undefined || e.task['args'] !== undefined) && (agent === undefined || agent === 'shell');
    if (!shell) out.push(err('OUTPUT_STDOUT_NOT_SHELL', `task '${e.name}' captures stdout, but only a shell task (run or args) has a standard output of its own`, [...path, 'from']));
  });
}

/** Compensation undoes main tasks when the run fails; on any other task it would be ignored. */
function checkCompensate(e: TaskEntry, out: PendingDiagnostic[]): void {
  if (e.group === 'tasks' || e.task['compensate'] === undefined) return;
  out.push(err('COMPENSATE_OUTSIDE_TASKS', `task '${e.name}' is ${e.group === 'finally' ? 'a finally' : 'an onFailure'} task; compensate undoes main tasks when a run fails and would never run here`, [...e.path, 'compensate'], 'key'));
}

function checkPools(spec: Record<string, unknown>, all: TaskEntry[], out: PendingDiagnostic[]): void {
  const pools = asRecord(spec['pools']) ?? {};
  const used = new Set<string>();
  for (const e of all) {
    const pool = asString(e.task['pool']);
    if (pool === undefined) continue;
    used.add(pool);
    if (!(pool in pools)) {
      const hint = closest(pool, Object.keys(pools));
      const tail = hint !== undefined ? `; did you mean '${hint}'?` : Object.keys(pools).length === 0 ? '; declare it under spec.pools' : `; pools are ${Object.keys(pools).join(', ')}`;
      out.push(err('POOL_UNKNOWN', `task '${e.name}' uses unknown pool '${pool}'${tail}`, [...e.path, 'pool']));
      continue;
    }
    for (const field of ['driver', 'image', 'resources', 'approval', 'workflow'] as const) {
      if (e.task[field] !== undefined) {
        const why = field === 'approval' || field === 'workflow' ? `an ${field === 'approval' ? 'approval gate' : 'sub-workflow'} does not run in a pool` : `${field} comes from the pool's agents`;
        out.push(err('POOL_TASK_CONFLICT', `task '${e.name}' runs in pool '${pool}' and sets ${field}; ${why}`, [...e.path, field], 'key'));
      }
    }
  }
  for (const name of Object.keys(pools)) {
    if (!used.has(name)) {
      out.push({ severity: 'warning', code: 'POOL_UNUSED', message: `pool '${name}' is not used by any task; it would still run ${String(asRecord(pools[name])?.['count'] ?? '?')} agents`, path: ['spec', 'pools', name], at: 'key' });
    }
  }
}

function err(code: PendingDiagnostic['code'], message: string, path: Array<string | number>, at: 'key' | 'value' = 'value'): PendingDiagnostic {
  return { severity: 'error', code, message, path, at };
}
