import { existsSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openApp } from '../harness/openApp.js';
import { tempRepo, workflow } from '../harness/gitRepo.js';

/**
 * A hostile param through every place a task takes an expression, run for real by the local
 * executor as `caravan run` has it (shell workers): nothing it holds runs, and each place
 * receives it exactly.
 */
const spec = `  params:
    x: { type: string }
  failFast: false
  tasks:
    - name: quoted
      run: printf '%s' "\${{ params.x }}" > quoted.txt
      compensate: { run: "printf '%s' \${{ params.x }} > compensated.txt" }
    - name: bare
      run: printf '%s' \${{ params.x }} > bare.txt
    - name: single
      run: "printf '%s' 'v=\${{ params.x }}' > single.txt"
    - name: args
      args: [/bin/sh, -c, 'printf "%s" "$1" > args.txt', sh, "\${{ params.x }}"]
    - name: env
      env: { V: "\${{ params.x }}" }
      run: printf '%s' "$V" > env.txt
    - name: fail
      needs: [quoted, bare, single, args, env]
      run: exit 1
`;

const hostile = [`$(touch PWNED)`, '`touch PWNED`', `"; touch PWNED; "`, `'; touch PWNED; '`, `x\ntouch PWNED\n`, `a  b * $HOME`];

describe('params never run as shell code', () => {
  for (const parallelism of [1, 8]) {
    it(`in run, compensate.run, args and env (parallelism ${parallelism})`, async () => {
      for (const x of hostile) {
        const dir = await tempRepo({ 'inject.yaml': workflow('inject', spec) });
        const app = openApp({ repoDir: dir, parallelism });
        const { state } = await (await app.start('inject', { x })).done;
        expect(state.status).toBe('failed');
        const read = (f: string): Promise<string> => readFile(join(dir, f), 'utf8');
        expect({ x, files: { quoted: await read('quoted.txt'), bare: await read('bare.txt'), single: await read('single.txt'), args: await read('args.txt'), env: await read('env.txt'), compensated: await read('compensated.txt') } })
          .toEqual({ x, files: { quoted: x, bare: x, single: `v=${x}`, args: x, env: x, compensated: x } });
        expect(existsSync(join(dir, 'PWNED')), `param ${JSON.stringify(x)} ran a command`).toBe(false);
      }
    });
  }
});

describe('params in an http task', () => {
  it('arrive as the literal request body, and run nothing', async () => {
    const got: Array<{ url: string; body: string }> = [];
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => { body += c.toString(); });
      req.on('end', () => {
        got.push({ url: req.url ?? '', body });
        res.end('ok');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = (server.address() as AddressInfo).port;
      const http = `  params:\n    x: { type: string }\n  tasks:\n    - name: call\n      http: { url: "http://127.0.0.1:${port}/hook?v=\${{ params.x }}", method: POST, body: "\${{ params.x }}" }\n`;
      for (const x of hostile) {
        const dir = await tempRepo({ 'hook.yaml': workflow('hook', http) });
        const { state } = await (await openApp({ repoDir: dir }).start('hook', { x })).done;
        expect(existsSync(join(dir, 'PWNED')), `param ${JSON.stringify(x)} ran a command`).toBe(false);
        // A value that is not a valid URL part may make the request fail; it never changes what is sent.
        if (state.status !== 'succeeded') continue;
        expect(got.at(-1)!.body).toBe(x);
      }
      expect(got.length).toBeGreaterThan(0);
    } finally {
      server.close();
    }
  });
});

