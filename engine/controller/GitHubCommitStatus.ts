import { request } from '@octokit/request';
import { CaravanError } from '../errors/CaravanError.js';
import type { Logger } from '../run/Logger.js';
import type { SyncReport } from './Controller.js';

export interface GitHubCommitStatusOptions {
  /** `owner/name` of the repository on GitHub. */
  repository: string;
  /** A token allowed to write commit statuses (from the environment or a file, never a flag). */
  token: string;
  /** The REST API's base URL (default https://api.github.com; GitHub Enterprise: https://<host>/api/v3). */
  apiUrl?: string;
  /** The status check's name (default caravan/sync). */
  context?: string;
  /** A link for the status (the controller's address, for example). */
  targetUrl?: string;
  logger: Logger;
}

const REPOSITORY = /^[A-Za-z0-9_.-]{1,100}\/[A-Za-z0-9_.-]{1,100}$/;

/**
 * Reports each sync as a GitHub commit status on the synced commit: `success` when everything
 * was applied, `failure` when a workflow was invalid or a job failed, `error` when the sync
 * could not be done. The Nomad shop's "deployed" badge, and a check a branch rule can require.
 */
export class GitHubCommitStatus {
  private readonly request: typeof request;

  constructor(private readonly options: GitHubCommitStatusOptions) {
    if (!REPOSITORY.test(options.repository)) throw new CaravanError('USAGE', `--github-status expects owner/name, got '${options.repository}'`, { data: { repository: options.repository } });
    if (options.token === '') throw new CaravanError('USAGE', 'a GitHub token is needed to report commit statuses: set GITHUB_TOKEN or --github-token-file');
    this.request = request.defaults({
      baseUrl: (options.apiUrl ?? 'https://api.github.com').replace(/\/+$/, ''),
      headers: { authorization: `token ${options.token}`, 'x-github-api-version': '2022-11-28', 'user-agent': 'caravan-controller' },
    });
  }

  /** Posts the status of one sync; a failure is logged (the sync itself stands), never thrown. */
  async report(r: SyncReport): Promise<void> {
    const [owner, repo] = this.options.repository.split('/') as [string, string];
    const state = r.status === 'synced' ? 'success' : r.status === 'partial' ? 'failure' : 'error';
    const description = describe(r);
    try {
      await this.request('POST /repos/{owner}/{repo}/statuses/{sha}', {
        owner,
        repo,
        sha: r.commit,
        state,
        context: this.options.context ?? 'caravan/sync',
        description,
        ...(this.options.targetUrl !== undefined ? { target_url: this.options.targetUrl } : {}),
      });
      this.options.logger.info('commit status reported to GitHub', { commit: r.commit, state });
    } catch (e) {
      // Only the status and message: the error object also carries the request, headers included.
      const status = (e as { status?: number }).status;
      this.options.logger.error('could not report the commit status to GitHub', { commit: r.commit, state, status, error: e instanceof Error ? e.message : String(e) });
    }
  }
}

/** GitHub keeps 140 characters of a description. */
function describe(r: SyncReport): string {
  const text = r.status === 'failed'
    ? `sync failed: ${r.error ?? 'unknown error'}`
    : `${r.status}: ${r.jobs.created.length} created, ${r.jobs.updated.length} updated, ${r.jobs.pruned.length} pruned, ${r.jobs.failed.length} failed${r.invalid.length > 0 ? `, ${r.invalid.length} invalid` : ''}`;
  return text.length > 140 ? `${text.slice(0, 139)}…` : text;
}
