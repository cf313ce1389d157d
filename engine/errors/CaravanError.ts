/**
 * Every error Caravan raises on purpose carries a stable `code` that tools and the CLI can
 * branch on, structured `data` for machines, and the underlying `cause`.
 */
export type ErrorCode =
  | 'USAGE'
  | 'PATH_NOT_FOUND'
  | 'IO'
  | 'WORKFLOW_INVALID'
  | 'COMPILE_FAILED'
  | 'GIT_REF_NOT_FOUND'
  | 'NOT_A_REPOSITORY'
  | 'WORKFLOW_NOT_FOUND'
  | 'RUN_NOT_FOUND'
  | 'RUN_ID_INVALID'
  | 'RUN_NOT_LIVE'
  | 'RUN_IN_PROGRESS'
  | 'NOTHING_TO_RETRY'
  | 'TASK_NOT_FOUND'
  | 'INTERRUPTED'
  | 'PARAM_INVALID'
  | 'RUN_SKIPPED'
  | 'BUS_UNAVAILABLE'
  | 'CONTEXT_NOT_FOUND'
  | 'NOMAD_API'
  | 'NOMAD_UNREACHABLE'
  | 'CONSUL_UNREACHABLE'
  | 'DEV_MISSING'
  | 'DEV_SERVER_FAILED'
  | 'AUDIT_REF_LOCKED'
  | 'AUDIT_WRITE_FAILED'
  | 'AUDIT_REF_CONFLICT'
  | 'AUDIT_BRANCH_FOREIGN'
  | 'AUDIT_BRANCH_BLOCKED'
  | 'LEADERSHIP_LOST'
  | 'JOB_NOT_OWNED'
  | 'POOL_NOT_READY'
  | 'POOL_AGENT_STOPPING'
  | 'EXPRESSION_FAILED'
  | 'SECRET_UNAVAILABLE'
  | 'OUTPUT_TOO_LARGE'
  | 'GITHUB_API'
  | 'SUBSCRIBER_TOO_SLOW'
  | 'CONTROLLER_UNREACHABLE'
  | 'CONTROLLER_UNAUTHORIZED'
  | 'CONTROLLER_FORBIDDEN'
  | 'CONTROLLER_NOT_LEADER'
  | 'CONTROLLER_CONFLICT'
  | 'CONTROLLER_RATE_LIMITED'
  | 'CONTROLLER_API'
  | 'INTERNAL';

export interface CaravanErrorOptions {
  data?: Readonly<Record<string, unknown>>;
  cause?: unknown;
}

export class CaravanError extends Error {
  readonly code: ErrorCode;
  readonly data: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message: string, options: CaravanErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CaravanError';
    this.code = code;
    this.data = options.data ?? {};
  }

  /** Errors the user can fix themselves; the CLI prints them without a stack trace. */
  get isUserError(): boolean {
    return this.code !== 'INTERNAL';
  }
}

export function isCaravanError(value: unknown): value is CaravanError {
  return value instanceof CaravanError;
}
