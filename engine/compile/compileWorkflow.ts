import type { EnvMap, PoolSpec, Resources, TaskSpec, Workflow } from '../spec/Workflow.js';
import { agentArgs } from './agentInvocation.js';
import { DEFAULT_COMPILE_OPTIONS, DISPATCH_META_OPTIONAL, DISPATCH_META_REQUIRED, type CompileOptions } from './CompileOptions.js';
import { CompileError, type CompileProblem } from './CompileError.js';
import { MAX_JOB_ID_LENGTH, poolJobId, compensateJobId, taskJobId } from './jobId.js';
import type { CompiledJob, NomadJob, NomadTask, NomadTemplate } from './NomadJob.js';
import { specHash } from './specHash.js';

const SECOND = 1_000_000_000;
const DEFAULT_RESOURCES: Required<Pick<Resources, 'cpu' | 'memoryMB'>> = { cpu: 100, memoryMB: 128 };
const PAYLOAD_FILE = 'input.json';
/** Where Nomad writes the dispatch payload: the task's local/ directory. */
const PAYLOAD_PATH = '${NOMAD_TASK_DIR}/' + PAYLOAD_FILE;
const SECRETS_ENV_FILE = 'secrets/caravan.env';

/**
 * A validated workflow to the Nomad jobs that run it. Pure and deterministic: the same
 * workflow and options always give byte-identical jobs (object keys are built in a fixed
 * order, user maps are sorted), so rendered files and spec hashes only change when the
 * workflow does. Approval gates and sub-workflow tasks run inside the engine and compile to
 * nothing; pooled tasks run on their pool's job.
 */
export function compileWorkflow(workflow: Workflow, options: Partial<CompileOptions> = {}): CompiledJob[] {
  const opts: CompileOptions = { ...DEFAULT_COMPILE_OPTIONS, ...options };
  const name = workflow.metadata.name;
  const jobs: CompiledJob[] = [];
  const tasks = [...workflow.spec.tasks, ...(workflow.spec.onFailure ?? []), ...(workflow.spec.finally ?? [])];
  for (const task of tasks) {
    if (task.pool !== undefined || task.approval !== undefined || task.workflow !== undefined) continue;
    jobs.push({ id: taskJobId(name, task.name), kind: 'task', workflow: name, source: task.name, job: finish(taskJob(workflow, task, opts), opts) });
    if (task.compensate !== undefined) {
      jobs.push({ id: compensateJobId(name, task.name), kind: 'compensate', workflow: name, source: task.name, job: finish(taskJob(workflow, compensationTask(task), opts, compensateJobId(name, task.name)), opts) });
    }
  }
  for (const [poolName, pool] of Object.entries(workflow.spec.pools ?? {}).sort(([a], [b]) => (a < b ? -1 : 1))) {
    jobs.push({ id: poolJobId(name, poolName), kind: 'pool', workflow: name, source: poolName, job: finish(poolJob(workflow, poolName, pool, opts), opts) });
  }
  assertUniqueIds(name, jobs);
  return jobs;
}

function assertUniqueIds(workflow: string, jobs: CompiledJob[]): void {
  const problems: CompileProblem[] = [];
  const seen = new Map<string, CompiledJob>();
  for (const j of jobs) {
    const what = `${j.kind} '${j.source}'`;
    if (j.id.length > MAX_JOB_ID_LENGTH) {
      problems.push({ workflow, source: j.source, message: `${what} compiles to job ID '${j.id}', longer than ${MAX_JOB_ID_LENGTH} characters` });
    }
    const prev = seen.get(j.id);
    if (prev !== undefined) {
      problems.push({ workflow, source: j.source, message: `${what} and ${prev.kind} '${prev.source}' both compile to Nomad job ID '${j.id}'; rename one of them` });
    } else {
      seen.set(j.id, j);
    }
  }
  if (problems.length > 0) throw new CompileError(problems);
}

