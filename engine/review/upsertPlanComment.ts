import { Octokit } from '@octokit/rest';
import { CaravanError } from '../errors/CaravanError.js';
import { PLAN_MARKER } from './planCommentBody.js';

export interface PlanCommentTarget {
  apiUrl: string;
  token: string;
  owner: string;
  repo: string;
  pullRequest: number;
}

export interface UpsertResult {
  action: 'created' | 'updated' | 'unchanged';
  id: number;
  url: string;
}

/** The small part of Octokit this module uses: easy to see, and to serve from a test. */
export function githubClient(apiUrl: string, token: string): Octokit {
  if (token === '') throw new CaravanError('USAGE', 'GITHUB_TOKEN is not set: the plan comment needs a token with pull-requests: write');
  return new Octokit({ auth: token, baseUrl: apiUrl, userAgent: 'caravan-review', request: { retries: 0 } });
}

/**
 * Posts the plan as the pull request's one Caravan comment: the comment whose body starts
 * with the marker is updated (found across every page of comments), and only when there is
 * none is one created. A body that is already up to date is left alone.
 */
export async function upsertPlanComment(target: PlanCommentTarget, body: string): Promise<UpsertResult> {
  if (!body.startsWith(PLAN_MARKER)) throw new CaravanError('INTERNAL', 'a plan comment must start with the marker, or the next push could not find it');
  const octokit = githubClient(target.apiUrl, target.token);
  const where = { owner: target.owner, repo: target.repo };
  try {
    const comments = await octokit.paginate(octokit.rest.issues.listComments, { ...where, issue_number: target.pullRequest, per_page: 100 });
    // The oldest one wins: should two ever exist, the same one is updated every time.
    const mine = comments.find((c) => (c.body ?? '').startsWith(PLAN_MARKER));
    if (mine !== undefined) {
      if (mine.body === body) return { action: 'unchanged', id: mine.id, url: mine.html_url };
      const r = await octokit.rest.issues.updateComment({ ...where, comment_id: mine.id, body });
      return { action: 'updated', id: r.data.id, url: r.data.html_url };
    }
    const r = await octokit.rest.issues.createComment({ ...where, issue_number: target.pullRequest, body });
    return { action: 'created', id: r.data.id, url: r.data.html_url };
  } catch (e) {
    if (e instanceof CaravanError) throw e;
    // Only the status and message: the error object also carries the request, headers included.
    const status = (e as { status?: number }).status;
    throw new CaravanError('GITHUB_API', `could not post the plan comment on pull request #${target.pullRequest}: ${status !== undefined ? `GitHub answered ${status}: ` : ''}${e instanceof Error ? e.message : String(e)}`, { data: { status, pullRequest: target.pullRequest } });
  }
}
