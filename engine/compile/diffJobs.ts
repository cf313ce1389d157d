import { unescapeHcl } from './agentInvocation.js';
import type { NomadJob } from './NomadJob.js';

export interface FieldChange {
  /** Where, in reviewer terms: "command", "image", "resources.CPU", "env FOO", "count", or a raw path. */
  field: string;
  /** Old and new values as text; absent when the field was added or removed, or is redacted. */
  before?: string;
  after?: string;
  /** 'added' | 'removed' | 'changed'. */
  kind: 'added' | 'removed' | 'changed';
}

/** Job fields that change whenever anything else does, so listing them adds nothing. */
const IGNORED = new Set(['Meta.caravan.spec-hash', 'Meta.caravan.git-commit']);

/**
 * Field-level differences between two versions of a job, named the way a reviewer thinks
 * (command, image, resources, count, env keys). Environment values are never shown: they
 * may be secrets pasted in by mistake, and the key is what a reviewer needs.
 */
export function diffJobs(before: NomadJob, after: NomadJob): FieldChange[] {
  const raw: Array<{ path: string[]; before: unknown; after: unknown }> = [];
  walk(before, after, [], raw);
  const out: FieldChange[] = [];
  const commands = new Set<string>();
  for (const r of raw) {
    const dotted = r.path.join('.');
    if (IGNORED.has(dotted)) continue;
    const kind = r.before === undefined ? 'added' : r.after === undefined ? 'removed' : 'changed';
    const task = taskPrefix(r.path);
    const tail = r.path.slice(r.path.lastIndexOf('Tasks') >= 0 ? r.path.lastIndexOf('Tasks') + 2 : 0);
    if (tail[0] === 'Env' && tail.length === 2) {
      out.push({ field: `${task}env ${tail[1]}`, kind });
    } else if (tail[0] === 'Env' && tail.length === 1) {
      const keys = Object.keys((r.after ?? r.before ?? {}) as object).sort();
      for (const k of keys) out.push({ field: `${task}env ${k}`, kind });
    } else if (tail[0] === 'Config' && (tail[1] === 'command' || tail[1] === 'args')) {
      // Runner flags (--timeout 5m) and the user's command (after --) are reported apart.
      const key = `${task}command`;
      if (commands.has(key)) continue;
      commands.add(key);
      out.push(...invocationChanges(task, configAt(before, r.path), configAt(after, r.path)));
    } else if (tail[0] === 'Config' && tail[1] === 'image') {
      out.push({ field: `${task}image`, kind, ...values(r) });
    } else if (tail[0] === 'Resources') {
      out.push({ field: `${task}resources.${tail.slice(1).join('.')}`, kind, ...values(r) });
    } else if (tail[0] === 'Templates') {
      if (!out.some((c) => c.field === `${task}secrets`)) out.push({ field: `${task}secrets`, kind: 'changed' });
    } else if (r.path[0] === 'TaskGroups' && r.path[2] === 'Count') {
      out.push({ field: 'count', kind, ...values(r) });
    } else {
      out.push({ field: dotted, kind, ...values(r) });
    }
  }
  return out;
}

/** Only scalars and lists of scalars are shown: a whole object could carry env values. */
function values(r: { before: unknown; after: unknown }): { before?: string; after?: string } {
  const v: { before?: string; after?: string } = {};
  if (r.before !== undefined && plain(r.before)) v.before = show(r.before);
  if (r.after !== undefined && plain(r.after)) v.after = show(r.after);
  return v;
}

function plain(x: unknown): boolean {
  return x === null || typeof x !== 'object' || (Array.isArray(x) && x.every((y) => y === null || typeof y !== 'object'));
}

function show(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return s.length > 120 ? s.slice(0, 117) + '...' : s;
}

/** Prefix naming the task when a job has several (containers run with runner tasks). */
function taskPrefix(path: string[]): string {
  const i = path.indexOf('Tasks');
  if (i < 0) return '';
  const name = path[i + 1] ?? '';
  return name === 'agent' || name === 'main' ? '' : `${name}: `;
}

