import type { CaravanError, ErrorCode } from '../errors/CaravanError.js';

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
  /** Stopped by SIGHUP, SIGINT or SIGTERM, as shells report it (128 + the signal's number). */
  HANGUP: 129,
  INTERRUPTED: 130,
  TERMINATED: 143,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** The exit code for each error code: user errors map to sysexits, never to 70 (internal). */
export const EXIT_BY_CODE: Readonly<Record<ErrorCode, ExitCode>> = {
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
  TASK_NOT_FOUND: EXIT.NO_INPUT,
  INTERRUPTED: EXIT.INTERRUPTED,
  CONTEXT_NOT_FOUND: EXIT.FAILED,
  PARAM_INVALID: EXIT.USAGE,
  RUN_SKIPPED: EXIT.FAILED,
  BUS_UNAVAILABLE: EXIT.IO,
  NOMAD_API: EXIT.FAILED,
  NOMAD_UNREACHABLE: EXIT.IO,
  CONSUL_UNREACHABLE: EXIT.IO,
  DEV_MISSING: EXIT.UNAVAILABLE,
  DEV_SERVER_FAILED: EXIT.UNAVAILABLE,
  AUDIT_REF_LOCKED: EXIT.IO,
  AUDIT_WRITE_FAILED: EXIT.IO,
  AUDIT_REF_CONFLICT: EXIT.TEMPFAIL,
  AUDIT_BRANCH_FOREIGN: EXIT.USAGE,
  AUDIT_BRANCH_BLOCKED: EXIT.USAGE,
  LEADERSHIP_LOST: EXIT.TEMPFAIL,
  JOB_NOT_OWNED: EXIT.FAILED,
  POOL_NOT_READY: EXIT.FAILED,
  POOL_AGENT_STOPPING: EXIT.TEMPFAIL,
  EXPRESSION_FAILED: EXIT.FAILED,
  SECRET_UNAVAILABLE: EXIT.FAILED,
  INTERNAL: EXIT.INTERNAL,
};

/** The exit code the CLI returns for an error it reports (the domain knows no exit codes). */
export function exitCodeFor(err: CaravanError): ExitCode {
  return EXIT_BY_CODE[err.code];
}
