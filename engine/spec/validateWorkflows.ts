import { readBoundedFile } from './readBoundedFile.js';
import type { TaskDag } from '../graph/buildDag.js';
import { checkSemantics, type SubWorkflowRef } from './checkSemantics.js';
import { decodeSource } from './decodeSource.js';
import { compareDiagnostics, toJsonPointer, type Diagnostic, type PendingDiagnostic } from './Diagnostic.js';
import { parseYamlSource } from './parseYamlSource.js';
import { findWorkflowFiles } from './findWorkflowFiles.js';
import { SourceLocator } from './SourceLocator.js';
import { validateSchema } from './validateSchema.js';
import { API_VERSION, type Workflow } from './Workflow.js';
import { asRecord, asString } from './shape.js';

/** Larger files are rejected before they are read: no workflow needs 4 MiB of YAML. */
export const MAX_FILE_BYTES = 4 * 1024 * 1024;

export interface FileResult {
  /** The path as given or as found, used in diagnostics. */
  file: string;
  /** metadata.name, when it could be read. */
  name: string | undefined;
  /** The typed workflow; only set when the file has no errors. */
  workflow: Workflow | undefined;
  dag: TaskDag | undefined;
  diagnostics: Diagnostic[];
  /** Workflows this one runs as tasks, for cross-file checks. */
  subWorkflows: SubWorkflowRef[];
  /** The names of the workflow's own spec.outputs (what a parent's workflow: task may read). */
  outputs: string[];
  /** Line and column of a document path; builds the position index on first use only. */
  locate(path: ReadonlyArray<string | number>): { line: number; col: number };
}

export interface ValidationReport {
  files: FileResult[];
  /** Every diagnostic, sorted by file, line and column. */
  diagnostics: Diagnostic[];
  errorCount: number;
  warningCount: number;
}

/** Validates one file's bytes: decoding, YAML, schema and semantics. Pure apart from CPU. */
export function validateSource(file: string, bytes: Uint8Array): FileResult {
  const decoded = decodeSource(bytes);
  if (!decoded.ok) return failed(file, [decoded.diagnostic]);
  return validateText(file, decoded.text);
}

export function validateText(file: string, text: string): FileResult {
  const parsed = parseYamlSource(text);
  if (parsed.value === undefined) return failed(file, parsed.diagnostics);
  const doc = parsed.value;
  const pending: PendingDiagnostic[] = [...parsed.diagnostics];
  const name = asString(asRecord(doc['metadata'])?.['name']);

  const apiVersion = doc['apiVersion'];
  if (typeof apiVersion === 'string' && apiVersion !== API_VERSION) {
    pending.push({
      severity: 'error',
      code: 'API_VERSION_UNSUPPORTED',
      message: `apiVersion '${apiVersion}' is not supported; this Caravan reads '${API_VERSION}'`,
      path: ['apiVersion'],
    });
    return finish(file, text, doc, pending, name, undefined, []);
  }
  pending.push(...validateSchema(doc));
  const semantic = checkSemantics(doc);
  pending.push(...semantic.diagnostics);
  return finish(file, text, doc, pending, name, semantic.dag, semantic.subWorkflows);
}

function finish(
  file: string,
  text: string,
  doc: Record<string, unknown>,
  pending: PendingDiagnostic[],
  name: string | undefined,
  dag: TaskDag | undefined,
  subWorkflows: FileResult['subWorkflows'],
): FileResult {
  const locator = new SourceLocator(text);
  const diagnostics = pending.map((p) => resolve(file, p, locator)).sort(compareDiagnostics);
  const hasErrors = diagnostics.some((d) => d.severity === 'error');
  return {
    file,
    name,
    workflow: hasErrors ? undefined : (doc as unknown as Workflow),
    dag: hasErrors ? undefined : dag,
    diagnostics,
    subWorkflows,
    outputs: Object.keys(asRecord(asRecord(doc['spec'])?.['outputs']) ?? {}),
    locate: (path) => locator.locate({ path }),
  };
}

function resolve(file: string, p: PendingDiagnostic, locator: SourceLocator | undefined): Diagnostic {
  let line = p.line;
  let col = p.col;
  if ((line === undefined || col === undefined) && locator !== undefined) {
    const pos = locator.locate(p);
    line = pos.line;
    col = pos.col;
  }
  return { file, line: line ?? 1, col: col ?? 1, severity: p.severity, code: p.code, message: p.message, path: toJsonPointer(p.path) };
}

