/**
 * A problem found in a workflow file. `path` is the JSON pointer (RFC 6901) of the offending
 * value inside the document, so tools can correlate it with the schema; line and col are
 * 1-based and point at the key or value a human should look at.
 */
export type Severity = 'error' | 'warning';

export interface Diagnostic {
  file: string;
  line: number;
  col: number;
  severity: Severity;
  code: DiagnosticCode;
  message: string;
  path: string;
}

/** Stable diagnostic codes. Tools may match on them; never rename one, only add. */
export type DiagnosticCode =
  // the file itself
  | 'FILE_READ'
  | 'FILE_TOO_LARGE'
  | 'FILE_REFUSED'
  | 'FILE_EMPTY'
  | 'FILE_ENCODING'
  // YAML
  | 'YAML_SYNTAX'
  | 'YAML_TAB_INDENT'
  | 'YAML_DUPLICATE_KEY'
  | 'YAML_MULTI_DOCUMENT'
  | 'YAML_NOT_MAPPING'
  | 'YAML_ALIAS_LIMIT'
  | 'YAML_TOO_DEEP'
  // schema
  | 'API_VERSION_UNSUPPORTED'
  | 'SCHEMA_REQUIRED'
  | 'SCHEMA_UNKNOWN_FIELD'
  | 'SCHEMA_TYPE'
  | 'SCHEMA_ENUM'
  | 'SCHEMA_CONST'
  | 'SCHEMA_FORMAT'
  | 'SCHEMA_RANGE'
  | 'NAME_INVALID'
  // semantics
  | 'WORKFLOW_DUPLICATE_NAME'
  | 'WORKFLOW_UNKNOWN'
  | 'WORKFLOW_RECURSION'
  | 'CHILD_OUTPUT_UNKNOWN'
  | 'TASK_DUPLICATE'
  | 'TASK_NO_ACTION'
  | 'TASK_ACTION_CONFLICT'
  | 'TASK_AGENT_MISMATCH'
  | 'NEEDS_UNKNOWN'
  | 'NEEDS_SELF'
  | 'DAG_CYCLE'
  | 'COMPENSATE_OUTSIDE_TASKS'
  | 'POOL_UNKNOWN'
  | 'POOL_UNUSED'
  | 'POOL_TASK_CONFLICT'
  | 'PARAM_DEFAULT_INVALID'
  | 'PARAM_PATTERN_INVALID'
  | 'PARAM_NAME_RESERVED'
  | 'EXPR_SYNTAX'
  | 'EXPR_UNKNOWN_NAME'
  | 'EXPR_UNKNOWN_TASK'
  | 'EXPR_UNKNOWN_PARAM'
  | 'EXPR_UNKNOWN_OUTPUT'
  | 'EXPR_UNKNOWN_PROPERTY'
  | 'EXPR_NOT_UPSTREAM'
  | 'EXPR_ITEM_OUTSIDE_FOREACH'
  | 'EXPR_STATUS_FUNCTION_OUTSIDE_WHEN'
  | 'EXPR_RUN_OUTCOME_TOO_EARLY'
  | 'EXPR_CHILD_NOT_WAITED'
  | 'RUN_OUTPUT_READS_ONFAILURE'
  | 'OUTPUT_DUPLICATE'
  | 'OUTPUT_STDOUT_NOT_SHELL'
  | 'OUTPUT_STDOUT_TWICE'
  | 'WHEN_NOT_SINGLE_EXPRESSION'
  | 'WHEN_NEEDS_STATUS_FUNCTION'
  | 'FOREACH_NOT_LIST'
  | 'CRON_INVALID'
  | 'TIMEZONE_INVALID'
  | 'CATCHUP_WINDOW_TOO_SHORT'
  | 'CATCHUP_WINDOW_UNUSED'
  | 'PATH_GLOB_INVALID'
  | 'RETRY_DELAY_ORDER'
  | 'RETRY_FACTOR_UNUSED'
  | 'BREAKER_SCOPE_INVALID'
  | 'BREAKER_SETTINGS_CONFLICT';

/** A diagnostic before its position is known: the locator fills line and col lazily. */
export interface PendingDiagnostic {
  severity: Severity;
  code: DiagnosticCode;
  message: string;
  /** Path segments from the document root. */
  path: ReadonlyArray<string | number>;
  /** Point at the mapping key rather than the value (unknown fields, bad names as keys). */
  at?: 'key' | 'value';
  /** Position inside a scalar's source: `extra` characters after the `index`-th `needle`. */
  offsetInValue?: { needle: string; index: number; extra: number };
  /** Set when the position was known up front (syntax errors). */
  line?: number;
  col?: number;
}

export function toJsonPointer(path: ReadonlyArray<string | number>): string {
  if (path.length === 0) return '';
  return '/' + path.map((s) => String(s).replace(/~/g, '~0').replace(/\//g, '~1')).join('/');
}

export function compareDiagnostics(a: Diagnostic, b: Diagnostic): number {
  if (a.file !== b.file) return a.file < b.file ? -1 : 1;
  if (a.line !== b.line) return a.line - b.line;
  if (a.col !== b.col) return a.col - b.col;
  if (a.code !== b.code) return a.code < b.code ? -1 : 1;
  return a.message < b.message ? -1 : a.message > b.message ? 1 : 0;
}
