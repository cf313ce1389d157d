import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { JournalTail } from '../../engine/audit/JournalTail.js';
import { parseJournal } from '../../engine/audit/readJournal.js';

/** A journal's text as RunRecorder writes it: the header line, then one event per line. */
const header = JSON.stringify({ journal: 1, workflow: 'w', runId: 'r1' }) + '\n';
const event = (i: number, extra = ''): string => JSON.stringify({ runId: 'r1', at: i, type: 'task.log', task: 't', attempt: 1, stream: 'stdout', line: `line ${i}${extra}` }) + '\n';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});
async function journal(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'caravan-tail-'));
  dirs.push(d);
  return join(d, 'r1.ndjson');
}

describe('JournalTail', () => {
  it('returns only what was appended since the last read, and undefined without a journal', async () => {
    const path = await journal();
    const tail = new JournalTail(path);
    expect(await tail.read()).toBeUndefined();
    await writeFile(path, header + event(1) + event(2));
    expect((await tail.read())!.events.map((e) => e.at)).toEqual([1, 2]);
    expect((await tail.read())!.events).toEqual([]);
    await appendFile(path, event(3));
    expect(await tail.read()).toEqual({ events: [JSON.parse(event(3))], restarted: false, more: false });
  });

  it('leaves a torn last line (and a multi-byte character cut in two) for the next read', async () => {
    const path = await journal();
    const tail = new JournalTail(path);
    const whole = Buffer.from(event(1, ' é€😀'));
    const cut = whole.indexOf(Buffer.from('€')) + 1;
    await writeFile(path, Buffer.concat([Buffer.from(header), whole.subarray(0, cut)]));
    expect((await tail.read())!.events).toEqual([]);
    await appendFile(path, whole.subarray(cut));
    expect((await tail.read())!.events.map((e) => (e as { line: string }).line)).toEqual(['line 1 é€😀']);
  });

  it('says so when the journal was written afresh (a recovered run), and reads it from its first event', async () => {
    const path = await journal();
    const tail = new JournalTail(path);
    await writeFile(path, header + event(1) + event(2) + event(3));
    await tail.read();
    await rm(path);
    await writeFile(path, header + event(1) + event(2) + event(3) + event(4));
    const again = (await tail.read())!;
    expect(again.restarted).toBe(true);
    expect(again.events.map((e) => e.at)).toEqual([1, 2, 3, 4]);
  });

  it('agrees with readJournal on every event, read in any number of steps', async () => {
    const path = await journal();
    const text = header + Array.from({ length: 200 }, (_, i) => event(i, 'x'.repeat(i % 50))).join('');
    const tail = new JournalTail(path);
    const got: unknown[] = [];
    // Appended in uneven pieces, as a recorder's flushes and a reader's polls interleave.
    for (let at = 0; at < text.length; at += 997) {
      await appendFile(path, text.slice(at, at + 997));
      got.push(...(await tail.read())!.events);
    }
    expect(got).toEqual(parseJournal(text)!.events);
  });
});
