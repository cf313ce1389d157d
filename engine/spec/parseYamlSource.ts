import * as jsyaml from 'js-yaml';
import * as YAML from 'yaml';
import type { DiagnosticCode, PendingDiagnostic } from './Diagnostic.js';

/** Nesting deeper than this is not a workflow; it is an attack or a generator bug. */
export const MAX_DEPTH = 64;
/** yaml's weighted alias budget: a billion-laughs file blows through it in microseconds. */
export const MAX_ALIAS_COUNT = 100;

export interface ParsedYaml {
  /** The single document's value when it is a mapping; undefined when the file is unusable. */
  value: Record<string, unknown> | undefined;
  /** Problems found while parsing, positions already known. */
  diagnostics: PendingDiagnostic[];
}

const fastSchema = jsyaml.CORE_SCHEMA.withTags(jsyaml.mergeTag);

const yamlOptions = {
  prettyErrors: false,
  uniqueKeys: true,
  merge: true,
  strict: true,
} as const;

/**
 * YAML text to a plain value. The fast path is js-yaml (about 6x quicker than `yaml` on a
 * 10,000-task file); `yaml` is only used when something is wrong, because it reports every
 * syntax error with a code and an exact position, and enforces a weighted alias budget.
 */
export function parseYamlSource(text: string): ParsedYaml {
  let docs: unknown[];
  try {
    docs = jsyaml.loadAll(text, { schema: fastSchema, maxDepth: MAX_DEPTH });
  } catch (err) {
    return { value: undefined, diagnostics: slowPathDiagnostics(text, err) };
  }
  if (docs.length === 0) {
    return fatal('FILE_EMPTY', 'file is empty; expected a Workflow mapping with apiVersion, kind, metadata and spec', 1, 1);
  }
  if (docs.length > 1) {
    const { line, col } = secondDocumentPosition(text);
    return fatal(
      'YAML_MULTI_DOCUMENT',
      `file holds ${docs.length} YAML documents; put each workflow in a file of its own`,
      line,
      col,
    );
  }
  const doc = docs[0];
  if (doc === null || doc === undefined) {
    return fatal('FILE_EMPTY', 'file has no content; expected a Workflow mapping with apiVersion, kind, metadata and spec', 1, 1);
  }
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    const what = Array.isArray(doc) ? 'a list' : `a ${typeof doc}`;
    const { line, col } = firstContentPosition(text);
    return fatal('YAML_NOT_MAPPING', `top level is ${what}; expected a mapping with apiVersion, kind, metadata and spec`, line, col);
  }
  if (hasSharedCollections(doc)) {
    // Aliases of collections: let `yaml` decide whether the expansion is within budget.
    return parseWithAliasBudget(text);
  }
  return { value: doc as Record<string, unknown>, diagnostics: [] };
}

function fatal(code: DiagnosticCode, message: string, line: number, col: number): ParsedYaml {
  return { value: undefined, diagnostics: [{ severity: 'error', code, message, path: [], line, col }] };
}

/** js-yaml shares the object behind an alias; a second visit of one object means an alias. */
function hasSharedCollections(root: object): boolean {
  const seen = new Set<object>();
  const stack: object[] = [root];
  while (stack.length > 0) {
    const node = stack.pop() as object;
    if (seen.has(node)) return true;
    seen.add(node);
    const values = Array.isArray(node) ? node : Object.values(node);
    for (const v of values) if (v !== null && typeof v === 'object') stack.push(v as object);
  }
  return false;
}

function parseWithAliasBudget(text: string): ParsedYaml {
  const lineCounter = new YAML.LineCounter();
  const doc = YAML.parseDocument(text, { ...yamlOptions, lineCounter });
  try {
    const value: unknown = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
    return { value: value as Record<string, unknown>, diagnostics: [] };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    // `yaml` throws a plain ReferenceError for both an unresolved and an excessive alias: its
    // message is the only thing that tells the attack apart (the library has no error code).
    if (err instanceof ReferenceError && /alias/i.test(message) && /excessive/i.test(message)) {
      const pos = firstAliasPosition(text, lineCounter);
      return fatal(
        'YAML_ALIAS_LIMIT',
        `aliases expand too far (more than ${MAX_ALIAS_COUNT} weighted alias uses); this looks like a "billion laughs" document`,
        pos.line,
        pos.col,
      );
    }
    return fatal('YAML_SYNTAX', message, 1, 1);
  }
}

