import { isCaravanError } from '../errors/CaravanError.js';

/** An error as it appears in a JSON log line. */
export interface SerializedError {
  type: string;
  message: string;
  /** CaravanError's stable code, or a library's or Node's own (`ECONNREFUSED`, a JetStream code). */
  code?: string | number;
  /** CaravanError's structured data. */
  data?: Readonly<Record<string, unknown>>;
  stack?: string;
  cause?: SerializedError;
  /** The errors an AggregateError holds (Node's connect tries each address of a host). */
  errors?: SerializedError[];
}

/** Deeper cause chains are cut: a log line is not the place for a whole history. */
const MAX_DEPTH = 8;

/**
 * The `err` serializer of the logger: type, message, stack, the stable `code` and `data`
 * of a CaravanError (or the `code` a library or Node put on its error), and the `cause`
 * chain, each cause serialized the same way. Values that are not errors (a thrown string)
 * keep their text. Cycles in the chain are cut.
 */
export function serializeError(err: unknown): SerializedError {
  return serialize(err, 0, new Set());
}

function serialize(err: unknown, depth: number, seen: Set<unknown>): SerializedError {
  if (!(err instanceof Error)) {
    if (isSerialized(err)) return err;
    return { type: typeof err, message: typeof err === 'string' ? err : safeText(err) };
  }
  seen.add(err);
  const out: SerializedError = { type: err.name, message: err.message };
  if (isCaravanError(err)) {
    out.code = err.code;
    if (Object.keys(err.data).length > 0) out.data = err.data;
  } else {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' || typeof code === 'number') out.code = code;
  }
  if (err.stack !== undefined) out.stack = err.stack;
  if (err.cause !== undefined && depth < MAX_DEPTH && !seen.has(err.cause)) out.cause = serialize(err.cause, depth + 1, seen);
  if (err instanceof AggregateError && Array.isArray(err.errors) && depth < MAX_DEPTH) {
    out.errors = err.errors.filter((e) => !seen.has(e)).map((e: unknown) => serialize(e, depth + 1, seen));
  }
  return out;
}

/** Serializing twice (a child's bindings, then the line) must give the same thing. */
function isSerialized(value: unknown): value is SerializedError {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string' && typeof (value as { message?: unknown }).message === 'string';
}

function safeText(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    // A value JSON cannot write (a cycle, a BigInt) still gets a line in the log.
    return String(value);
  }
}
