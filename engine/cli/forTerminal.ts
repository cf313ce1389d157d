import type { Io } from './Io.js';

/**
 * Control characters other than tab and newline: ESC starts the sequences that move the
 * cursor, rewrite the window title, or (on some terminals) answer with input of their own.
 */
// Matching control characters is this expression's whole purpose.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

/**
 * Text from outside Caravan (a task's output, a file's content quoted in a diagnostic) made
 * harmless for a terminal: each control character is shown as `\xNN` instead of acting.
 */
export function forTerminal(text: string): string {
  return text.replace(CONTROL, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/**
 * The writer for a command that prints text it did not write: neutralised on a terminal,
 * passed on unchanged to a pipe or a file (where a tool may want the bytes as they are).
 */
export function stdoutFor(io: Io): (text: string) => void {
  return io.isTTY === true ? (text) => io.stdout(forTerminal(text)) : io.stdout;
}
