import { readFile, stat } from 'node:fs/promises';

export const MAX_OUTPUTS_BYTES = 1024 * 1024;
const NAME = /^[A-Za-z_][A-Za-z0-9_-]{0,62}$/;

export type OutputsResult = { ok: true; outputs: Record<string, string> } | { ok: false; error: string };

/**
 * Reads the file a task wrote to $CARAVAN_OUTPUTS: a JSON object, or `key=value` lines.
 * Values that are not strings are kept as JSON text, so `fromJSON(...)` reads them back.
 * Oversize or malformed files fail the task with the reason, never silently.
 */
export async function readOutputs(path: string, declared: readonly string[]): Promise<OutputsResult> {
  // Nothing declared: whatever the file holds is not kept, so it is not read.
  if (declared.length === 0) return { ok: true, outputs: {} };
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch {
    // No file (or none readable): the declared outputs are missing, and that fails the task.
    return declared.length === 0 ? { ok: true, outputs: {} } : { ok: false, error: `declared outputs ${declared.join(', ')} were not written to $CARAVAN_OUTPUTS` };
  }
  if (size > MAX_OUTPUTS_BYTES) return { ok: false, error: `outputs file is ${size} bytes; the limit is ${MAX_OUTPUTS_BYTES}` };
  const text = await readFile(path, 'utf8');
  const parsed = parseOutputs(text);
  if (!parsed.ok) return parsed;
  const outputs: Record<string, string> = {};
  for (const name of declared) {
    const v = parsed.outputs[name];
    if (v === undefined) return { ok: false, error: `declared output '${name}' was not written to $CARAVAN_OUTPUTS` };
    outputs[name] = v;
  }
  return { ok: true, outputs };
}

export function parseOutputs(text: string): OutputsResult {
  const trimmed = text.trim();
  if (trimmed === '') return { ok: true, outputs: {} };
  if (trimmed.startsWith('{')) {
    let obj: unknown;
    try {
      obj = JSON.parse(trimmed);
    } catch (e) {
      return { ok: false, error: `outputs file is not valid JSON: ${(e as Error).message}` };
    }
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return { ok: false, error: 'outputs JSON must be an object' };
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(obj)) {
      if (!NAME.test(k)) return { ok: false, error: `output name '${k.slice(0, 40)}' is not valid` };
      out[k] = typeof v === 'string' ? v : JSON.stringify(v);
    }
    return { ok: true, outputs: out };
  }
  const out: Record<string, string> = {};
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, '');
    if (line.trim() === '') continue;
    const eq = line.indexOf('=');
    if (eq <= 0) return { ok: false, error: `outputs line ${i + 1} is not key=value: '${line.slice(0, 60)}'` };
    const k = line.slice(0, eq);
    if (!NAME.test(k)) return { ok: false, error: `outputs line ${i + 1}: '${k.slice(0, 40)}' is not a valid output name` };
    out[k] = line.slice(eq + 1);
  }
  return { ok: true, outputs: out };
}
