import { open } from 'node:fs/promises';
import type { RunEvent } from '../run/RunEvent.js';

/** At most this much of a journal is read per call: a long journal is read in steps, never whole. */
const STEP_BYTES = 4 * 1024 * 1024;

/** What one read of a journal found. */
export interface JournalRead {
  /** The events appended since the previous read, in order. */
  events: RunEvent[];
  /** The journal was written afresh since (a recovered run): `events` start again from its first event. */
  restarted: boolean;
  /** More is there than one read takes: read again at once. */
  more: boolean;
}

/**
 * Reads a run's journal (the format RunRecorder writes, see readJournal) as it grows: each
 * read returns only the whole lines appended since the last one, so following a journal
 * costs what was appended, not the whole file every time. A torn last line is left for the
 * next read.
 */
export class JournalTail {
  private offset = 0;
  /** Which file was read: inode and birth time, as a new file may get the old one's inode (where there is no birth time, the inode and the size tell). */
  private identity: string | undefined;
  /** Bytes read past the last newline: the start of a line still being written. */
  private pending: Buffer = Buffer.alloc(0);

  constructor(readonly path: string) {}

  /** Undefined when there is no journal (not yet written, or removed once the run is in Git). */
  async read(): Promise<JournalRead | undefined> {
    let file;
    try {
      file = await open(this.path, 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    try {
      const { size, ino, birthtimeMs } = await file.stat();
      const identity = `${ino}/${birthtimeMs}`;
      let restarted = false;
      // RunRecorder.open removes the journal and writes it afresh: another file, or a shorter one.
      if ((this.identity !== undefined && identity !== this.identity) || size < this.offset + this.pending.length) {
        this.offset = 0;
        this.pending = Buffer.alloc(0);
        restarted = this.identity !== undefined;
      }
      this.identity = identity;
      const from = this.offset + this.pending.length;
      const length = Math.min(size - from, STEP_BYTES);
      if (length <= 0) return { events: [], restarted, more: false };
      const buffer = Buffer.alloc(length);
      const { bytesRead } = await file.read(buffer, 0, length, from);
      const bytes = Buffer.concat([this.pending, buffer.subarray(0, bytesRead)]);
      const cut = bytes.lastIndexOf(0x0a);
      // Bytes are cut, not text: a multi-byte character split by STEP_BYTES waits whole in `pending`.
      this.pending = Buffer.from(bytes.subarray(cut + 1));
      const whole = cut >= 0 ? bytes.subarray(0, cut).toString('utf8') : '';
      const atStart = this.offset === 0;
      this.offset += cut + 1;
      const events: RunEvent[] = [];
      let first = atStart;
      for (const line of whole.split('\n')) {
        if (line.trim() === '') continue;
        // The first line is the header (the workflow and its source), not an event.
        if (first) {
          first = false;
          continue;
        }
        try {
          events.push(JSON.parse(line) as RunEvent);
        } catch {
          // RunRecorder cuts a failed append back to whole lines; a line that still does not
          // parse is skipped, as readJournal skips it, so indexes agree with it.
          continue;
        }
      }
      return { events, restarted, more: from + bytesRead < size };
    } finally {
      await file.close();
    }
  }
}
