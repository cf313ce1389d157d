import { CaravanError } from '../errors/CaravanError.js';
import { valueProblem } from '../spec/checkParams.js';
import { compilePattern } from '../spec/compilePattern.js';
import type { ParamSpec, Workflow } from '../spec/Workflow.js';

/**
 * Run parameters from `--param k=v` strings (or typed values from the API): converted to the
 * declared type, checked against pattern, enum and range, defaults filled in, required ones
 * enforced. Every problem is reported at once.
 */
export function parseParams(workflow: Workflow, given: Record<string, unknown>): Record<string, unknown> {
  const declared = workflow.spec.params ?? {};
  const problems: string[] = [];
  // Which params are wrong, without their values: what a log of someone else's input may show.
  const wrong: string[] = [];
  const out: Record<string, unknown> = {};
  for (const name of Object.keys(given)) {
    // Own properties only: `toString` or `constructor` are in every object, declared or not.
    if (!Object.hasOwn(declared, name)) wrong.push(name);
    if (!Object.hasOwn(declared, name)) problems.push(`unknown param '${name}'${Object.keys(declared).length > 0 ? ` (declared: ${Object.keys(declared).join(', ')})` : ' (the workflow declares none)'}`);
  }
  for (const [name, spec] of Object.entries(declared)) {
    let value: unknown;
    if (Object.hasOwn(given, name)) {
      const raw = given[name];
      const converted = typeof raw === 'string' ? convert(raw, spec) : { ok: true as const, value: raw };
      if (!converted.ok) {
        wrong.push(name);
        problems.push(`param '${name}': ${converted.error}`);
        continue;
      }
      value = converted.value;
    } else if ('default' in spec) {
      value = spec.default;
    } else {
      if (spec.required === true) {
        wrong.push(name);
        problems.push(`param '${name}' is required`);
      }
      continue;
    }
    const compiled = spec.pattern !== undefined ? compilePattern(spec.pattern) : undefined;
    const problem = valueProblem(spec as unknown as Record<string, unknown>, value, compiled?.ok === true ? compiled : undefined);
    if (problem !== undefined) {
      wrong.push(name);
      problems.push(`param '${name}' ${problem}`);
    } else out[name] = value;
  }
  if (problems.length > 0) throw new CaravanError('PARAM_INVALID', problems.join('; '), { data: { problems, params: wrong } });
  return out;
}

function convert(raw: string, spec: ParamSpec): { ok: true; value: unknown } | { ok: false; error: string } {
  switch (spec.type) {
    case 'string':
      return { ok: true, value: raw };
    case 'number':
    case 'integer': {
      const n = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(n)) return { ok: false, error: `'${raw}' is not a number` };
      if (spec.type === 'integer' && !Number.isInteger(n)) return { ok: false, error: `'${raw}' is not an integer` };
      return { ok: true, value: n };
    }
    case 'boolean':
      if (raw === 'true' || raw === 'false') return { ok: true, value: raw === 'true' };
      return { ok: false, error: `'${raw}' is not true or false` };
    case 'array':
    case 'object':
      try {
        return { ok: true, value: JSON.parse(raw) as unknown };
      } catch {
        // Not JSON: a list may also be given as `a,b,c`; anything else is the error returned.
        if (spec.type === 'array') return { ok: true, value: raw.split(',').map((s) => s.trim()).filter((s) => s !== '') };
        return { ok: false, error: `'${raw}' is not JSON` };
      }
  }
}
