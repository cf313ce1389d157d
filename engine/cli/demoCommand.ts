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
export async function demoCommand(io: Io, options: { keep?: boolean; gitops?: boolean } = {}): Promise<ExitCode> {
  if (options.gitops === true) return gitopsDemo(io, options);
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

/** The workflow the GitOps demo pushes to: it runs when anything under site/ changes. */
const SITE_WORKFLOW = `apiVersion: caravan/v1
kind: Workflow
metadata:
  name: publish-site
  description: Builds and checks the site on every push that changes it.
spec:
  triggers:
    - push: { branches: [main], paths: ["site/**"] }
  tasks:
    - { name: build, run: "mkdir -p out && cp site/*.html out/ && echo built $(ls out | wc -l) pages" }
    - { name: check, needs: [build], run: "grep -q '<h1>' out/index.html && echo index has a title" }
`;

/**
 * `caravan demo --gitops`: the GitOps loop on the embedded default. A controller watches a
 * scratch repository; a commit that changes a file a workflow's push trigger names starts
 * a run with no other command; the run and the controller's sync report land on the audit
 * branch.
 */
async function gitopsDemo(io: Io, options: { keep?: boolean }): Promise<ExitCode> {
  const dir = await mkdtemp(join(tmpdir(), 'caravan-gitops-demo-'));
  const { writeFile, mkdir } = await import('node:fs/promises');
  const { startController } = await import('../api/startController.js');
  const { noopLogger } = await import('../run/Logger.js');
  const gitc = (...args: string[]): string => execFileSync('git', ['-c', 'user.name=Caravan demo', '-c', 'user.email=demo@caravan.invalid', '-c', 'commit.gpgsign=false', ...args], { cwd: dir, encoding: 'utf8' });
  let controller: Awaited<ReturnType<typeof startController>> | undefined;
  try {
    gitc('init', '-q', '-b', 'main');
    await mkdir(join(dir, 'workflows'));
    await mkdir(join(dir, 'site'));
    await writeFile(join(dir, 'workflows', 'publish-site.yaml'), SITE_WORKFLOW);
    await writeFile(join(dir, 'site', 'index.html'), '<h1>Hello</h1>\n');
    await writeFile(join(dir, '.gitignore'), 'out/\n');
    gitc('add', '-A');
    gitc('commit', '-q', '-m', 'Add the publish-site workflow');
    io.stdout(`Caravan GitOps demo: a controller watches branch main of a scratch repository\n(${dir}) on the embedded default: local executor, in-memory bus, Git audit.\n\n`);
    const progress = new RunProgress('plain', io.stdout);
    let finished: (status: string) => void = () => undefined;
    const over = new Promise<string>((r) => (finished = r));
    let pushed: (runId: string) => void = () => undefined;
    const started = new Promise<string>((r) => (pushed = r));
    controller = await startController({
      repoDir: dir,
      intervalMs: 1000,
      logger: noopLogger,
      onSync: (report) => {
        if (report.runs.length > 0) pushed(report.runs[0]!.runId);
      },
      app: {
        onEvent: (e, state) => {
          progress.onEvent(e, state);
          if (e.type === 'run.succeeded' || e.type === 'run.failed' || e.type === 'run.cancelled') finished(e.type.slice(4));
        },
      },
    });
    io.stdout(`$ caravan controller --repo ${dir} --interval 1s   (running in this process)\n`);
    io.stdout(`$ echo '<h1>Hello, GitOps</h1>' > site/index.html && git commit -am 'Retitle the site'\n\n`);
    await writeFile(join(dir, 'site', 'index.html'), '<h1>Hello, GitOps</h1>\n');
    gitc('commit', '-q', '-am', 'Retitle the site');
    // No command starts the run: the controller's next look at the branch does.
    const runId = await withTimeout(started, 30_000, 'the controller did not start the pushed run within 30 s');
    const status = await withTimeout(over, 120_000, `run ${runId} did not finish within 2 minutes`);
    await controller.stop();
    controller = undefined;
    io.stdout(`\n$ git log caravan/runs\n`);
    io.stdout(gitc('log', '--format=%h %s', 'caravan/runs'));
    io.stdout(`\nRun records are under runs/, sync reports (what the controller applied, per commit) under syncs/,\non branch caravan/runs${options.keep === true ? ` in ${dir}` : ''}. Point a controller at your own repository: caravan controller --repo <path>\n`);
    return status === 'succeeded' ? EXIT.OK : EXIT.FAILED;
  } finally {
    await controller?.stop();
    if (options.keep !== true) await rm(dir, { recursive: true, force: true });
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms)))]).finally(() => clearTimeout(timer));
}
