import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { RemoteRepo } from '../gitops/RemoteRepo.js';
import { CaravanError } from '../errors/CaravanError.js';
import { findRepoRoot, requireBranch } from '../gitops/readTreeAtRef.js';
import { parseDuration } from '../spec/parseDuration.js';
import { EXIT, type ExitCode } from './exitCodes.js';
import type { Io } from './Io.js';

export interface ControllerCommandOptions {
  repo: string;
  branch: string;
  interval: string;
  listen?: string;
  workflows: string;
  prune: boolean;
  selfHeal: boolean;
  backend: 'local' | 'nomad';
  /** Default: memory, or nats with --backend nomad (tasks on Nomad report over NATS). */
  bus?: 'memory' | 'nats';
  registry: 'none' | 'consul';
  agentCommand?: string;
  webhookSecretFile?: string;
  leaderTtl: string;
  stateDir?: string;
  githubStatus?: string;
  githubApiUrl?: string;
  githubTokenFile?: string;
  tokensFile?: string;
  openReads?: boolean;
  privateMetrics?: boolean;
  apiRateLimit?: number;
  advertiseUrl?: string;
}

/**
 * `caravan controller`: watches a branch, reconciles Nomad, fires push triggers and runs the
 * workflows, until SIGTERM (what Nomad sends) or Ctrl-C: then the sync under way finishes,
 * runs are handed over to the next controller, and it exits 0. JSON log lines on stderr.
 */
export async function controllerCommand(options: ControllerCommandOptions, io: Io): Promise<ExitCode> {
  const intervalMs = parseDuration(options.interval);
  if (intervalMs === undefined || intervalMs < 1000) throw new CaravanError('USAGE', `--interval expects a duration of at least 1s such as 30s or 2m, got '${options.interval}'`, { data: { interval: options.interval } });
  const listen = options.listen !== undefined ? parseListen(options.listen) : undefined;
  const ttlMs = parseDuration(options.leaderTtl);
  if (ttlMs === undefined || ttlMs < 10_000 || ttlMs > 86_400_000) throw new CaravanError('USAGE', `--leader-ttl expects a duration from 10s to 24h (Consul's session limits), got '${options.leaderTtl}'`, { data: { leaderTtl: options.leaderTtl } });
  const remoteUrl = /^https?:\/\//i.test(options.repo) ? options.repo : undefined;
  const repoDir = remoteUrl !== undefined
    ? RemoteRepo.mirrorDir(resolve(io.cwd, options.stateDir ?? join(homedir(), '.local', 'state', 'caravan')), remoteUrl)
    : await findRepoRoot(resolve(io.cwd, options.repo)).catch((e: unknown) => {
      throw new CaravanError('NOT_A_REPOSITORY', `${options.repo} is not a Git repository (give a local repository, or an http(s) URL to watch a remote one)`, { cause: e, data: { repo: options.repo } });
    });
  // A remote's branches are known after its first fetch; a local one's now.
  if (remoteUrl === undefined) await requireBranch(repoDir, options.branch);
  const githubStatus = options.githubStatus !== undefined ? { repository: options.githubStatus, token: await readGitHubToken(options.githubTokenFile), ...(options.githubApiUrl !== undefined ? { apiUrl: options.githubApiUrl } : {}) } : undefined;
  const webhookSecret = await readSecret(options.webhookSecretFile);
  if (listen === undefined && (options.tokensFile !== undefined || options.openReads === true || options.privateMetrics === true || options.advertiseUrl !== undefined)) {
    throw new CaravanError('USAGE', '--tokens-file, --open-reads, --private-metrics and --advertise-url configure the HTTP listener: give --listen host:port too');
  }
  if (options.advertiseUrl !== undefined && !/^https?:\/\/[^\s/]+(\/\S*)?$/i.test(options.advertiseUrl)) throw new CaravanError('USAGE', `--advertise-url expects an http(s) URL, got '${options.advertiseUrl}'`, { data: { advertiseUrl: options.advertiseUrl } });
  const { ApiTokens } = await import('../api/ApiTokens.js');
  const tokens = listen !== undefined ? await ApiTokens.load(options.tokensFile !== undefined ? resolve(io.cwd, options.tokensFile) : undefined) : undefined;
  const { createLogger } = await import('../telemetry/createLogger.js');
  const { startController } = await import('../api/startController.js');
  const logger = createLogger({ name: 'caravan-controller', secrets: tokens?.secrets() ?? [] });
  if (tokens !== undefined && tokens.size === 0) logger.warn('the HTTP API has no tokens: every request to /api/v1 is refused (401) unless reads are open; give --tokens-file or CARAVAN_API_TOKEN', { openReads: options.openReads === true });
  let deposed: (e: Error) => void = () => undefined;
  const lost = new Promise<Error>((r) => (deposed = r));
  const running = await startController({
    onDeposed: (e) => deposed(e),
    ...(remoteUrl !== undefined ? { remote: { url: remoteUrl } } : {}),
    ...(githubStatus !== undefined ? { githubStatus } : {}),
    repoDir,
    branch: options.branch,
    workflowsDir: options.workflows,
    intervalMs,
    ...(listen !== undefined ? { listen } : {}),
    ...(webhookSecret !== undefined ? { webhookSecret } : {}),
    ...(options.privateMetrics === true ? { metricsOpen: false } : {}),
    ...(tokens !== undefined ? { api: { tokens, openReads: options.openReads === true, rateLimit: { max: options.apiRateLimit ?? 600, windowMs: 60_000 }, ...(options.advertiseUrl !== undefined ? { advertiseUrl: options.advertiseUrl } : {}) } } : {}),
    prune: options.prune,
    selfHeal: options.selfHeal,
    backend: options.backend,
    bus: options.bus ?? (options.backend === 'nomad' ? 'nats' : 'memory'),
    ...(options.registry === 'consul' ? { registry: 'consul' as const, leader: { ttlMs } } : {}),
    ...(options.agentCommand !== undefined ? { agentCommand: options.agentCommand.split(/\s+/).filter((a) => a !== '') } : {}),
    logger,
  });
  io.stdout(`caravan controller watching ${remoteUrl !== undefined ? `${running.controller.watching()} (mirror ${repoDir})` : repoDir} (branch ${options.branch}, every ${options.interval})${running.server !== undefined ? `; listening on ${running.server.url}` : ''}${options.registry === 'consul' ? '; campaigning for the leader lock in Consul' : ''}\n`);
  const signal = new Promise<NodeJS.Signals>((r) => {
    process.once('SIGTERM', () => r('SIGTERM'));
    process.once('SIGINT', () => r('SIGINT'));
  });
  const ended = await Promise.race([signal, lost]);
  if (ended instanceof Error) {
    await running.stop();
    // Deposed: exit so that Nomad (or whoever runs it) starts it again, as a follower.
    io.stderr(`caravan: ${ended.message}\n`);
    return EXIT.TEMPFAIL;
  }
  io.stdout(`${ended}: finishing the sync under way and handing runs over\n`);
  await running.stop();
  return EXIT.OK;
}

