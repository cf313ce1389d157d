import { execFileSync } from 'node:child_process';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EXIT, type ExitCode } from './exitCodes.js';
import { packageRoot } from '../packageRoot.js';
import { CaravanApp } from '../app/CaravanApp.js';
import { cliLogger } from './cliLogger.js';
import type { Io } from './Io.js';
import { RunProgress } from './RunProgress.js';

export const DEMO_WORKFLOW = 'quarterly-report';

/**
 * `caravan demo`: Caravan's main job on the embedded default, with nothing to set up. It
 * copies the bundled workflows into a fresh Git repository in a temporary directory, runs
 * one end to end with the local executor and the in-memory bus, and shows the audit trail
 * the run left on the `caravan/runs` branch.
 */
export async function demoCommand(io: Io, options: { keep?: boolean } = {}): Promise<ExitCode> {
  const dir = await mkdtemp(join(tmpdir(), 'caravan-demo-'));
  try {
    await cp(join(packageRoot(), 'workflows'), join(dir, 'workflows'), { recursive: true });
    const gitc = (...args: string[]): string => execFileSync('git', ['-c', 'user.name=Caravan demo', '-c', 'user.email=demo@caravan.invalid', '-c', 'commit.gpgsign=false', ...args], { cwd: dir, encoding: 'utf8' });
    gitc('init', '-q', '-b', 'main');
    gitc('add', 'workflows');
    gitc('commit', '-q', '-m', 'Add example workflows');
    io.stdout(`Caravan demo: running '${DEMO_WORKFLOW}' on the embedded default (local executor, in-memory bus, Git audit)\nin a scratch repository: ${dir}\n\n`);
    const progress = new RunProgress(io.isTTY === true ? 'tty' : 'plain', io.stdout);
    const app = new CaravanApp({ repoDir: dir, onEvent: (e, s) => progress.onEvent(e, s), logger: cliLogger(io.stderr) });
    let state;
    try {
      ({ state } = await (await app.start(DEMO_WORKFLOW, {})).done);
    } finally {
      await app.close();
    }
    progress.finish(state);
    io.stdout(`\n$ git log caravan/runs\n`);
    io.stdout(gitc('log', '--format=%h %s%n%n%b', 'caravan/runs'));
    io.stdout(`$ git notes --ref=caravan show HEAD\n${gitc('notes', '--ref=caravan', 'show', 'HEAD')}`);
    io.stdout(`\nThe run record is runs/${DEMO_WORKFLOW}/${state.runId}/ on branch caravan/runs${options.keep === true ? ` in ${dir}` : ''}.\n`);
    return state.status === 'succeeded' ? EXIT.OK : EXIT.FAILED;
  } finally {
    if (options.keep !== true) await rm(dir, { recursive: true, force: true });
  }
}