function firstAliasPosition(text: string, lc: YAML.LineCounter): { line: number; col: number } {
  const m = /(^|[\s[{,])\*[^\s,\]}]+/m.exec(text);
  if (m === null) return { line: 1, col: 1 };
  return lc.linePos(m.index + m[1]!.length);
}

const yamlCodeMap: Partial<Record<string, DiagnosticCode>> = {
  TAB_AS_INDENT: 'YAML_TAB_INDENT',
  DUPLICATE_KEY: 'YAML_DUPLICATE_KEY',
};

const friendly: Partial<Record<string, string>> = {
  TAB_AS_INDENT: 'tab character used for indentation; YAML allows only spaces',
  DUPLICATE_KEY: 'duplicate key in a mapping; each key may appear only once',
};

function slowPathDiagnostics(text: string, fastError: unknown): PendingDiagnostic[] {
  const reason = fastError instanceof jsyaml.YAMLException ? fastError.reason : fastError instanceof Error ? fastError.message : String(fastError);
  const mark = fastError instanceof jsyaml.YAMLException ? fastError.mark : undefined;
  // js-yaml gives no code: its reason (or a RangeError's message) is all there is to classify.
  if (/maxDepth|call stack/i.test(reason)) {
    return [{
      severity: 'error',
      code: 'YAML_TOO_DEEP',
      message: `collections are nested more than ${MAX_DEPTH} levels deep`,
      path: [],
      line: mark ? mark.line + 1 : 1,
      col: mark ? mark.column + 1 : 1,
    }];
  }
  const out: PendingDiagnostic[] = [];
  try {
    const lineCounter = new YAML.LineCounter();
    const docs = YAML.parseAllDocuments(text, { ...yamlOptions, lineCounter });
    const list = Array.isArray(docs) ? docs : [docs];
    for (const d of list) {
      for (const e of d.errors) {
        const { line, col } = lineCounter.linePos(e.pos[0]);
        out.push({
          severity: 'error',
          code: yamlCodeMap[e.code] ?? 'YAML_SYNTAX',
          message: friendly[e.code] ?? lowerFirst(e.message),
          path: [],
          line,
          col,
        });
      }
    }
  } catch {
    // `yaml` failing on input js-yaml already refused: fall through to js-yaml's own report.
  }
  // A tab in the indentation derails the parser; the errors after it are only echoes of it.
  const tabs = out.filter((d) => d.code === 'YAML_TAB_INDENT');
  if (tabs.length > 0) return dedupe(tabs);
  if (out.length > 0) return dedupe(out);
  return [{
    severity: 'error',
    code: /duplicated mapping key/.test(reason) ? 'YAML_DUPLICATE_KEY' : /tab/.test(reason) ? 'YAML_TAB_INDENT' : 'YAML_SYNTAX',
    message: lowerFirst(reason),
    path: [],
    line: mark ? mark.line + 1 : 1,
    col: mark ? mark.column + 1 : 1,
  }];
}

function dedupe(list: PendingDiagnostic[]): PendingDiagnostic[] {
  const seen = new Set<string>();
  return list.filter((d) => {
    const k = `${d.line}:${d.col}:${d.code}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function lowerFirst(s: string): string {
  return s.length > 0 ? s[0]!.toLowerCase() + s.slice(1) : s;
}

function secondDocumentPosition(text: string): { line: number; col: number } {
  const lines = text.split('\n');
  let seenContent = false;
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    if (/^---(\s|$)/.test(l)) {
      if (seenContent) return { line: i + 1, col: 1 };
      seenContent = true;
    } else if (/^\S/.test(l) && !l.startsWith('#') && !l.startsWith('%')) {
      seenContent = true;
    }
  }
  return { line: 1, col: 1 };
}

function firstContentPosition(text: string): { line: number; col: number } {
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    const m = /^(\s*)(\S)/.exec(l);
    if (m !== null && m[2] !== '#' && !l.startsWith('---') && !l.startsWith('%')) return { line: i + 1, col: m[1]!.length + 1 };
  }
  return { line: 1, col: 1 };
}
