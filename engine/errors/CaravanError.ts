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
  | 'RUN_NOT_LIVE'
  | 'PARAM_INVALID'
  | 'RUN_SKIPPED'
  | 'BUS_UNAVAILABLE'
  | 'NOMAD_API'
  | 'NOMAD_UNREACHABLE'
  | 'CONSUL_UNREACHABLE'
  | 'DEV_MISSING'
  | 'AUDIT_REF_LOCKED'
  | 'AUDIT_WRITE_FAILED'
  | 'LEADERSHIP_LOST'
  | 'POOL_NOT_READY'
  | 'INTERNAL';

/** Process exit codes, following BSD sysexits where one fits. */
export const EXIT = {
  OK: 0,
  FAILED: 1,
  INVALID: 2,
  USAGE: 64,
  NO_INPUT: 66,
  UNAVAILABLE: 69,
  INTERNAL: 70,
  IO: 74,
  TEMPFAIL: 75,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

const exitByCode: Record<ErrorCode, ExitCode> = {
  USAGE: EXIT.USAGE,
  PATH_NOT_FOUND: EXIT.NO_INPUT,
  IO: EXIT.IO,
  WORKFLOW_INVALID: EXIT.INVALID,
  COMPILE_FAILED: EXIT.INVALID,
  GIT_REF_NOT_FOUND: EXIT.USAGE,
  NOT_A_REPOSITORY: EXIT.USAGE,
  WORKFLOW_NOT_FOUND: EXIT.NO_INPUT,
  RUN_NOT_FOUND: EXIT.NO_INPUT,
  RUN_NOT_LIVE: EXIT.USAGE,
  PARAM_INVALID: EXIT.USAGE,
  RUN_SKIPPED: EXIT.FAILED,
  BUS_UNAVAILABLE: EXIT.IO,
  NOMAD_API: EXIT.FAILED,
  NOMAD_UNREACHABLE: EXIT.IO,
  CONSUL_UNREACHABLE: EXIT.IO,
  DEV_MISSING: EXIT.UNAVAILABLE,
  AUDIT_REF_LOCKED: EXIT.IO,
  AUDIT_WRITE_FAILED: EXIT.IO,
  LEADERSHIP_LOST: EXIT.TEMPFAIL,
  POOL_NOT_READY: EXIT.FAILED,
  INTERNAL: EXIT.INTERNAL,
};

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

  get exitCode(): ExitCode {
    return exitByCode[this.code];
  }
}

export function isCaravanError(value: unknown): value is CaravanError {
  return value instanceof CaravanError;
}