function baseJob(id: string, type: 'batch' | 'service', meta: Record<string, string>, opts: CompileOptions): NomadJob {
  return {
    ID: id,
    Name: id,
    Type: type,
    Namespace: opts.namespace,
    Region: opts.region,
    Datacenters: [...opts.datacenters],
    Priority: opts.priority,
    Meta: meta,
    TaskGroups: [],
  };
}

/**
 * Adds the spec hash (of everything else) and, when registering, the commit, and lays the
 * keys out in the order Nomad's own docs use, so rendered files read top-down.
 */
function finish(job: NomadJob, opts: CompileOptions): NomadJob {
  const ordered: NomadJob = {
    ID: job.ID,
    Name: job.Name,
    Type: job.Type,
    Namespace: job.Namespace,
    Region: job.Region,
    Datacenters: job.Datacenters,
    Priority: job.Priority,
    Meta: sortRecord(job.Meta),
    ...(job.ParameterizedJob !== undefined ? { ParameterizedJob: job.ParameterizedJob } : {}),
    TaskGroups: job.TaskGroups,
  };
  const meta: Record<string, string> = { ...ordered.Meta, 'caravan.spec-hash': specHash(ordered) };
  if (opts.gitCommit !== undefined) meta['caravan.git-commit'] = opts.gitCommit;
  return { ...ordered, Meta: sortRecord(meta) };
}

/**
 * A task's compensation as a task of its own: its command, its environment over the task's,
 * its timeout; the task's driver, image, resources and working directory. No outputs.
 */
export function compensationTask(task: TaskSpec): TaskSpec {
  const c = task.compensate ?? {};
  const env = { ...(task.env ?? {}), ...(c.env ?? {}) };
  return {
    name: task.name,
    ...(c.run !== undefined ? { run: c.run } : {}),
    ...(c.args !== undefined ? { args: c.args } : {}),
    ...(Object.keys(env).length > 0 ? { env } : {}),
    ...((c.timeout ?? task.timeout) !== undefined ? { timeout: (c.timeout ?? task.timeout)! } : {}),
    ...(task.driver !== undefined ? { driver: task.driver } : {}),
    ...(task.image !== undefined ? { image: task.image } : {}),
    ...(task.resources !== undefined ? { resources: task.resources } : {}),
    ...(task.workingDir !== undefined ? { workingDir: task.workingDir } : {}),
  };
}

