import { join } from 'node:path';
import * as core from '@actions/core';
import { formatPlan } from '../compile/formatPlan.js';
import type { Plan } from '../compile/planChanges.js';
import { CaravanError } from '../errors/CaravanError.js';
import { planRevisions } from '../gitops/planRevisions.js';
import { findRepoRoot } from '../gitops/readTreeAtRef.js';
import { planCommentBody } from '../review/planCommentBody.js';
import { readGithubContext } from '../review/readGithubContext.js';
import { upsertPlanComment, type UpsertResult } from '../review/upsertPlanComment.js';
import { formatGithubAnnotations, summaryLine } from '../spec/formatGithubAnnotations.js';
import { validateWorkflows, type ValidationReport } from '../spec/validateWorkflows.js';
import { EXIT, type ExitCode } from './exitCodes.js';
import { stdoutFor } from './forTerminal.js';
import type { Io } from './Io.js';
import { renderCommand } from './renderCommand.js';

export interface ReviewOptions {
  /** The revision to plan against (default: the pull request's base commit). */
  base?: string;
  /** Workflow directory, relative to the repository root. */
  workflows: string;
  /** Run `render --check` against this directory; undefined skips it (a repository that keeps no rendered jobs). */
  renderCheck?: string;
  maxAnnotations: number;
  /** Post or update the pull request comment (default: yes, on a pull request). */
  comment: boolean;
  /** Read each job's JobModifyIndex from this Nomad cluster. */
  nomadAddr?: string;
}

const EMPTY: ValidationReport = { files: [], diagnostics: [], errorCount: 0, warningCount: 0 };

/**
 * `caravan review --github`: the pull-request check in one step. Annotates invalid lines,
 * checks the rendered jobs, plans the Nomad changes against the pull request's base, writes
 * everything to the job summary and keeps one plan comment on the pull request up to date.
 * The exit status is the check's verdict: 2 invalid workflows, 1 stale rendered jobs, 69 the
 * comment could not be posted, 0 otherwise; the last line says why.
 */
export async function reviewCommand(options: ReviewOptions, io: Io, env: NodeJS.ProcessEnv = process.env): Promise<ExitCode> {
  const ctx = await readGithubContext(env);
  const root = await findRepoRoot(io.cwd);
  const dir = options.workflows.replace(/^\.\/+|\/+$/g, '');
  const out = stdoutFor(io);
  const verdict: string[] = [];
  let exit: ExitCode = EXIT.OK;

  // 1. validate, as annotations on the pull request's lines.
  const report = await validateWorkflows([join(root, dir)], root).catch((e: unknown) => {
    if (e instanceof CaravanError && e.code === 'PATH_NOT_FOUND') return EMPTY;
    throw e;
  });
  const annotations = formatGithubAnnotations(report, options.maxAnnotations);
  out(annotations.commands);
  const valid = report.errorCount === 0;
  verdict.push(summaryLine(report));
  if (!valid) exit = EXIT.INVALID;
  const status = [`- validate: ${summaryLine(report)}`];

  // 2. render --check (its own diagnostics would repeat validate's, so only for valid workflows).
  if (options.renderCheck !== undefined && valid) {
    let text = '';
    const code = await renderCommand([dir], { out: options.renderCheck, check: true, compile: {} }, { ...io, cwd: root, stdout: (t) => { text += t; } });
    out(text);
    const last = text.trimEnd().split('\n').at(-1) ?? '';
    status.push(`- render --check: ${last}`);
    verdict.push(code === EXIT.OK ? `${options.renderCheck}/ up to date` : `${options.renderCheck}/ out of date`);
    if (code !== EXIT.OK && exit === EXIT.OK) exit = code;
  }

  // 3. plan against the pull request's base.
  const base = options.base ?? ctx.pullRequest?.baseSha;
  let planMarkdown: string;
  if (base === undefined) {
    planMarkdown = 'No plan: this is not a pull request and no `--base` was given.\n';
  } else if (!valid) {
    planMarkdown = `## Caravan plan: not made\n\nThe workflows are invalid: ${summaryLine(report)}. The annotations on the changed files say where; the plan follows once they are fixed.\n`;
    verdict.push('plan not made');
  } else {
    const outcome = await planRevisions({ cwd: root, base, workflows: dir });
    if (outcome.ok) {
      let plan: Plan = { ...outcome.plan, head: ctx.pullRequest !== undefined ? `pull request #${ctx.pullRequest.number} at \`${ctx.pullRequest.headSha}\`` : outcome.plan.head };
      if (options.nomadAddr !== undefined) {
        const [{ NomadClient }, { checkPlanAgainstCluster }] = await Promise.all([import('../nomad/NomadClient.js'), import('../nomad/readJobIndexes.js')]);
        plan = await checkPlanAgainstCluster(plan, new NomadClient({ address: options.nomadAddr }));
      }
      planMarkdown = formatPlan(plan, 'markdown');
      const s = plan.summary;
      verdict.push(`plan: ${s.create} to create, ${s.update} to update, ${s.destroy} to destroy`);
    } else {
      // The base is what is merged into, not what this pull request changes: said, not failed.
      planMarkdown = `## Caravan plan: not made\n\nCould not plan against \`${base}\`: ${outcome.message}.\n\n\`\`\`\n${outcome.lines.join('').trimEnd()}\n\`\`\`\n`;
      verdict.push('plan not made (base invalid)');
    }
  }

  // 4. the job summary: the whole plan, the full list of problems.
  const checks = `${status.join('\n')}\n`;
  const summary = [planMarkdown.trimEnd(), '', '### Checks', '', checks, annotations.summary].join('\n').trimEnd() + '\n';
  if ((env['GITHUB_STEP_SUMMARY'] ?? '') !== '') await core.summary.addRaw(summary, true).write();

  // 5. the pull request comment, one per pull request, updated on every push.
  let posted: UpsertResult | undefined;
  if (options.comment && ctx.pullRequest !== undefined) {
    const body = planCommentBody(insertChecks(planMarkdown, checks), ctx.runUrl);
    try {
      posted = await upsertPlanComment({ apiUrl: ctx.apiUrl, token: ctx.token, owner: ctx.owner, repo: ctx.repo, pullRequest: ctx.pullRequest.number }, body);
      verdict.push(`comment ${posted.action}`);
    } catch (e) {
      if (!(e instanceof CaravanError) || e.code !== 'GITHUB_API') throw e;
      // A pull request from a fork gets a read-only token: the check still stands on its own.
      const forbidden = e.data['status'] === 403;
      out(`::${forbidden ? 'warning' : 'error'} title=Caravan plan comment::${e.message.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A')}\n`);
      verdict.push(forbidden ? 'comment not posted (no permission)' : 'comment not posted');
      if (!forbidden && exit === EXIT.OK) exit = EXIT.UNAVAILABLE;
    }
  }

  const line = `caravan review: ${verdict.join('; ')}`;
  if ((env['GITHUB_OUTPUT'] ?? '') !== '') {
    core.setOutput('summary', line);
    core.setOutput('comment-url', posted?.url ?? '');
  }
  out(line + '\n');
  return exit;
}

/** The check results go under the plan's title, before the first workflow: cutting a long plan keeps them. */
function insertChecks(planMarkdown: string, checks: string): string {
  const i = planMarkdown.indexOf('\n### ');
  const head = i < 0 ? planMarkdown.trimEnd() : planMarkdown.slice(0, i).trimEnd();
  const rest = i < 0 ? '' : planMarkdown.slice(i);
  return `${head}\n\n${checks}${rest.replace(/^\n*/, '\n')}`.trimEnd() + '\n';
}
