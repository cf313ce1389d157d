import { createRequire } from 'node:module';
import { destination as pinoDestination, pino, stdTimeFunctions, type Logger as Pino } from 'pino';
import { CaravanError } from '../errors/CaravanError.js';
import type { LogFields, Logger, LogLevel } from '../run/Logger.js';
import { SecretMaskingStream, secretForms, type LineSink } from './SecretMaskingStream.js';
import { serializeError } from './serializeError.js';

/** Levels the logger accepts as a threshold: the port's four, pino's two extremes, and silence. */
export type LogThreshold = LogLevel | 'trace' | 'fatal' | 'silent';

export type LogFormat = 'json' | 'pretty';

export interface CreateLoggerOptions {
  /** Lowest level written. Default: `CARAVAN_LOG_LEVEL`, else `info`. */
  level?: LogThreshold;
  /** `json` (one object per line) or `pretty` (for a terminal). Default: `CARAVAN_LOG_FORMAT`, else `json`. */
  format?: LogFormat;
  /** Where lines go. Default: standard error, written synchronously (nothing lost on exit). */
  destination?: LineSink;
  /** The process's name in every line (`caravan-agent`, `caravan-controller`). */
  name?: string;
  /** Fields on every line, as a child's bindings. */
  bindings?: LogFields;
  /** Values masked from the start (see Logger.withSecrets). */
  secrets?: readonly string[];
  /** Field paths to redact besides REDACT_PATHS (pino's path syntax: `a.b`, `*.b`, `a["x-y"]`). */
  redact?: readonly string[];
  /** Where CARAVAN_LOG_LEVEL and CARAVAN_LOG_FORMAT are read. Default: process.env. */
  env?: Readonly<Record<string, string | undefined>>;
}

const THRESHOLDS: readonly LogThreshold[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];
const FORMATS: readonly LogFormat[] = ['json', 'pretty'];

/** Field names that hold a credential wherever they appear: their values never reach a line. */
const SECRET_KEYS = ['token', 'password', 'passwd', 'pass', 'secret', 'authorization', 'cookie', 'apiKey', 'api_key', 'accessToken', 'nkey', 'seed', 'jwt'];

/**
 * Paths pino redacts by name, at the top level and one level down (`headers.authorization`,
 * `nats.pass`), plus the HTTP headers Nomad and Consul take their tokens in and the data of
 * a CaravanError. Values that carry a secret under an innocent name (a param marked
 * secret) are only found by value: see Logger.withSecrets.
 */
export const REDACT_PATHS: readonly string[] = [
  ...SECRET_KEYS,
  ...SECRET_KEYS.map((k) => `*.${k}`),
  ...SECRET_KEYS.map((k) => `err.data.${k}`),
  '*["x-nomad-token"]',
  '*["x-consul-token"]',
  '*.headers.authorization',
  '*.headers.cookie',
  '*.headers["x-nomad-token"]',
  '*.headers["x-consul-token"]',
];

/**
 * The production logger: pino writing JSON lines (time, level, msg, pid, hostname, then the
 * fields), to standard error unless told otherwise; long-running processes run under Nomad,
 * which collects them. `CARAVAN_LOG_FORMAT=pretty` formats them with pino-pretty for a
 * terminal, `CARAVAN_LOG_LEVEL` sets the threshold. Secrets are kept out twice: by field
 * name (REDACT_PATHS) and by value (withSecrets, `secrets`).
 */
