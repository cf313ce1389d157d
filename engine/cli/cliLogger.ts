import { maskSecrets } from '../../agents/maskSecrets.js';
import type { LogFields, Logger } from '../run/Logger.js';

/**
 * The Logger of a command a person runs in a terminal: warnings and errors as one readable
 * line each on standard error (`caravan: warning: ...`), the rest dropped. Long-running
 * processes (pool agent, dev servers, controller) log JSON lines with createLogger instead.
 * Secret values given to withSecrets are masked in the message like anywhere else.
 */
export function cliLogger(write: (text: string) => void, secrets: readonly string[] = []): Logger {
  const mask = (text: string): string => (secrets.length === 0 ? text : maskSecrets(text, secrets));
  const self: Logger = {
    debug: () => undefined,
    info: () => undefined,
    warn: (msg: string, _fields?: LogFields) => write(`caravan: warning: ${mask(msg)}\n`),
    error: (msg: string, _fields?: LogFields) => write(`caravan: error: ${mask(msg)}\n`),
    child: () => self,
    withSecrets: (values) => cliLogger(write, [...secrets, ...values]),
  };
  return self;
}