function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = m !== null ? Number(m[3]) : NaN;
  if (m === null || port > 65535) throw new CaravanError('USAGE', `--listen expects host:port such as 127.0.0.1:8080, got '${text}'`, { data: { listen: text } });
  return { host: m[1] ?? m[2]!, port };
}

/** The GitHub token for commit statuses: a file named by the flag, or GITHUB_TOKEN. Never a flag's value. */
async function readGitHubToken(file: string | undefined): Promise<string> {
  if (file !== undefined) {
    try {
      return (await readFile(file, 'utf8')).replace(/\r?\n$/, '');
    } catch (e) {
      throw new CaravanError('PATH_NOT_FOUND', `cannot read the GitHub token file ${file}: ${(e as Error).message}`, { cause: e, data: { file } });
    }
  }
  const token = process.env['GITHUB_TOKEN'];
  if (token === undefined || token === '') throw new CaravanError('USAGE', '--github-status needs a token: set GITHUB_TOKEN or give --github-token-file');
  return token;
}

/** The webhook secret: a file named by the flag (one trailing newline dropped), or CARAVAN_WEBHOOK_SECRET. */
async function readSecret(file: string | undefined): Promise<string | undefined> {
  if (file !== undefined) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      throw new CaravanError('PATH_NOT_FOUND', `cannot read the webhook secret file ${file}: ${(e as Error).message}`, { cause: e, data: { file } });
    }
    const secret = text.replace(/\r?\n$/, '');
    if (secret === '') throw new CaravanError('USAGE', `the webhook secret file ${file} is empty`, { data: { file } });
    return secret;
  }
  const env = process.env['CARAVAN_WEBHOOK_SECRET'];
  return env !== undefined && env !== '' ? env : undefined;
}