export function createLogger(options: CreateLoggerOptions = {}): Logger {
  const env = options.env ?? process.env;
  const level = pick('CARAVAN_LOG_LEVEL', options.level ?? env['CARAVAN_LOG_LEVEL'], THRESHOLDS, 'info');
  const format = pick('CARAVAN_LOG_FORMAT', options.format ?? env['CARAVAN_LOG_FORMAT'], FORMATS, 'json');
  const sink = options.destination ?? pinoDestination({ dest: 2, sync: true });
  const colorize = options.destination === undefined && process.stderr.isTTY === true;
  const stream = new SecretMaskingStream(format === 'pretty' ? prettySink(sink, colorize) : sink);
  const root = pino(
    {
      level,
      ...(options.name !== undefined ? { name: options.name } : {}),
      timestamp: stdTimeFunctions.isoTime,
      // Level names, not pino's numbers: the lines are read by people and by log queries.
      formatters: { level: (label) => ({ level: label }) },
      serializers: { err: serializeError },
      redact: { paths: [...REDACT_PATHS, ...(options.redact ?? [])], censor: '***' },
    },
    stream,
  );
  const logger = new PinoLogger(root, stream, secretForms(options.secrets ?? []));
  return options.bindings !== undefined ? logger.child(options.bindings) : logger;
}

/** The Logger port over one pino logger; children share the root's masking stream. */
class PinoLogger implements Logger {
  constructor(
    private readonly pino: Pino,
    private readonly stream: SecretMaskingStream,
    private readonly secrets: readonly string[],
    private readonly bound: Readonly<LogFields> = {},
  ) {}

  debug(msg: string, fields?: LogFields): void {
    if (this.pino.isLevelEnabled('debug')) this.write('debug', msg, fields);
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
    // pino appends a child's bindings to its parent's: binding `run` again (a supervisor's
    // logger handed to the engine, which binds workflow and run itself) would write the key
    // twice on every line. Bindings that repeat what is bound already are left out.
    let fresh: LogFields | undefined;
    for (const [k, v] of Object.entries(bindings)) {
      if (this.bound[k] === v) continue;
      fresh ??= {};
      fresh[k] = v;
    }
    if (fresh === undefined) return this;
    return new PinoLogger(this.pino.child(fresh), this.stream, this.secrets, { ...this.bound, ...fresh });
  }

  withSecrets(values: readonly string[]): Logger {
    return new PinoLogger(this.pino, this.stream, secretForms(values, this.secrets), this.bound);
  }

  private write(level: LogLevel, msg: string, fields: LogFields | undefined): void {
    // pino writes the finished line to the stream synchronously, inside this call: the
    // stream masks it with this logger's secrets, whichever logger made the bindings.
    const previous = this.stream.secrets;
    this.stream.secrets = this.secrets;
    try {
      if (fields === undefined) this.pino[level](msg);
      else this.pino[level](fields, msg);
    } finally {
      this.stream.secrets = previous;
    }
  }
}

function pick<T extends string>(variable: string, value: string | undefined, allowed: readonly T[], fallback: T): T {
  if (value === undefined || value === '') return fallback;
  const v = value.toLowerCase();
  if ((allowed as readonly string[]).includes(v)) return v as T;
  throw new CaravanError('USAGE', `${variable}=${value} is not one of ${allowed.join(', ')}`, { data: { variable, value, allowed } });
}

/** The part of pino-pretty used here: a function from one JSON line to its pretty text. */
interface PinoPretty {
  prettyFactory(options: { colorize?: boolean; translateTime?: string; ignore?: string }): (line: string) => string;
}

/**
 * pino-pretty in this thread rather than as a worker transport: a development aid needs no
 * thread of its own, its lines come out in order with everything else on the terminal, and
 * none is lost when the process exits. It is a development dependency, so it is loaded
 * only when asked for.
 */
function prettySink(sink: LineSink, colorize: boolean): LineSink {
  let pretty: PinoPretty;
  try {
    pretty = createRequire(import.meta.url)('pino-pretty') as PinoPretty;
  } catch (cause) {
    throw new CaravanError('USAGE', 'CARAVAN_LOG_FORMAT=pretty needs the pino-pretty package (a development dependency); use json', { cause });
  }
  const format = pretty.prettyFactory({ colorize, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' });
  return { write: (line: string) => sink.write(format(line)) };
}