function taskJob(workflow: Workflow, task: TaskSpec, opts: CompileOptions, id = taskJobId(workflow.metadata.name, task.name)): NomadJob {
  const wf = workflow.metadata.name;
  const defaults = workflow.spec.defaults ?? {};
  const driver = task.driver ?? defaults.driver ?? 'raw_exec';
  const timeout = task.timeout ?? defaults.timeout;
  const env = { ...(defaults.env ?? {}), ...(task.env ?? {}) };
  const resources = task.resources ?? defaults.resources ?? {};
  const job = baseJob(id, 'batch', { 'caravan.task': task.name, 'caravan.workflow': wf, ...(id !== taskJobId(wf, task.name) ? { 'caravan.compensates': task.name } : {}) }, opts);
  job.ParameterizedJob = { Payload: 'required', MetaRequired: [...DISPATCH_META_REQUIRED], MetaOptional: [...DISPATCH_META_OPTIONAL] };
  const secretHeaders = new Map<string, string>();
  for (const [h, v] of Object.entries(task.http?.headers ?? {})) {
    if (typeof v !== 'string') secretHeaders.set(h, `CARAVAN_HEADER_${h.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`);
  }
  const headerSecrets: EnvMap = {};
  for (const [h, v] of Object.entries(task.http?.headers ?? {})) {
    if (typeof v !== 'string') headerSecrets[secretHeaders.get(h)!] = v;
  }
  const { literal, templates, hostArgs } = compileEnv({ ...env, ...headerSecrets });
  const containerised = driver === 'docker' || driver === 'podman';
  const args = agentArgs(wf, task, timeout, PAYLOAD_PATH, secretHeaders, hostArgs);
  const tasks: NomadTask[] = [];
  if (!containerised) {
    tasks.push({
      Name: 'agent',
      Driver: driver,
      Config: runnerConfig(driver, opts.agentCommand, args),
      Env: sortRecord({ ...literal, ...runnerEnv(wf, task.name) }),
      ...(templates.length > 0 ? { Templates: templates } : {}),
      DispatchPayload: { File: PAYLOAD_FILE },
      Resources: nomadResources(resources),
      KillTimeout: 10 * SECOND,
    });
  } else {
    // The user's image has no runner: a prestart runner resolves the command into the
    // shared alloc dir, the container runs it, and a poststop runner reports the result.
    const [command, ...rest] = opts.agentCommand;
    tasks.push({
      Name: 'caravan-prepare',
      Driver: 'raw_exec',
      Lifecycle: { Hook: 'prestart', Sidecar: false },
      Config: { command, args: [...rest, 'prepare', ...args.slice(1)] },
      Env: runnerEnv(wf, task.name),
      DispatchPayload: { File: PAYLOAD_FILE },
      Resources: { CPU: 50, MemoryMB: 64 },
      KillTimeout: 10 * SECOND,
    });
    tasks.push({
      Name: 'main',
      Driver: driver,
      Leader: true,
      Config: { image: task.image ?? '', command: '/bin/sh', args: ['/alloc/caravan/command.sh'] },
      Env: sortRecord({ ...literal, CARAVAN_OUTPUTS: '/alloc/caravan/outputs' }),
      ...(templates.length > 0 ? { Templates: templates } : {}),
      Resources: nomadResources(resources),
      KillTimeout: 10 * SECOND,
    });
    tasks.push({
      Name: 'caravan-report',
      Driver: 'raw_exec',
      Lifecycle: { Hook: 'poststop', Sidecar: false },
      Config: { command, args: [...rest, 'report', '--workflow', wf, '--task', task.name, '--main-task', 'main'] },
      Env: runnerEnv(wf, task.name),
      Resources: { CPU: 50, MemoryMB: 64 },
      KillTimeout: 10 * SECOND,
    });
  }
  job.TaskGroups.push({
    Name: 'task',
    Count: 1,
    // Caravan owns retries (with backoff and a per-run budget): Nomad must never restart or
    // reschedule an attempt on its own, or one attempt could run twice.
    RestartPolicy: { Attempts: 0, Mode: 'fail' },
    ReschedulePolicy: { Attempts: 0, Unlimited: false },
    ...(resources.diskMB !== undefined ? { EphemeralDisk: { SizeMB: resources.diskMB } } : {}),
    Tasks: tasks,
  });
  return job;
}

