import { readFile } from 'node:fs/promises';
import type { RunEvent } from '../run/RunEvent.js';
import type { JournalHeader } from './RunRecorder.js';

/** A run's local journal: the header RunRecorder wrote first, then every event in order. */
export interface Journal {
  header: JournalHeader;
  events: RunEvent[];
}

/**
 * Reads a journal written by RunRecorder (the format is defined there, so it is read here
 * too, not by its users). Undefined when there is no journal, or it is not one. A process
 * killed mid-write can leave half a line at the end: that line is left out.
 */
export async function readJournal(path: string): Promise<Journal | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  return parseJournal(text);
}

/** The pure half of readJournal, for tests and for journals read from elsewhere. */
export function parseJournal(text: string): Journal | undefined {
  const lines: unknown[] = [];
  for (const l of text.split('\n')) {
    if (l.trim() === '') continue;
    try {
      lines.push(JSON.parse(l));
    } catch {
      // Only the last line can be torn (appends are whole lines); skip it.
      continue;
    }
  }
  const header = lines[0] as Partial<JournalHeader> | undefined;
  if (header === undefined || header.journal !== 1) return undefined;
  return { header: header as JournalHeader, events: lines.slice(1) as RunEvent[] };
}
