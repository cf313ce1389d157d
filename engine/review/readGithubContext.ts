import { CaravanError } from '../errors/CaravanError.js';
import { readBoundedFile } from '../spec/readBoundedFile.js';

/** What `caravan review --github` needs to know about the Actions run it is in. */
export interface GithubContext {
  /** The REST API's base URL ($GITHUB_API_URL; GitHub Enterprise: https://<host>/api/v3). */
  apiUrl: string;
  owner: string;
  repo: string;
  /** The token comments are posted with ($GITHUB_TOKEN); never printed. Empty when unset. */
  token: string;
  /** Set for pull_request and pull_request_target events. */
  pullRequest?: { number: number; baseSha: string; headSha: string };
  /** The run's page, where the job summary is shown (empty when the variables are missing). */
  runUrl: string;
}

/** Event payloads are a few kilobytes; a huge one is refused rather than parsed. */
const MAX_EVENT_BYTES = 8 * 1024 * 1024;

const NAME = /^[A-Za-z0-9_.-]{1,100}$/;
const SHA = /^[0-9a-f]{40}(?:[0-9a-f]{24})?$/;

function fail(field: string, message: string): never {
  throw new CaravanError('USAGE', `${field}: ${message}`, { data: { field } });
}

function httpUrl(field: string, value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    fail(field, `not a URL: '${value}'`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') fail(field, `not an http(s) URL: '${value}'`);
  return value.replace(/\/+$/, '');
}

/**
 * Reads the run's context from the variables GitHub Actions sets (GITHUB_REPOSITORY,
 * GITHUB_EVENT_NAME, GITHUB_EVENT_PATH, GITHUB_API_URL, GITHUB_SERVER_URL, GITHUB_RUN_ID,
 * GITHUB_TOKEN). Everything is checked before use: the payload is input like any other, and
 * its values end up in URLs and in `git` revisions.
 */
export async function readGithubContext(env: NodeJS.ProcessEnv): Promise<GithubContext> {
  const repository = env['GITHUB_REPOSITORY'] ?? '';
  const [owner, repo, ...rest] = repository.split('/');
  if (owner === undefined || repo === undefined || rest.length > 0 || !NAME.test(owner) || !NAME.test(repo)) fail('GITHUB_REPOSITORY', `expected owner/name, got '${repository}'`);
  const apiUrl = httpUrl('GITHUB_API_URL', env['GITHUB_API_URL'] ?? 'https://api.github.com');
  const serverUrl = env['GITHUB_SERVER_URL'] !== undefined ? httpUrl('GITHUB_SERVER_URL', env['GITHUB_SERVER_URL']) : 'https://github.com';
  const runId = env['GITHUB_RUN_ID'] ?? '';
  const runUrl = /^\d{1,20}$/.test(runId) ? `${serverUrl}/${owner}/${repo}/actions/runs/${runId}` : '';
  const context: GithubContext = { apiUrl, owner, repo, token: env['GITHUB_TOKEN'] ?? '', runUrl };
  const event = env['GITHUB_EVENT_NAME'] ?? '';
  if (event !== 'pull_request' && event !== 'pull_request_target') return context;
  const path = env['GITHUB_EVENT_PATH'];
  if (path === undefined || path === '') fail('GITHUB_EVENT_PATH', `not set, but GITHUB_EVENT_NAME is ${event}`);
  const read = await readBoundedFile(path, MAX_EVENT_BYTES);
  if (!read.ok) fail('GITHUB_EVENT_PATH', `${path}: ${read.refusal.message}`);
  let payload: unknown;
  try {
    payload = JSON.parse(read.bytes.toString('utf8'));
  } catch (e) {
    fail('GITHUB_EVENT_PATH', `${path} is not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  const pr = (payload as { pull_request?: { number?: unknown; base?: { sha?: unknown }; head?: { sha?: unknown } } } | null)?.pull_request;
  const number = pr?.number;
  const baseSha = pr?.base?.sha;
  const headSha = pr?.head?.sha;
  if (typeof number !== 'number' || !Number.isSafeInteger(number) || number < 1) fail(`${path}: pull_request.number`, 'missing or not a positive whole number');
  if (typeof baseSha !== 'string' || !SHA.test(baseSha)) fail(`${path}: pull_request.base.sha`, 'missing or not a commit id');
  if (typeof headSha !== 'string' || !SHA.test(headSha)) fail(`${path}: pull_request.head.sha`, 'missing or not a commit id');
  return { ...context, pullRequest: { number, baseSha, headSha } };
}
