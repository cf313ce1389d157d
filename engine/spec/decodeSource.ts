import type { PendingDiagnostic } from './Diagnostic.js';

export type DecodeResult = { ok: true; text: string } | { ok: false; diagnostic: PendingDiagnostic };

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

/**
 * Bytes to text. Workflow files must be UTF-8 (a BOM is tolerated): UTF-16 and UTF-32 files
 * and stray Latin-1 bytes make diffs and PR review unreadable, so they are rejected with the
 * position of the first bad byte rather than guessed at.
 */
export function decodeSource(bytes: Uint8Array): DecodeResult {
  const bom = detectWideBom(bytes);
  if (bom !== undefined) {
    return fail(1, 1, `file is encoded as ${bom}; save it as UTF-8`);
  }
  const nul = bytes.indexOf(0);
  if (nul !== -1) {
    const { line, col } = positionOfByte(bytes, nul);
    return fail(line, col, 'file contains a NUL byte; it looks binary, not YAML text');
  }
  try {
    // TextDecoder strips a UTF-8 BOM unless ignoreBOM is set.
    return { ok: true, text: utf8.decode(bytes) };
  } catch {
    // The decoder's error says only that the bytes are not UTF-8: the diagnostic says where.
    const bad = firstInvalidUtf8(bytes);
    const { line, col } = positionOfByte(bytes, bad);
    const hex = (bytes[bad] ?? 0).toString(16).toUpperCase().padStart(2, '0');
    return fail(line, col, `invalid UTF-8 byte 0x${hex}; save the file as UTF-8 (it may be Latin-1 or Windows-1252)`);
  }
}

function fail(line: number, col: number, message: string): DecodeResult {
  return { ok: false, diagnostic: { severity: 'error', code: 'FILE_ENCODING', message, path: [], line, col } };
}

function detectWideBom(b: Uint8Array): string | undefined {
  if (b[0] === 0xff && b[1] === 0xfe && b[2] === 0 && b[3] === 0) return 'UTF-32 LE';
  if (b[0] === 0 && b[1] === 0 && b[2] === 0xfe && b[3] === 0xff) return 'UTF-32 BE';
  if (b[0] === 0xff && b[1] === 0xfe) return 'UTF-16 LE';
  if (b[0] === 0xfe && b[1] === 0xff) return 'UTF-16 BE';
  return undefined;
}

/** 1-based line and column (in characters, counting each UTF-8 sequence once) of a byte offset. */
function positionOfByte(bytes: Uint8Array, offset: number): { line: number; col: number } {
  let line = 1;
  let col = 1;
  for (let i = 0; i < offset; i++) {
    const b = bytes[i] ?? 0;
    if (b === 0x0a) {
      line++;
      col = 1;
    } else if ((b & 0xc0) !== 0x80) {
      col++;
    }
  }
  return { line, col };
}

function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i] ?? 0;
    let n: number;
    if (c < 0x80) n = 0;
    else if (c >= 0xc2 && c <= 0xdf) n = 1;
    else if (c >= 0xe0 && c <= 0xef) n = 2;
    else if (c >= 0xf0 && c <= 0xf4) n = 3;
    else return i;
    for (let k = 1; k <= n; k++) {
      const cc = b[i + k];
      if (cc === undefined || (cc & 0xc0) !== 0x80) return i;
    }
    i += n + 1;
  }
  // Overlong or surrogate sequences: the decoder refused, so blame the start of the file.
  return 0;
}
