import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { CaravanError } from '../errors/CaravanError.js';
import { EXIT, exitCodeFor, type ExitCode } from './exitCodes.js';
import { packageRoot } from '../packageRoot.js';
import { DIAGNOSTIC_FORMATS, type DiagnosticFormat } from '../spec/formatDiagnostics.js';
import { processIo, type Io } from './Io.js';
import { PLAN_FORMATS, type PlanFormat } from '../compile/formatPlan.js';
import { GRAPH_FORMATS, type GraphFormat } from '../compile/GraphPicture.js';
import type { RunStatus } from '../run/RunEvent.js';
import type * as ApprovalsModule from './approvalsCommand.js';
import type * as DemoModule from './demoCommand.js';
import type * as GraphModule from './graphCommand.js';
import type * as PlanModule from './planCommand.js';
import type * as RenderModule from './renderCommand.js';
import type * as RemoteModule from './remoteCommands.js';
import type * as RunModule from './runCommands.js';
import type { ApiClient } from './ApiClient.js';
import type * as ValidateModule from './validateCommand.js';

// Commands are loaded when used: `caravan validate` should not pay for Git, HTTP and the engine.
const validateCommand = async (...a: Parameters<typeof ValidateModule.validateCommand>) => (await import('./validateCommand.js')).validateCommand(...a);
const renderCommand = async (...a: Parameters<typeof RenderModule.renderCommand>) => (await import('./renderCommand.js')).renderCommand(...a);
const planCommand = async (...a: Parameters<typeof PlanModule.planCommand>) => (await import('./planCommand.js')).planCommand(...a);
const demoCommand = async (...a: Parameters<typeof DemoModule.demoCommand>) => (await import('./demoCommand.js')).demoCommand(...a);
const graphCommand = async (...a: Parameters<typeof GraphModule.graphCommand>) => (await import('./graphCommand.js')).graphCommand(...a);
const approvalsCommand = async (...a: Parameters<typeof ApprovalsModule.approvalsCommand>) => (await import('./approvalsCommand.js')).approvalsCommand(...a);
const runCommands = (): Promise<typeof RunModule> => import('./runCommands.js');

function positiveInt(v: string, flag: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new CaravanError('USAGE', `${flag} takes a positive whole number, not '${v}'`);
  return n;
}

/** --controller and --token-file, on every command that can talk to a controller's API instead. */
function remoteFlags(cmd: Command): Command {
  return cmd
    .option('--controller <url>', "talk to the controller's HTTP API at this URL instead of working in-process (default: $CARAVAN_CONTROLLER)")
    .option('--token-file <file>', 'with a controller: a file holding the API bearer token (default: $CARAVAN_TOKEN; never give the token itself on the command line)');
}

const remoteCommands = (): Promise<typeof RemoteModule> => import('./remoteCommands.js');
/** The client for a controller when one is named (flag or environment); undefined: in-process. */
async function remote(opts: RemoteModule.RemoteFlags): Promise<ApiClient | undefined> {
  // In-process commands do not load the HTTP client and its schemas.
  if (opts.controller === undefined && opts.tokenFile === undefined && (process.env['CARAVAN_CONTROLLER'] ?? '') === '') return undefined;
  return (await remoteCommands()).remoteClient({ ...(opts.controller !== undefined ? { controller: opts.controller } : {}), ...(opts.tokenFile !== undefined ? { tokenFile: opts.tokenFile } : {}) });
}

/** What `caravan runs --status` takes: every RunStatus (a record, so the compiler sees that none is missing). */
const RUN_STATUSES = Object.keys({ running: 0, paused: 0, succeeded: 0, failed: 0, cancelled: 0 } satisfies Record<RunStatus, 0>);

