import { interpolate, type ExpressionContext } from './evaluate.js';

export type RunOutputsResult = { ok: true; outputs: Record<string, string> } | { ok: false; reason: string };

/**
 * Evaluates a workflow's `spec.outputs` once its run has succeeded: each value is a string
 * with `${{ }}`, interpolated as a task's fields are (lists and maps as compact JSON). The
 * first output that cannot be evaluated gives the reason the run fails instead: a parent
 * must not read a value that silently went missing.
 */
export function evaluateRunOutputs(declared: Readonly<Record<string, string>>, ctx: ExpressionContext): RunOutputsResult {
  const outputs: Record<string, string> = {};
  for (const [name, source] of Object.entries(declared)) {
    try {
      outputs[name] = interpolate(source, ctx);
    } catch (e) {
      return { ok: false, reason: `output '${name}' could not be evaluated: ${e instanceof Error ? e.message : String(e)}` };
    }
  }
  return { ok: true, outputs };
}
