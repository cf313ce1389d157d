import { RE2JS } from 're2js';

/** A param's `pattern`, compiled: `test` searches like RegExp.test, in time linear in the input. */
export type CompiledPattern = { ok: true; test: (value: string) => boolean } | { ok: false; message: string };

const cache = new Map<string, CompiledPattern>();

/**
 * Compiles a pattern written by a workflow's author (user input) with RE2 (the re2js port):
 * matching takes time linear in the input whatever the pattern, so `^(a+)+$` against
 * `aaaa...!` answers at once instead of hanging validation and runs at 100% CPU, as the
 * backtracking RegExp engine did. RE2 has no lookaround and no backreferences; such a pattern
 * is reported as invalid. JSON Schema's semantics are kept: the pattern is searched for
 * anywhere in the value unless it is anchored.
 */
export function compilePattern(pattern: string): CompiledPattern {
  let compiled = cache.get(pattern);
  if (compiled === undefined) {
    try {
      const re = RE2JS.compile(pattern);
      compiled = { ok: true, test: (value) => re.matcher(value).find() };
    } catch (e) {
      compiled = { ok: false, message: `${(e as Error).message} (patterns use RE2 syntax, matched in linear time: no lookaround, no backreferences)` };
    }
    // Patterns come from workflow files: a bounded number of distinct ones per process.
    if (cache.size < 10_000) cache.set(pattern, compiled);
  }
  return compiled;
}