function poolJob(workflow: Workflow, poolName: string, pool: PoolSpec, opts: CompileOptions): NomadJob {
  const wf = workflow.metadata.name;
  const id = poolJobId(wf, poolName);
  const driver = pool.driver ?? 'raw_exec';
  const agent = pool.agent ?? 'shell';
  const { literal, templates, hostArgs } = compileEnv(pool.env ?? {});
  const [command, ...rest] = opts.agentCommand;
  const args = [...rest, 'pool', '--workflow', wf, '--pool', poolName, '--agent', agent, '--concurrency', String(pool.concurrency ?? 1), '--health-port', '${NOMAD_PORT_health}', ...hostArgs];
  const config: Record<string, unknown> = driver === 'docker' || driver === 'podman'
    ? { image: pool.image ?? '', command, args, ports: ['health'] }
    : { command, args };
  const job = baseJob(id, 'service', { 'caravan.pool': poolName, 'caravan.workflow': wf }, opts);
  job.TaskGroups.push({
    Name: 'agents',
    Count: pool.count,
    // Agents are long-lived: let Nomad restart and reschedule them like any service. Task
    // retries are still Caravan's; a task lost with its agent is retried by the engine.
    RestartPolicy: { Attempts: 2, Interval: 1800 * SECOND, Delay: 15 * SECOND, Mode: 'fail' },
    ReschedulePolicy: { Attempts: 0, Interval: 0, Delay: 30 * SECOND, DelayFunction: 'exponential', MaxDelay: 3600 * SECOND, Unlimited: true },
    Networks: [{ Mode: 'host', DynamicPorts: [{ Label: 'health' }] }],
    Services: [{
      Name: id,
      Provider: 'consul',
      PortLabel: 'health',
      Tags: ['caravan', 'caravan-pool'],
      // Consul service meta keys allow only letters, digits, '-' and '_'.
      Meta: { caravan_pool: poolName, caravan_workflow: wf },
      Checks: [{ Name: 'agent health', Type: 'http', Path: '/health', Interval: 10 * SECOND, Timeout: 2 * SECOND }],
    }],
    Tasks: [{
      Name: 'agent',
      Driver: driver,
      Config: config,
      Env: sortRecord({ ...literal, ...(opts.agentEnv ?? {}), CARAVAN_POOL: poolName, CARAVAN_WORKFLOW: wf }),
      ...(templates.length > 0 ? { Templates: templates } : {}),
      Resources: nomadResources(pool.resources ?? {}),
      KillTimeout: 30 * SECOND,
    }],
  });
  return job;
}

function runnerConfig(driver: string, agentCommand: string[], args: string[]): Record<string, unknown> {
  const [command, ...rest] = agentCommand;
  if (driver === 'java') return { class: 'caravan.Agent', args: [...rest, ...args] };
  return { command, args: [...rest, ...args] };
}

function runnerEnv(workflow: string, task: string): Record<string, string> {
  return { CARAVAN_TASK: task, CARAVAN_WORKFLOW: workflow };
}

function nomadResources(r: Resources): NomadTask['Resources'] {
  const out: NomadTask['Resources'] = r.cores !== undefined ? { Cores: r.cores, MemoryMB: r.memoryMB ?? DEFAULT_RESOURCES.memoryMB } : { CPU: r.cpu ?? DEFAULT_RESOURCES.cpu, MemoryMB: r.memoryMB ?? DEFAULT_RESOURCES.memoryMB };
  if (r.memoryMaxMB !== undefined) out.MemoryMaxMB = r.memoryMaxMB;
  return out;
}

/**
 * Literal values go into the job's Env. Secrets never do: they become one Nomad template
 * that reads Nomad Variables on the client and is exported as environment variables, so the
 * value exists only in the allocation. Host variables are copied by the runner from its own
 * environment (the Nomad client's, for raw_exec), so their values never enter the job either.
 */
function compileEnv(env: EnvMap): { literal: Record<string, string>; templates: NomadTemplate[]; hostArgs: string[] } {
  const literal: Record<string, string> = {};
  const lines: string[] = [];
  const hostArgs: string[] = [];
  for (const key of Object.keys(env).sort()) {
    const v = env[key]!;
    if (typeof v === 'string') literal[key] = v;
    else if ('secret' in v) {
      lines.push(`${key}={{ with nomadVar "${v.secret.path}" }}{{ .${v.secret.key} }}{{ end }}`);
      // The runner masks this variable's value in what it reports (logs, errors).
      hostArgs.push('--mask-env', key);
    }
    else hostArgs.push('--env-from-host', `${key}=${v.fromHost}`);
  }
  const templates: NomadTemplate[] = lines.length === 0 ? [] : [{ EmbeddedTmpl: lines.join('\n') + '\n', DestPath: SECRETS_ENV_FILE, Envvars: true, ChangeMode: 'noop' }];
  return { literal, templates, hostArgs };
}

function sortRecord(r: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of Object.keys(r).sort()) out[k] = r[k]!;
  return out;
}