function version(): string {
  const pkg = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/**
 * The `caravan` command. Returns the exit code instead of exiting, so tests run it in-process.
 * User errors print one line; only internal errors print a stack trace.
 */
export async function main(argv: readonly string[], io: Io = processIo()): Promise<ExitCode> {
  // The task runner inside a Nomad allocation: not a user command, and its flags are its own.
  if (argv[0] === 'agent') {
    const { agentCommand } = await import('../../agents/agentCommand.js');
    return (await agentCommand(argv.slice(1), io.stderr)) as ExitCode;
  }
  let exit: ExitCode = EXIT.OK;
  const program = new Command('caravan')
    .description('GitOps pipeline engine for HashiCorp Nomad')
    .version(version(), '-V, --version')
    .exitOverride()
    .showHelpAfterError('(run caravan --help for usage)')
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr });

  program
    .command('validate')
    .description('check workflow files: YAML, schema, DAG and expressions (default path: workflows/)')
    .argument('[paths...]', 'workflow files or directories')
    .addOption(new Option('-f, --format <format>', 'output format').choices([...DIAGNOSTIC_FORMATS]).default('text'))
    .option('--max-annotations <n>', 'with --format github: annotate at most n problems, then name how many more (GitHub shows 10 per step); all go to $GITHUB_STEP_SUMMARY when set', (v: string) => positiveInt(v, '--max-annotations'), 10)
    .action(async (paths: string[], opts: { format: DiagnosticFormat; maxAnnotations: number }) => {
      const stepSummary = process.env['GITHUB_STEP_SUMMARY'];
      exit = await validateCommand(paths, { format: opts.format, maxAnnotations: opts.maxAnnotations, ...(stepSummary !== undefined ? { stepSummary } : {}) }, io);
    });

  program
    .command('render')
    .description('compile workflows into Nomad job files under nomad-jobs/ (default path: workflows/)')
    .argument('[paths...]', 'workflow files or directories')
    .option('-o, --out <dir>', 'output directory', 'nomad-jobs')
    .option('--check', 'write nothing; exit 1 if the output directory is not what render would produce', false)
    .option('--namespace <ns>', 'Nomad namespace', 'default')
    .option('--region <region>', 'Nomad region', 'global')
    .option('--datacenters <list>', 'comma-separated Nomad datacenters', '*')
    .option('--agent-command <cmd>', 'command that starts the agent runner on Nomad clients', 'caravan agent')
    .action(async (paths: string[], opts: { out: string; check: boolean; namespace: string; region: string; datacenters: string; agentCommand: string }) => {
      exit = await renderCommand(paths, {
        out: opts.out,
        check: opts.check,
        compile: {
          namespace: opts.namespace,
          region: opts.region,
          datacenters: opts.datacenters.split(',').map((d) => d.trim()).filter((d) => d !== ''),
          agentCommand: opts.agentCommand.split(/\s+/).filter((a) => a !== ''),
        },
      }, io);
    });

  program
    .command('plan')
    .description('show the Nomad jobs that change between a Git revision and the working tree (or --head)')
    .option('-b, --base <ref>', 'revision to compare with (HEAD, a branch, a tag, a commit, HEAD~1, ...)', 'HEAD')
    .addOption(new Option('-f, --format <format>', 'output format').choices([...PLAN_FORMATS]).default('markdown'))
    .option('--head <ref>', 'plan this revision instead of the working tree')
    .option('--workflows <dir>', 'workflow directory, relative to the repository root', 'workflows')
    .option('--nomad-addr <url>', "show each job's JobModifyIndex on this Nomad cluster (token: $NOMAD_TOKEN); without it the plan says it was not checked against a cluster")
    .action(async (opts: { base: string; head?: string; format: PlanFormat; workflows: string; nomadAddr?: string }) => {
      exit = await planCommand(opts, io);
    });

  program
    .command('graph')
    .description("draw a workflow's DAG (forEach, pools, approvals, when, compensation, onFailure and finally) as Mermaid, Graphviz DOT or text; with --run, coloured by each task's status in that run")
    .argument('[workflow]', 'workflow name (metadata.name) or file; with --run, the run\'s own recorded definition is drawn')
    .addOption(new Option('-f, --format <format>', 'mermaid (renders in GitHub comments and Markdown), dot (Graphviz: dot -Tsvg) or text (for terminals)').choices([...GRAPH_FORMATS]).default('mermaid'))
    .option('-r, --run <run-id>', 'colour tasks by their status in this run (a live run: as of now)')
    .addHelpText('after', '\nExamples:\n  caravan graph order-saga\n  caravan graph workflows/quarterly-report.yaml --format dot | dot -Tsvg > report.svg\n  caravan graph --run 20250101-120000-abc123 --format text')
    .action(async (workflow: string | undefined, opts: { format: GraphFormat; run?: string }) => {
      exit = await graphCommand(workflow, { format: opts.format, ...(opts.run !== undefined ? { run: opts.run } : {}) }, io);
    });

  program
    .command('review')
    .description('the pull-request check in GitHub Actions: annotate invalid lines, render --check, plan against the PR base, write the job summary and keep one plan comment up to date')
    .option('--github', 'read the run from the GITHUB_* variables and the event payload; post with $GITHUB_TOKEN to $GITHUB_API_URL (required: the only mode so far)', false)
    .option('-b, --base <ref>', "revision to plan against (default: the pull request's base commit)")
    .option('--workflows <dir>', 'workflow directory, relative to the repository root', 'workflows')
    .option('--render-check <dir>', 'check that this directory holds what `caravan render` would write', 'nomad-jobs')
    .option('--no-render-check', 'skip the rendered-jobs check (for a repository that keeps none)')
    .option('--max-annotations <n>', 'annotate at most n problems, then name how many more (GitHub shows 10 per step)', (v: string) => positiveInt(v, '--max-annotations'), 10)
    .option('--no-comment', 'write the job summary only; post no pull request comment')
    .option('--nomad-addr <url>', "show each job's JobModifyIndex on this Nomad cluster (token: $NOMAD_TOKEN)")
    .action(async (opts: { github: boolean; base?: string; workflows: string; renderCheck: string | false; maxAnnotations: number; comment: boolean; nomadAddr?: string }) => {
      if (!opts.github) throw new CaravanError('USAGE', 'review runs in GitHub Actions: pass --github (it reads GITHUB_* variables and posts with $GITHUB_TOKEN)');
      const { reviewCommand } = await import('./reviewCommand.js');
      exit = await reviewCommand({
        workflows: opts.workflows,
        maxAnnotations: opts.maxAnnotations,
        comment: opts.comment,
        ...(opts.renderCheck !== false ? { renderCheck: opts.renderCheck } : {}),
        ...(opts.base !== undefined ? { base: opts.base } : {}),
        ...(opts.nomadAddr !== undefined ? { nomadAddr: opts.nomadAddr } : {}),
      }, io);
    });

  remoteFlags(program
    .command('run')
    .description('run a workflow and record it in Git: tasks run on this machine (default) or on Nomad (--backend nomad), events travel in memory (default) or on NATS JetStream (--bus nats); with --controller, the controller runs it and this follows it (Ctrl-C detaches; the run goes on)'))
    .argument('<workflow>', 'workflow name (metadata.name) or file')
    .option('-p, --param <name=value>', 'run parameter (repeatable)', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--json', 'print one JSON event per line (with --controller: the run snapshot, one line each time it changes)', false)
    .option('--parallelism <n>', 'tasks running at once (default 32)', (v: string) => positiveInt(v, '--parallelism'))
    .addOption(new Option('--bus <bus>', 'where task events travel: memory, or NATS JetStream at $NATS_URL (default: memory; nats with --backend nomad)').choices(['memory', 'nats']))
    .addOption(new Option('--backend <backend>', 'where tasks run: local, or Nomad at $NOMAD_ADDR (implies --bus nats)').choices(['local', 'nomad']).default('local'))
    .option('--agent-command <cmd>', 'how Nomad clients start the agent runner (default: this node and checkout)')
    .addOption(new Option('--registry <registry>', 'register in Consul at $CONSUL_HTTP_ADDR and mirror run status to its KV').choices(['none', 'consul']).default('none'))
    .option('--leader', 'act as the controller: schedule only while holding the caravan/leader lock (needs --registry consul)', false)
    .action(async (workflow: string, opts: RemoteModule.RemoteFlags & { param: string[]; json: boolean; parallelism?: number; bus?: 'memory' | 'nats'; backend: 'local' | 'nomad'; agentCommand?: string; registry: 'none' | 'consul'; leader: boolean }) => {
      const client = await remote(opts);
      if (client === undefined) {
        exit = await (await runCommands()).runCommand(workflow, opts, io);
        return;
      }
      const local = [opts.parallelism !== undefined && '--parallelism', opts.bus !== undefined && '--bus', opts.backend !== 'local' && '--backend', opts.agentCommand !== undefined && '--agent-command', opts.registry !== 'none' && '--registry', opts.leader && '--leader'].filter((f) => f !== false);
      if (local.length > 0) throw new CaravanError('USAGE', `${local.join(', ')} ${local.length === 1 ? 'is' : 'are'} for a run in this process; with a controller, its own configuration decides`);
      exit = await (await remoteCommands()).remoteRunCommand(client, workflow, opts, io);
    });

  program
    .command('recover')
    .alias('resume')
    .description('continue a run whose process died, from its last checkpoint and journal (alias: resume)')
    .argument('<run-id>')
    .option('-p, --param <name=value>', "a secret param of the run, given again (they are never recorded; repeatable)", (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--json', 'print one JSON event per line', false)
    .addOption(new Option('--bus <bus>', 'the bus the run used (default: memory; nats with --backend nomad)').choices(['memory', 'nats']))
    .addOption(new Option('--backend <backend>', 'where the run\'s tasks run (nomad implies --bus nats)').choices(['local', 'nomad']).default('local'))
    .option('--agent-command <cmd>', 'how Nomad clients start the agent runner')
    .addOption(new Option('--registry <registry>', 'register in Consul at $CONSUL_HTTP_ADDR and mirror run status to its KV').choices(['none', 'consul']).default('none'))
    .option('--leader', 'act as the controller: schedule only while holding the caravan/leader lock (needs --registry consul)', false)
    .action(async (runId: string, opts: { param: string[]; json: boolean; bus?: 'memory' | 'nats'; backend: 'local' | 'nomad'; agentCommand?: string; registry: 'none' | 'consul'; leader: boolean }) => {
      exit = await (await runCommands()).recoverCommand(runId, opts, io);
    });

  remoteFlags(program
    .command('retry')
    .description('start a new run of a finished run (its workflow as it ran it, its commit and params): tasks that succeeded are reused with their outputs; those that failed, were cancelled, were skipped because of a failure or were compensated run again, with everything downstream of them; exits with the new run\'s status')
    .argument('<run-id>')
    .option('--from <task>', 'also run this task again, and everything downstream of it, even if they succeeded')
    .option('-p, --param <name=value>', "a secret param of the run, given again (they are never recorded; repeatable)", (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--json', 'print one JSON event per line', false)
    .addOption(new Option('--bus <bus>', 'where task events travel: memory, or NATS JetStream at $NATS_URL (default: memory; nats with --backend nomad)').choices(['memory', 'nats']))
    .addOption(new Option('--backend <backend>', 'where tasks run: local, or Nomad at $NOMAD_ADDR (implies --bus nats)').choices(['local', 'nomad']).default('local'))
    .option('--agent-command <cmd>', 'how Nomad clients start the agent runner (default: this node and checkout)')
    .addOption(new Option('--registry <registry>', 'register in Consul at $CONSUL_HTTP_ADDR and mirror run status to its KV').choices(['none', 'consul']).default('none'))
    .option('--leader', 'act as the controller: schedule only while holding the caravan/leader lock (needs --registry consul)', false)
    .action(async (runId: string, opts: RemoteModule.RemoteFlags & { from?: string; param: string[]; json: boolean; bus?: 'memory' | 'nats'; backend: 'local' | 'nomad'; agentCommand?: string; registry: 'none' | 'consul'; leader: boolean }) => {
      const client = await remote(opts);
      if (client === undefined) {
        exit = await (await runCommands()).retryCommand(runId, opts, io);
        return;
      }
      const local = [opts.bus !== undefined && '--bus', opts.backend !== 'local' && '--backend', opts.agentCommand !== undefined && '--agent-command', opts.registry !== 'none' && '--registry', opts.leader && '--leader'].filter((f) => f !== false);
      if (local.length > 0) throw new CaravanError('USAGE', `${local.join(', ')} ${local.length === 1 ? 'is' : 'are'} for a run in this process; with a controller, its own configuration decides`);
      exit = await (await remoteCommands()).remoteRetryCommand(client, runId, opts, io);
    }));

  remoteFlags(program
    .command('runs')
    .description('list runs recorded on the caravan/runs branch (and live here), or the controller\'s runs with --controller, newest first'))
    .argument('[workflow]', 'only runs of this workflow (as --workflow)')
    .option('-w, --workflow <name>', 'only runs of this workflow')
    .addOption(new Option('-s, --status <status>', 'only runs with this status').choices(RUN_STATUSES))
    .option('-n, --limit <n>', 'the newest n runs only (default: all)', (v: string) => positiveInt(v, '--limit'))
    .action(async (positional: string | undefined, opts: RemoteModule.RemoteFlags & { workflow?: string; status?: RunStatus; limit?: number }) => {
      if (positional !== undefined && opts.workflow !== undefined && positional !== opts.workflow) throw new CaravanError('USAGE', `runs takes one workflow: '${positional}' or --workflow '${opts.workflow}'`);
      const workflow = opts.workflow ?? positional;
      const query = { ...(workflow !== undefined ? { workflow } : {}), ...(opts.status !== undefined ? { status: opts.status } : {}), ...(opts.limit !== undefined ? { limit: opts.limit } : {}) };
      const client = await remote(opts);
      exit = client !== undefined ? await (await remoteCommands()).remoteRunsCommand(client, query, io) : await (await runCommands()).runsCommand(query, io);
    });

  remoteFlags(program
    .command('status')
    .description('show a run: status, tasks, attempts and errors'))
    .argument('<run-id>')
    .option('--json', 'print run.json', false)
    .action(async (runId: string, opts: RemoteModule.RemoteFlags & { json: boolean }) => {
      const client = await remote(opts);
      exit = client !== undefined ? await (await remoteCommands()).remoteStatusCommand(client, runId, io, opts.json) : await (await runCommands()).statusCommand(runId, io, opts.json);
    });

  remoteFlags(program
    .command('logs')
    .description("print a run's task logs"))
    .argument('<run-id>')
    .argument('[task]')
    .option('-t, --timestamps', 'prefix each line with the time it was written (ISO 8601, UTC)', false)
    .option('-f, --follow', 'for a run live on this machine, or in the controller (then name the task): keep printing new lines until it ends', false)
    .action(async (runId: string, task: string | undefined, opts: RemoteModule.RemoteFlags & { timestamps: boolean; follow: boolean }) => {
      const client = await remote(opts);
      exit = client !== undefined ? await (await remoteCommands()).remoteLogsCommand(client, runId, task, opts, io) : await (await runCommands()).logsCommand(runId, task, opts, io);
    });

  for (const [name, what] of [['approve', 'approve a waiting approval task of a live run'], ['reject', 'reject a waiting approval task of a live run']] as const) {
    remoteFlags(program
      .command(name)
      .description(what)
      .argument('<run-id>')
      .argument('<task>')
      .option('--reason <text>', 'why'))
      .action(async (runId: string, task: string, opts: RemoteModule.RemoteFlags & { reason?: string }) => {
        const client = await remote(opts);
        exit = client !== undefined ? await (await remoteCommands()).remoteControlCommand(client, name, runId, task, opts.reason, io) : await (await runCommands()).controlCommand(name, runId, task, opts.reason, io);
      });
  }
  for (const [name, what] of [['cancel', 'cancel a live run'], ['pause', 'stop starting new tasks in a live run'], ['unpause', 'start tasks again in a paused run']] as const) {
    remoteFlags(program
      .command(name)
      .description(what)
      .argument('<run-id>')
      .option('--reason <text>', 'why'))
      .action(async (runId: string, opts: RemoteModule.RemoteFlags & { reason?: string }) => {
        const client = await remote(opts);
        exit = client !== undefined ? await (await remoteCommands()).remoteControlCommand(client, name, runId, undefined, opts.reason, io) : await (await runCommands()).controlCommand(name, runId, undefined, opts.reason, io);
      });
  }

  program
    .command('approvals')
    .description('check GitOps approval files (approvals/<run-id>/<task>.yaml); apply sends them to live local runs')
    .argument('[action]', 'check or apply', 'check')
    .action(async (action: string) => {
      if (action !== 'check' && action !== 'apply') throw new CaravanError('USAGE', `approvals takes check or apply, not '${action}'`);
      exit = await approvalsCommand(action === 'apply', io);
    });

  program
    .command('pool')
    .description('manage agent pools on Nomad: pool scale <workflow> <pool> <count>')
    .argument('<action>', 'scale')
    .argument('<workflow>')
    .argument('<pool>')
    .argument('<count>')
    .option('--wait <seconds>', 'wait until that many agents run (exit 1 if not within the time)', (v: string) => positiveInt(v, '--wait'))
    .action(async (action: string, workflow: string, pool: string, count: string, opts: { wait?: number }) => {
      if (action !== 'scale') throw new CaravanError('USAGE', `pool takes scale, not '${action}'`);
      const { poolScaleCommand } = await import('./poolCommand.js');
      exit = await poolScaleCommand(workflow, pool, positiveInt(count, 'count'), io, opts.wait);
    });

  program
    .command('dev')
    .description('start NATS JetStream, Consul and Nomad in dev mode for Caravan (until Ctrl-C)')
    .option('--once', 'start, check and stop again', false)
    .option('--nats-port <n>', 'NATS port (default 4222)', (v: string) => positiveInt(v, '--nats-port'))
    .option('--consul-port <n>', 'Consul HTTP port (default 8500; the next three are used too)', (v: string) => positiveInt(v, '--consul-port'))
    .option('--nomad-port <n>', 'Nomad HTTP port (default 4646; the next two are used too)', (v: string) => positiveInt(v, '--nomad-port'))
    .option('--controller', 'also run a controller on them, watching branch main of the repository here: a commit runs its workflows', false)
    .option('--controller-port <n>', 'where the controller serves /health, /ready and the webhook (default 8080)', (v: string) => positiveInt(v, '--controller-port'))
    .action(async (opts: { once: boolean; natsPort?: number; consulPort?: number; nomadPort?: number; controller: boolean; controllerPort?: number }) => {
      const { devCommand } = await import('./devCommand.js');
      exit = await devCommand({ once: opts.once, controller: opts.controller, ...(opts.controllerPort !== undefined ? { controllerPort: opts.controllerPort } : {}), ports: { ...(opts.natsPort !== undefined ? { nats: opts.natsPort } : {}), ...(opts.consulPort !== undefined ? { consul: opts.consulPort } : {}), ...(opts.nomadPort !== undefined ? { nomad: opts.nomadPort } : {}) } }, io);
    });

  program
    .command('controller')
    .description('watch a branch: register changed Nomad jobs, fire push triggers, run workflows, record syncs (until SIGTERM)')
    .option('--repo <path|url>', 'the repository to watch: a local one, or an http(s) URL (mirrored under --state-dir; credentials from CARAVAN_GIT_* variables)', '.')
    .option('--state-dir <dir>', 'where remote repositories are mirrored (default ~/.local/state/caravan)')
    .option('--github-status <owner/name>', 'report each sync as a GitHub commit status on that repository (token: $GITHUB_TOKEN or --github-token-file)')
    .option('--github-token-file <file>', 'a file holding the GitHub token for --github-status')
    .option('--github-api-url <url>', 'the GitHub REST API for --github-status (GitHub Enterprise: https://<host>/api/v3)')
    .option('--branch <branch>', 'the branch to watch', 'main')
    .option('--interval <duration>', 'how often to look at the branch and the cluster', '30s')
    .option('--listen <host:port>', 'serve the HTTP API (/api/v1, docs/api.md), /openapi.json, /health, /ready and the GitHub push webhook here')
    .option('--tokens-file <file>', 'API bearer tokens: a YAML list of {name, token or tokenFile, role: viewer|operator|approver or a list} (also: $CARAVAN_API_TOKEN, one token named $CARAVAN_API_TOKEN_NAME or admin, roles operator and approver)')
    .option('--open-reads', 'let GET requests of the API in without a token (mutations still need one)', false)
    .option('--private-metrics', 'GET /metrics needs one of the API\'s bearer tokens (default: open, as Prometheus expects)', false)
    .option('--api-rate-limit <n>', 'API requests allowed per token (per address for open reads) and minute', (v: string) => positiveInt(v, '--api-rate-limit'), 600)
    .option('--advertise-url <url>', 'with --registry consul: the API address the leader advertises, for followers to name in their 503 (default: the --listen address)')
    .option('--workflows <dir>', 'workflow directory, relative to the repository root', 'workflows')
    .option('--prune', "deregister this repository's jobs whose workflow or task left Git", false)
    .option('--self-heal', 'put back jobs changed or stopped outside Git (a few tries, with backoff)', false)
    .addOption(new Option('--bus <bus>', 'where task events travel (default: memory; nats with --backend nomad)').choices(['memory', 'nats']))
    .addOption(new Option('--backend <backend>', 'where tasks run, and whether jobs are registered (nomad)').choices(['local', 'nomad']).default('local'))
    .addOption(new Option('--registry <registry>', 'mirror runs and sync reports to Consul KV at $CONSUL_HTTP_ADDR').choices(['none', 'consul']).default('none'))
    .option('--agent-command <cmd>', 'how Nomad clients start the agent runner')
    .option('--webhook-secret-file <file>', 'the GitHub webhook secret (default: $CARAVAN_WEBHOOK_SECRET; without one the webhook is off)')
    .option('--leader-ttl <duration>', 'with --registry consul: the leader session TTL; a follower takes over within about this long after the leader dies (at least 10s)', '15s')
    .action(async (opts: { repo: string; branch: string; interval: string; listen?: string; workflows: string; prune: boolean; selfHeal: boolean; bus?: 'memory' | 'nats'; backend: 'local' | 'nomad'; registry: 'none' | 'consul'; agentCommand?: string; webhookSecretFile?: string; leaderTtl: string; stateDir?: string; githubStatus?: string; githubTokenFile?: string; githubApiUrl?: string; tokensFile?: string; openReads: boolean; privateMetrics: boolean; apiRateLimit: number; advertiseUrl?: string }) => {
      const { controllerCommand } = await import('./controllerCommand.js');
      exit = await controllerCommand(opts, io);
    });

  program
    .command('demo')
    .description("run Caravan's main job on the embedded default, in a scratch repository, and show the audit log")
    .option('--keep', 'keep the scratch repository', false)
    .option('--gitops', 'show the GitOps loop instead: a controller watching the scratch repository runs a workflow on git commit', false)
    .action(async (opts: { keep: boolean; gitops: boolean }) => {
      exit = await demoCommand(io, opts);
    });

  try {
    await program.parseAsync([...argv], { from: 'user' });
    return exit;
  } catch (err) {
    return reportError(err, io);
  }
}

function reportError(err: unknown, io: Io): ExitCode {
  if (err instanceof CommanderError) {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return EXIT.OK;
    if (err.code === 'commander.help') return err.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
    // Commander has already printed the message.
    return EXIT.USAGE;
  }
  if (err instanceof CaravanError && err.isUserError) {
    io.stderr(`caravan: ${err.message}\n`);
    return exitCodeFor(err);
  }
  io.stderr(`caravan: internal error (please report it): ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  return EXIT.INTERNAL;
}
