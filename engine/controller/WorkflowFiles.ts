import { CaravanError } from '../errors/CaravanError.js';
import { readTreeAtCommit } from '../gitops/readTreeAtRef.js';
import { crossFileDiagnostics, validateSources, type FileResult } from '../spec/validateWorkflows.js';

/**
 * The workflow files of the watched repository at a commit, validated, with their text (a run
 * keeps the definition it ran). A file that did not change between commits (same path, same
 * blob id) is neither read nor validated again: at 200 workflows that was most of a sync.
 */
export class WorkflowFiles {
  private validated = new Map<string, { result: FileResult; source: string }>();
  private readonly sources = new Map<string, string>();

  constructor(private readonly repoDir: string, private readonly workflowsDir: string) {}

  /** The text of a workflow file at the last commit read. */
  source(file: string): string {
    return this.sources.get(file) ?? '';
  }

  async at(commit: string): Promise<FileResult[]> {
    const dir = this.workflowsDir.replace(/^\.\/+|\/+$/g, '');
    const key = (path: string, oid: string): string => `${path}\0${oid}`;
    let tree;
    try {
      tree = await readTreeAtCommit(this.repoDir, commit, dir, (p) => /\.ya?ml$/i.test(p), (path, oid) => this.validated.has(key(path, oid)));
    } catch (e) {
      // A commit without the workflow directory holds no workflows.
      if (e instanceof CaravanError && e.code === 'PATH_NOT_FOUND') return [];
      throw e;
    }
    const next = new Map<string, { result: FileResult; source: string }>();
    for (const f of tree) {
      const k = key(f.path, f.oid);
      const known = this.validated.get(k);
      if (known !== undefined) next.set(k, known);
      else {
        const source = new TextDecoder().decode(f.bytes);
        next.set(k, { result: slim(validateSources([{ file: f.path, bytes: f.bytes }]).files[0]!, source), source });
      }
    }
    this.validated = next;
    this.sources.clear();
    for (const { result, source } of next.values()) this.sources.set(result.file, source);
    const results = [...next.values()].map((v) => v.result);
    // Checks across files (two files with one workflow name): the later file is invalid.
    const cross = crossFileDiagnostics(results).filter((d) => d.severity === 'error');
    return results.map((r) => {
      const mine = cross.filter((d) => d.file === r.file);
      return mine.length === 0 ? r : { ...r, workflow: undefined, diagnostics: [...r.diagnostics, ...mine] };
    });
  }
}

/**
 * What the controller keeps of a validated file between syncs: the workflow and its
 * diagnostics, without the parsed document, position index and DAG (tens of MB at 200
 * workflows) that only a first report needs. The one position a cross-file error names (a
 * duplicate `metadata.name`) is found again in the text when asked, which is rare.
 */
function slim(r: FileResult, source: string): FileResult {
  return {
    file: r.file,
    name: r.name,
    workflow: r.workflow,
    dag: undefined,
    diagnostics: r.diagnostics,
    subWorkflows: r.subWorkflows,
    outputs: r.outputs,
    locate: (path) => (path.length === 2 && path[0] === 'metadata' && path[1] === 'name' ? nameLine(source) : { line: 1, col: 1 }),
  };
}

/** The line of `name:` under a top-level `metadata:` (block style, as workflows are written). */
function nameLine(source: string): { line: number; col: number } {
  const lines = source.split('\n');
  const top = lines.findIndex((l) => /^metadata:\s*(#.*)?$/.test(l));
  for (let i = top + 1; top >= 0 && i < lines.length && !/^\S/.test(lines[i]!); i++) {
    const m = /^(\s+)name:/.exec(lines[i]!);
    if (m !== null) return { line: i + 1, col: m[1]!.length + 1 };
  }
  return { line: 1, col: 1 };
}

