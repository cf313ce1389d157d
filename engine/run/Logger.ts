/**
 * The port the engine and the long-running processes log through: pino in production
 * (engine/telemetry/createLogger), nothing or a recorder in tests. Messages are short
 * constant sentences; what varies goes in fields, so that JSON lines can be filtered by
 * workflow, run, task and attempt.
 */

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/**
 * Structured fields of one log line or of a child logger. The four named ones are the
 * project's standard keys: use them (not `runId`, `instance`...) so that every process's
 * lines can be joined. `task` is an instance key (`name` or `name[i]`).
 */
export interface LogFields {
  workflow?: string;
  run?: string;
  task?: string;
  attempt?: number;
  /** A caught error: serialised with its code, data and cause chain. */
  err?: unknown;
  [field: string]: unknown;
}

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger whose every line carries `bindings` (typically workflow and run, then task and attempt). */
  child(bindings: LogFields): Logger;
  /**
   * A logger that replaces these values with `***` wherever they appear in its lines and its
   * children's (message, fields, bindings, error messages and stacks). Secret values come
   * from params and environments marked secret, which no field name gives away.
   */
  withSecrets(values: readonly string[]): Logger;
}

/** A logger that drops everything: the default wherever none is given. Shared, hence frozen. */
export const noopLogger: Logger = Object.freeze({
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => noopLogger,
  withSecrets: () => noopLogger,
});

/** One line as MemoryLogger kept it: the child's bindings merged under the line's fields. */
export interface LogEntry {
  level: LogLevel;
  msg: string;
  fields: LogFields;
}

/**
 * A logger for tests: it keeps every line in `entries`, shared with its children, so a test
 * can assert what was logged and with which fields. Secrets are masked in the message and
 * in string fields (one level deep), which is enough to check that code hands them over.
 */
export class MemoryLogger implements Logger {
  constructor(
    readonly entries: LogEntry[] = [],
    private readonly bindings: LogFields = {},
    private readonly secrets: readonly string[] = [],
  ) {}

  debug(msg: string, fields?: LogFields): void {
    this.write('debug', msg, fields);
  }

  info(msg: string, fields?: LogFields): void {
    this.write('info', msg, fields);
  }

  warn(msg: string, fields?: LogFields): void {
    this.write('warn', msg, fields);
  }

  error(msg: string, fields?: LogFields): void {
    this.write('error', msg, fields);
  }

  child(bindings: LogFields): Logger {
    return new MemoryLogger(this.entries, { ...this.bindings, ...bindings }, this.secrets);
  }

  withSecrets(values: readonly string[]): Logger {
    return new MemoryLogger(this.entries, this.bindings, [...this.secrets, ...values]);
  }

  /** The lines at `level`, or all of them. */
  lines(level?: LogLevel): LogEntry[] {
    return level === undefined ? this.entries : this.entries.filter((e) => e.level === level);
  }

  private write(level: LogLevel, msg: string, fields: LogFields | undefined): void {
    const all: LogFields = { ...this.bindings, ...fields };
    if (this.secrets.length > 0) {
      for (const [k, v] of Object.entries(all)) if (typeof v === 'string') all[k] = this.mask(v);
    }
    this.entries.push({ level, msg: this.mask(msg), fields: all });
  }

  private mask(text: string): string {
    let out = text;
    for (const s of this.secrets) if (s.length >= 3) out = out.split(s).join('***');
    return out;
  }
}