function configAt(job: NomadJob, path: string[]): Record<string, unknown> | undefined {
  const i = path.indexOf('Config');
  let node: unknown = job;
  for (const seg of path.slice(0, i + 1)) node = step(node, seg);
  return node as Record<string, unknown> | undefined;
}

interface Invocation {
  program: string;
  flags: Map<string, string>;
  command: string[] | undefined;
}

/** `caravan agent shell --timeout 5m -- echo hi` as program, flags and the user's command. */
function parseInvocation(config: Record<string, unknown> | undefined): Invocation {
  // Shown as the user wrote them, without Nomad's template escaping.
  const args = config !== undefined && Array.isArray(config['args']) ? (config['args'] as string[]).map(unescapeHcl) : [];
  const program: string[] = [String(config?.['command'] ?? '')];
  const flags = new Map<string, string>();
  let i = 0;
  while (i < args.length && !args[i]!.startsWith('--')) program.push(args[i++]!);
  let command: string[] | undefined;
  while (i < args.length) {
    const a = args[i]!;
    if (a === '--') {
      command = args.slice(i + 1);
      break;
    }
    const next = args[i + 1];
    if (next !== undefined && !next.startsWith('--')) {
      // Repeated flags (--header) accumulate.
      flags.set(a, flags.has(a) ? `${flags.get(a)!}, ${next}` : next);
      i += 2;
    } else {
      flags.set(a, 'true');
      i += 1;
    }
  }
  return { program: program.join(' '), flags, command };
}

function invocationChanges(task: string, before: Record<string, unknown> | undefined, after: Record<string, unknown> | undefined): FieldChange[] {
  const a = parseInvocation(before);
  const b = parseInvocation(after);
  const out: FieldChange[] = [];
  if (a.program !== b.program) out.push({ field: `${task}runner`, kind: 'changed', before: a.program, after: b.program });
  for (const flag of [...new Set([...a.flags.keys(), ...b.flags.keys()])]) {
    const x = a.flags.get(flag);
    const y = b.flags.get(flag);
    if (x === y) continue;
    const field = `${task}${flag.replace(/^--/, '')}`;
    const change: FieldChange = { field, kind: x === undefined ? 'added' : y === undefined ? 'removed' : 'changed' };
    if (x !== undefined) change.before = x;
    if (y !== undefined) change.after = y;
    out.push(change);
  }
  const ca = a.command?.join(' ');
  const cb = b.command?.join(' ');
  if (ca !== cb) {
    const change: FieldChange = { field: `${task}command`, kind: ca === undefined ? 'added' : cb === undefined ? 'removed' : 'changed' };
    if (ca !== undefined) change.before = ca;
    if (cb !== undefined) change.after = cb;
    out.push(change);
  }
  return out;
}

/** Arrays of named objects (TaskGroups, Tasks, Services) are matched by Name, not position. */
function step(node: unknown, seg: string): unknown {
  if (Array.isArray(node)) return node.find((x: unknown) => named(x) === seg) ?? node[Number(seg)];
  if (node !== null && typeof node === 'object') return (node as Record<string, unknown>)[seg];
  return undefined;
}

function named(x: unknown): string | undefined {
  return x !== null && typeof x === 'object' && typeof (x as { Name?: unknown }).Name === 'string' ? (x as { Name: string }).Name : undefined;
}

function walk(a: unknown, b: unknown, path: string[], out: Array<{ path: string[]; before: unknown; after: unknown }>): void {
  if (JSON.stringify(a) === JSON.stringify(b)) return;
  const bothObjects = a !== null && b !== null && typeof a === 'object' && typeof b === 'object';
  if (bothObjects && Array.isArray(a) && Array.isArray(b) && a.every((x) => named(x) !== undefined) && b.every((x) => named(x) !== undefined)) {
    const keys = [...new Set([...a.map(named), ...b.map(named)])] as string[];
    for (const k of keys) walk(a.find((x) => named(x) === k), b.find((x) => named(x) === k), [...path, k], out);
    return;
  }
  if (bothObjects && !Array.isArray(a) && !Array.isArray(b)) {
    const keys = [...new Set([...Object.keys(a as object), ...Object.keys(b as object)])];
    for (const k of keys) walk((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], [...path, k], out);
    return;
  }
  out.push({ path, before: a, after: b });
}
