/**
 * The hidden marker that identifies Caravan's plan comment on a pull request: the comment is
 * found by it and updated on every push, never posted again.
 */
export const PLAN_MARKER = '<!-- caravan-plan -->';

/** GitHub refuses an issue comment longer than this many characters. */
export const GITHUB_COMMENT_LIMIT = 65_536;

/**
 * The comment body: the marker, then the plan. A plan over `limit` keeps its header and as
 * many whole workflow sections (`### …`) as fit, so no code fence or `<details>` is left
 * open, and ends with a link to the job summary, which has the whole plan.
 */
export function planCommentBody(markdown: string, summaryUrl: string, limit = GITHUB_COMMENT_LIMIT): string {
  const full = `${PLAN_MARKER}\n${markdown}`;
  if (full.length <= limit) return full;
  const parts = markdown.split(/\n(?=### )/);
  const head = parts[0] ?? '';
  const sections = parts.slice(1);
  const where = summaryUrl !== '' ? `the [job summary](${summaryUrl})` : 'the job summary of this check';
  const note = (left: number): string =>
    `\n\n> [!NOTE]\n> This plan is longer than a GitHub comment allows: ${left} more workflow${left === 1 ? '' : 's'} not shown here. The whole plan is in ${where}.\n`;
  let body = `${PLAN_MARKER}\n${head.replace(/\n+$/, '')}`;
  let kept = 0;
  for (const s of sections) {
    const next = `${body}\n${s.replace(/\n+$/, '')}`;
    if (next.length + note(sections.length - kept - 1).length > limit) break;
    body = next;
    kept++;
  }
  const out = body + note(sections.length - kept);
  // A header alone over the limit (it never is: it is two lines) would still be refused.
  return out.length <= limit ? out : `${PLAN_MARKER}\n${note(sections.length).trim()}\n`;
}
