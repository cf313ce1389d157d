import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ExpressionContext } from '../../engine/run/evaluate.js';
import { interpolateShell } from '../../engine/run/interpolateShell.js';

/**
 * The injection corpus: hostile values through every place a `${{ }}` can stand in a shell
 * script. Each script really runs in /bin/sh; no value may run a command (the PWNED file),
 * and each must arrive with its exact text.
 */
const dir = mkdtempSync(join(tmpdir(), 'caravan-inject-'));
const PWNED = join(dir, 'PWNED');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const hostile: string[] = [
  `$(touch ${PWNED})`,
  `\`touch ${PWNED}\``,
  `"; touch ${PWNED}; "`,
  `'; touch ${PWNED}; '`,
  `' ; touch ${PWNED} ; echo '`,
  `"$(touch ${PWNED})"`,
  `'$(touch ${PWNED})'`,
  `&& touch ${PWNED}`,
  `| touch ${PWNED}`,
  `; touch ${PWNED}`,
  `\ntouch ${PWNED}\n`,
  `EOF\ntouch ${PWNED}\nEOF`,
  `$((1+1)) \${HOME} $HOME ~ * ? [a]`,
  `a b  c\td`,
  '\\',
  '\\n and \\',
  "'",
  '"',
  '`',
  '$',
  '-n',
  '--help',
  '#not a comment',
  '}} ${{ params.x }}',
  'ünïcödé 😀 \u0000'.replace('\u0000', ''),
  '',
  '%s %d',
  '!event',
  `x\n#!/bin/sh\nrm -rf ${PWNED}`,
];

/** Where an expression can stand, and what the script prints for a value v. */
const places: Array<{ name: string; script: string; expect: (v: string) => string }> = [
  { name: 'a bare word', script: "printf '%s' ${{ params.x }}", expect: (v) => v },
  { name: 'double quotes', script: `printf '%s' "\${{ params.x }}"`, expect: (v) => v },
  { name: 'inside double quotes with text', script: `printf '%s' "pre \${{ params.x }} post"`, expect: (v) => `pre ${v} post` },
  { name: 'single quotes', script: "printf '%s' '${{ params.x }}'", expect: (v) => v },
  { name: 'inside single quotes with text', script: "printf '%s' 'pre ${{ params.x }} post'", expect: (v) => `pre ${v} post` },
  { name: 'a flag value', script: "printf '%s' --flag=${{ params.x }}", expect: (v) => `--flag=${v}` },
  { name: 'an assignment', script: 'v=${{ params.x }}; printf \'%s\' "$v"', expect: (v) => v },
  { name: 'a command substitution in double quotes', script: `printf '%s' "$(printf '%s' \${{ params.x }})"`, expect: (v) => v.replace(/\n+$/, '') },
  { name: 'a nested substitution with parentheses', script: `printf '%s' "$( (printf '%s' "\${{ params.x }}") )"`, expect: (v) => v.replace(/\n+$/, '') },
  { name: 'a case word', script: "case ${{ params.x }} in *) printf '%s' matched;; esac", expect: () => 'matched' },
  { name: 'a here-document', script: 'cat <<EOF\n${{ params.x }}\nEOF', expect: (v) => `${v}\n` },
  { name: 'a here-document with tabs stripped', script: 'cat <<-EOF\n\tline ${{ params.x }}\n\tEOF', expect: (v) => `line ${v}\n` },
  { name: 'after a comment with a quote', script: "# it's here\nprintf '%s' ${{ params.x }}", expect: (v) => v },
  { name: 'an escaped quote before it', script: `printf '%s' \\' ; printf '%s' \${{ params.x }}`, expect: (v) => `'${v}` },
  { name: 'two expressions', script: `printf '%s|%s' \${{ params.x }} "\${{ params.x }}"`, expect: (v) => `${v}|${v}` },
];

function run(script: string, x: string): { out: string; status: number | null; env: Record<string, string>; script: string } {
  const ctx: ExpressionContext = { params: { x }, tasks: {}, run: {} };
  const sh = interpolateShell(script, ctx);
  const r = spawnSync('/bin/sh', ['-c', sh.script], { cwd: dir, env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: '/nonexistent-home', ...sh.env }, encoding: 'utf8' });
  return { out: r.stdout, status: r.status, env: sh.env, script: sh.script };
}

describe('${{ }} in a shell script is one word the shell never parses', () => {
  for (const place of places) {
    it(`in ${place.name}`, () => {
      for (const v of hostile) {
        const r = run(place.script, v);
        expect({ value: v, out: r.out, status: r.status }).toEqual({ value: v, out: place.expect(v), status: 0 });
        expect(existsSync(PWNED), `value ${JSON.stringify(v)} ran a command in ${place.name}: ${r.script}`).toBe(false);
      }
    });
  }

  it('a script without expressions is left exactly as it is', () => {
    expect(interpolateShell("echo 'a' \"$B\" `c` $(d) # e", { params: {}, tasks: {}, run: {} })).toEqual({ script: "echo 'a' \"$B\" `c` $(d) # e", env: {} });
  });

  it('lists and maps arrive as one JSON word', () => {
    const ctx: ExpressionContext = { params: { l: ['a b', "c'd"] }, tasks: {}, run: {} };
    const sh = interpolateShell("printf '%s' ${{ params.l }}", ctx);
    expect(spawnSync('/bin/sh', ['-c', sh.script], { env: sh.env, encoding: 'utf8' }).stdout).toBe('["a b","c\'d"]');
  });

  it('in an arithmetic expansion only an integer may stand; anything else fails the task and runs nothing', () => {
    expect(run("printf '%s' $(( ${{ params.x }} + 1 ))", '41').out).toBe('42');
    expect(run(`printf '%s' "$(( (\${{ params.x }}) * 2 )) and \${{ params.x }}"`, ' -3 ').out).toBe('-6 and  -3 ');
    for (const v of hostile.filter((h) => !/^\s*[-+]?[0-9]+\s*$/.test(h))) {
      expect(() => run("printf '%s' $(( ${{ params.x }} + 1 ))", v)).toThrow(/stands in an arithmetic expansion/);
    }
    expect(existsSync(PWNED)).toBe(false);
  });

  it('a quoted here-document takes the value as it is, and refuses one that would end it early', () => {
    expect(run("cat <<'EOF'\n${{ params.x }} $HOME\nEOF", '$(touch nothing) `x`').out).toBe('$(touch nothing) `x` $HOME\n');
    expect(() => run("cat <<'EOF'\n${{ params.x }}\nEOF", `ok\nEOF\ntouch ${PWNED}`)).toThrow(/would end the here-document/);
    expect(existsSync(PWNED)).toBe(false);
  });
});
