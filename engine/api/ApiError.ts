import { isCaravanError, type ErrorCode } from '../errors/CaravanError.js';

/**
 * A request the API turns away on purpose, with the HTTP status and the stable code of the
 * body `{"error": {"code", "message", "details"}}`. Details are facts about the request (the
 * field, the param's name, the leader's address), never values the caller sent as secrets.
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Readonly<Record<string, unknown>> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The status each application error is answered with; codes not listed are server faults (500). */
const STATUS_OF: Partial<Record<ErrorCode, number>> = {
  USAGE: 400,
  WORKFLOW_NOT_FOUND: 404,
  RUN_NOT_FOUND: 404,
  TASK_NOT_FOUND: 404,
  PARAM_INVALID: 422,
  WORKFLOW_INVALID: 422,
  RUN_ID_INVALID: 400,
  RUN_NOT_LIVE: 409,
  RUN_IN_PROGRESS: 409,
  NOTHING_TO_RETRY: 409,
  RUN_SKIPPED: 409,
  LEADERSHIP_LOST: 503,
  BUS_UNAVAILABLE: 503,
  NOMAD_UNREACHABLE: 503,
  CONSUL_UNREACHABLE: 503,
  AUDIT_REF_LOCKED: 503,
  AUDIT_BRANCH_BLOCKED: 503,
};

/** Data fields of an application error that are safe to hand to a client. */
const SAFE_DATA = ['runId', 'workflow', 'task', 'status', 'params', 'problems', 'cursor', 'diagnostics'];

/** An application error as the API answers it, or undefined for anything that is not one. */
export function fromCaravanError(e: unknown): ApiError | undefined {
  if (!isCaravanError(e)) return undefined;
  const status = STATUS_OF[e.code];
  if (status === undefined) return undefined;
  const details: Record<string, unknown> = {};
  for (const k of SAFE_DATA) if (e.data[k] !== undefined) details[k] = e.data[k];
  return new ApiError(status, e.code, e.message, details);
}
