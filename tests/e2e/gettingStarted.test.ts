import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { consulBinary } from '../harness/consulAgent.js';
import { nomadBinary } from '../harness/nomadAgent.js';
import { hasBinary } from '../harness/natsServer.js';
import { descendants, isAlive } from '../harness/processTree.js';
import { until } from '../harness/until.js';

/**
 * Runs docs/getting-started.md: every ```sh block, in order, in a scratch directory, as a
 * reader would type them. A `<!-- test: ... -->` comment just before a block says how:
 *   background until="text"           a second terminal: started and left running once its
 *                                       output shows the text; stopped with Ctrl-C (SIGINT) at the end
 *   expect="text"                     the block's output must contain the text
 *   retry timeout=N expect="text"     run again until the output contains the text (a reader
 *                                       waiting for something to happen), at most N seconds
 * Blocks run with `bash -e`; the working directory and exported variables carry over from one
 * block to the next, as in one terminal. The only input is CARAVAN_REPO, the address the page
 * asks the reader to set: here, this checkout (its committed HEAD).
 */

interface Block {
  line: number;
  code: string;
  directive: Directive;
}

interface Directive {
  background?: string;
  expect?: string;
  retrySeconds?: number;
}

function parseDirective(text: string): Directive {
  const d: Directive = {};
  for (const [, key, quoted, bare] of text.matchAll(/(\w+)(?:="((?:[^"\\]|\\.)*)"|=(\S+))?/g)) {
    const value = (quoted ?? bare ?? '').replace(/\\"/g, '"');
    if (key === 'background') d.background = '';
    else if (key === 'until') d.background = value;
    else if (key === 'expect') d.expect = value;
    else if (key === 'retry') d.retrySeconds = d.retrySeconds ?? 60;
    else if (key === 'timeout') d.retrySeconds = Number(value);
    else throw new Error(`unknown test directive '${key}' in docs/getting-started.md`);
  }
  return d;
}

/** The page's shell blocks with their directives. */
export function shellBlocks(markdown: string): Block[] {
  const blocks: Block[] = [];
  const lines = markdown.split('\n');
  let pending: Directive = {};
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const comment = /^<!-- test: (.*) -->$/.exec(line);
    if (comment !== null) {
      pending = parseDirective(comment[1]!);
    } else if (line.startsWith('```sh')) {
      const start = i + 1;
      const code: string[] = [];
      for (i++; i < lines.length && lines[i] !== '```'; i++) code.push(lines[i]!);
      blocks.push({ line: start, code: code.join('\n'), directive: pending });
      pending = {};
    } else if (line.trim() !== '' && Object.keys(pending).length > 0) {
      throw new Error(`docs/getting-started.md:${i + 1}: a test directive must be followed by a sh block`);
    }
  }
  return blocks;
}

const servers = hasBinary('nats-server') && consulBinary() !== undefined && nomadBinary() !== undefined;
const ci = process.env['CI'] === 'true';

describe('docs/getting-started.md', () => {
  const background: { child: ChildProcess; seen: Set<number> }[] = [];
  let scratch = '';

  afterAll(async () => {
    // Ctrl-C in each second terminal, newest first (the controller before the servers it uses).
    for (const b of background.reverse()) {
      for (const pid of await descendants(b.child.pid!)) b.seen.add(pid);
      if (b.child.exitCode === null && b.child.signalCode === null) {
        process.kill(-b.child.pid!, 'SIGINT');
        await until('a background command to stop on Ctrl-C', () => b.child.exitCode !== null || b.child.signalCode !== null, 90_000, 200).catch(() => process.kill(-b.child.pid!, 'SIGKILL'));
      }
      for (const pid of b.seen) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    }
    if (scratch !== '') await rm(scratch, { recursive: true, force: true });
  }, 180_000);

  it('parses: every directive sits on a sh block', async () => {
    const blocks = shellBlocks(await readFile('docs/getting-started.md', 'utf8'));
    expect(blocks.length).toBeGreaterThan(8);
    expect(blocks.filter((b) => b.directive.background !== undefined).map((b) => b.code)).toEqual(['npx caravan dev', expect.stringContaining('npx caravan controller')]);
  });

  // Needs the three servers; under CI their absence is a failure, not a skip.
  it.skipIf(!servers && !ci)('runs from a fresh clone to a controller that runs a workflow on commit', async () => {
    const blocks = shellBlocks(await readFile('docs/getting-started.md', 'utf8'));
    scratch = await mkdtemp(join(tmpdir(), 'caravan-getting-started-'));
    const state = join(scratch, '.state');
    await writeFile(join(state + '.cwd'), scratch);
    await writeFile(join(state + '.env'), '');
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      CARAVAN_REPO: process.cwd(),
      // Keep the servers' data and the npm log out of the tester's home.
      CARAVAN_DEV_DIR: join(scratch, '.dev'),
      // vitest's own variables would leak into the reader's shell otherwise.
      VITEST: undefined,
      VITEST_POOL_ID: undefined,
      VITEST_WORKER_ID: undefined,
      NODE_OPTIONS: undefined,
    };
    for (const block of blocks) {
      const where = `docs/getting-started.md:${block.line}`;
      // One terminal: start where the last block ended, with what it exported.
      const script = `cd "$(cat '${state}.cwd')"\n. '${state}.env'\n${block.code}\npwd > '${state}.cwd'\nexport -p > '${state}.env'\n`;
      if (block.directive.background !== undefined) {
        // A second terminal: its directory is the one the reader is in, nothing is saved back.
        const child = spawn('bash', ['-ec', `cd "$(cat '${state}.cwd')"\n. '${state}.env'\nexec ${block.code}`], { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
        child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
        background.push({ child, seen: new Set() });
        const until_ = block.directive.background;
        await until(() => `${where} to print '${until_}':\n${out.slice(-3000)}`, () => {
          if (child.exitCode !== null) throw new Error(`${where} exited ${child.exitCode}:\n${out.slice(-3000)}`);
          return out.includes(until_);
        }, 240_000, 200);
        continue;
      }
      const deadline = Date.now() + (block.directive.retrySeconds ?? 0) * 1000;
      for (;;) {
        const r = await runScript(script, env);
        const ok = r.code === 0 && (block.directive.expect === undefined || r.out.includes(block.directive.expect));
        if (ok) break;
        if (Date.now() > deadline) {
          throw new Error(`${where} ${r.code !== 0 ? `exited ${r.code}` : `did not print '${block.directive.expect}'`}:\n$ ${block.code}\n${r.out.slice(-4000)}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  }, 900_000);
});

function runScript(script: string, env: NodeJS.ProcessEnv): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-ec', script], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, out }));
  });
}
