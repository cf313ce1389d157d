import { describe, expect, it } from 'vitest';
import { decodeSource } from '../../engine/spec/decodeSource.js';

describe('decodeSource', () => {
  it('decodes UTF-8 and strips a BOM', () => {
    expect(decodeSource(new Uint8Array([0xef, 0xbb, 0xbf, 0x61, 0x3a, 0x20, 0xc3, 0xa9]))).toEqual({ ok: true, text: 'a: é' });
  });

  it.each([
    [[0xff, 0xfe, 0x61, 0x00], 'UTF-16 LE'],
    [[0xfe, 0xff, 0x00, 0x61], 'UTF-16 BE'],
    [[0xff, 0xfe, 0x00, 0x00], 'UTF-32 LE'],
  ])('rejects %j as %s', (bytes, name) => {
    expect(decodeSource(new Uint8Array(bytes))).toEqual({
      ok: false,
      diagnostic: { severity: 'error', code: 'FILE_ENCODING', message: `file is encoded as ${name}; save it as UTF-8`, path: [], line: 1, col: 1 },
    });
  });

  it('points at the first invalid byte, counting multi-byte characters once', () => {
    const bytes = Buffer.concat([Buffer.from('a: 1\nbé: '), Buffer.from([0xe9])]);
    const r = decodeSource(bytes);
    expect(r.ok).toBe(false);
    if (!r.ok) expect([r.diagnostic.line, r.diagnostic.col, r.diagnostic.message]).toEqual([2, 5, 'invalid UTF-8 byte 0xE9; save the file as UTF-8 (it may be Latin-1 or Windows-1252)']);
  });

  it('rejects binary files by their NUL byte', () => {
    const r = decodeSource(Buffer.from('a: 1\n\0\0'));
    expect(r.ok).toBe(false);
    if (!r.ok) expect([r.diagnostic.line, r.diagnostic.col]).toEqual([2, 1]);
  });
});