function failed(file: string, pending: PendingDiagnostic[]): FileResult {
  return {
    file,
    name: undefined,
    workflow: undefined,
    dag: undefined,
    diagnostics: pending.map((p) => resolve(file, p, undefined)).sort(compareDiagnostics),
    subWorkflows: [],
    outputs: [],
    locate: () => ({ line: 1, col: 1 }),
  };
}

function tooLarge(file: string, size: number): FileResult {
  return failed(file, [{
    severity: 'error',
    code: 'FILE_TOO_LARGE',
    message: `file is ${size} bytes; workflow files are limited to 4 MiB (${MAX_FILE_BYTES} bytes), so it was not parsed`,
    path: [],
    line: 1,
    col: 1,
  }]);
}

/** Validates in-memory files (for example read from a Git commit) together. */
export function validateSources(files: ReadonlyArray<{ file: string; bytes: Uint8Array }>): ValidationReport {
  const results = files.map((f) => (f.bytes.length > MAX_FILE_BYTES ? tooLarge(f.file, f.bytes.length) : validateSource(f.file, f.bytes)));
  return summarize(results, crossFileDiagnostics(results));
}

/**
 * Reads and validates one file: a regular file of at most 4 MiB, and with `root`, a symbolic
 * link only if it stays inside root (see readBoundedFile). Others are refused unread.
 */
export async function validateFile(path: string, displayName = path, root?: string): Promise<FileResult> {
  try {
    const read = await readBoundedFile(path, MAX_FILE_BYTES, root);
    if (read.ok) return validateSource(displayName, read.bytes);
    if (read.refusal.kind === 'too-large') return tooLarge(displayName, read.refusal.size);
    return failed(displayName, [{ severity: 'error', code: 'FILE_REFUSED', message: read.refusal.message, path: [], line: 1, col: 1 }]);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    return failed(displayName, [{ severity: 'error', code: 'FILE_READ', message: `cannot read file (${code}): ${(e as Error).message}`, path: [], line: 1, col: 1 }]);
  }
}

/**
 * Checks that need every file at once: workflow names are unique, and `workflow:` tasks
 * name a workflow that exists among the validated files.
 */
export function crossFileDiagnostics(results: readonly FileResult[]): Diagnostic[] {
  const out: Diagnostic[] = [];
  const byName = new Map<string, FileResult>();
  for (const r of results) {
    if (r.name === undefined) continue;
    const first = byName.get(r.name);
    if (first === undefined) {
      byName.set(r.name, r);
      continue;
    }
    out.push({
      file: r.file,
      ...r.locate(['metadata', 'name']),
      severity: 'error',
      code: 'WORKFLOW_DUPLICATE_NAME',
      message: `workflow name '${r.name}' is already used by ${first.file}; names must be unique in the repository`,
      path: '/metadata/name',
    });
  }
  for (const r of results) {
    for (const s of r.subWorkflows) {
      const child = byName.get(s.name);
      if (child !== undefined) {
        for (const read of s.reads) {
          if (child.outputs.includes(read.output)) continue;
          out.push({
            file: r.file,
            ...r.locate(read.path),
            severity: 'error',
            code: 'CHILD_OUTPUT_UNKNOWN',
            message: `workflow '${s.name}' (${child.file}) declares no output '${read.output}'${child.outputs.length > 0 ? `; its spec.outputs are ${child.outputs.join(', ')}` : '; declare it under its spec.outputs'} (besides runId and status)`,
            path: toJsonPointer(read.path),
          });
        }
      }
      if (!byName.has(s.name)) {
        out.push({
          file: r.file,
          ...r.locate(s.path),
          severity: 'warning',
          code: 'WORKFLOW_UNKNOWN',
          message: `workflow '${s.name}' is not among the validated files; validate the whole workflows/ directory to check it`,
          path: toJsonPointer(s.path),
        });
      }
    }
  }
  return out;
}

export function summarize(files: FileResult[], extra: Diagnostic[]): ValidationReport {
  const diagnostics = [...files.flatMap((f) => f.diagnostics), ...extra].sort(compareDiagnostics);
  const errorCount = diagnostics.filter((d) => d.severity === 'error').length;
  return { files, diagnostics, errorCount, warningCount: diagnostics.length - errorCount };
}

/** Finds, reads and validates workflow files under the given paths, then checks them together. */
export async function validateWorkflows(paths: readonly string[], cwd: string): Promise<ValidationReport> {
  const refs = await findWorkflowFiles(paths, cwd);
  const results: FileResult[] = [];
  for (const ref of refs) results.push(await validateFile(ref.path, ref.display, cwd));
  return summarize(results, crossFileDiagnostics(results));
}
