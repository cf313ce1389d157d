import { describe, expect, it } from 'vitest';
import { main } from '../../engine/cli/main.js';
import { tempRepo, workflow } from '../harness/gitRepo.js';

/** The CLI in-process, as on a terminal or not. */
async function run(cwd: string, isTTY: boolean, ...argv: string[]): Promise<{ code: number; out: string }> {
  let out = '';
  const code = await main(argv, { cwd, isTTY, stdout: (t) => { out += t; }, stderr: (t) => { out += t; } });
  return { code, out };
}

const ESC = '\u001b';

describe('escape sequences from task output and files', () => {
  it('are shown, not obeyed, by logs, status and validate on a terminal; piped output keeps the bytes', async () => {
    const dir = await tempRepo({
      'esc.yaml': workflow('esc', "  tasks:\n    - { name: loud, run: \"printf '\\\\033]0;pwned\\\\007\\\\033[2Jhello\\\\n'; printf '\\\\033[31mboom' >&2; exit 2\" }\n"),
      'bad.yaml': workflow('bad', '  tasks:\n    - { name: a, run: echo, "x\\e[2Jy": 1 }\n'),
    });
    const r = await run(dir, false, 'run', 'esc');
    expect(r.code).toBe(1);
    const runId = /run (\S+) of esc failed/.exec(r.out)![1]!;
    const logsTty = await run(dir, true, 'logs', runId);
    expect(logsTty.out).not.toContain(ESC);
    expect(logsTty.out).toContain('loud#1 \\x1b]0;pwned\\x07\\x1b[2Jhello\n');
    expect((await run(dir, false, 'logs', runId)).out).toContain(`loud#1 ${ESC}]0;pwned\u0007${ESC}[2Jhello\n`);
    const statusTty = await run(dir, true, 'status', runId);
    expect(statusTty.out).not.toContain(ESC);
    expect(statusTty.out).toContain('\\x1b[31mboom');
    const validateTty = await run(dir, true, 'validate', 'workflows/bad.yaml');
    expect(validateTty.code).toBe(2);
    expect(validateTty.out).not.toContain(ESC);
    expect(validateTty.out).toContain('x\\x1b[2Jy');
  });
});
