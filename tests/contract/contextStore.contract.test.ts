import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CaravanError } from '../../engine/errors/CaravanError.js';
import { InMemoryContextStore } from '../../engine/local/InMemoryContextStore.js';
import { connectJetStream } from '../../engine/nats/connectJetStream.js';
import { natsConnectionOptions } from '../../engine/nats/natsConnectionOptions.js';
import type { ContextStore } from '../../engine/run/ContextStore.js';
import { attemptKey } from '../../engine/run/protocol.js';
import { NatsServer, natsServerBinaries } from '../harness/natsServer.js';

/** The stable code a get() of a key holding nothing rejects with, or the error itself if it is not one. */
async function missing(store: ContextStore, key: string): Promise<unknown> {
  try {
    await store.get(key);
  } catch (e) {
    return e instanceof CaravanError ? e.code : e;
  }
  return 'found';
}

/** A store for the suite, and how to close it with whatever it runs on. */
interface Opened {
  store: ContextStore;
  close: () => Promise<void>;
}

/** The behaviour every ContextStore must have (see engine/run/ContextStore.ts). */
function contextStoreContract(name: string, make: () => Promise<Opened>): void {
  describe(`ContextStore contract: ${name}`, () => {
    let store: ContextStore;
    let opened: Opened;
    beforeAll(async () => {
      opened = await make();
      store = opened.store;
    });
    afterAll(async () => {
      await opened.close();
    });

    // First: on JetStream nothing has created the context stream yet.
    it('rejects a key that holds nothing with CONTEXT_NOT_FOUND, before and after anything was stored', async () => {
      expect(await missing(store, 'never:stored:1')).toBe('CONTEXT_NOT_FOUND');
      await store.put('some:key:1', '{}');
      expect(await missing(store, 'never:stored:1')).toBe('CONTEXT_NOT_FOUND');
    });

    it('gives back exactly the text stored under an attempt key, however large', async () => {
      // Larger than a Nomad dispatch payload (16 KiB), which is why it is stored at all.
      const context = { params: { note: 'zäh 🐪 "quoted" \\ back\nslash' }, tasks: { a: { status: 'succeeded', outputs: { big: 'x'.repeat(200_000) }, attempts: 1 } }, run: { id: 'r1' } };
      const key = attemptKey('20261122-010203-abcdef', 'analyse[12]:compensate', 2);
      await store.put(key, JSON.stringify(context));
      expect(await store.get(key)).toBe(JSON.stringify(context));
    });

    it('takes a key stored again with the same text (a repeated dispatch of the attempt)', async () => {
      const key = attemptKey('r-again', 't', 1);
      await store.put(key, '{"params":{}}');
      await store.put(key, '{"params":{}}');
      expect(await store.get(key)).toBe('{"params":{}}');
    });

    it('keeps keys apart, and never hands one key\'s text to another whose subject token is the same', async () => {
      await store.put('r-apart:a:1', 'a1');
      await store.put('r-apart:b:1', 'b1');
      expect(await store.get('r-apart:a:1')).toBe('a1');
      expect(await store.get('r-apart:b:1')).toBe('b1');
      // `:` escapes to `_3a`, so on NATS these two share a subject: the later one wins
      // there, and the earlier key is not found rather than answered with the other's text.
      await store.put('r-tok:x:1', 'colon');
      await store.put('r-tok_3ax_3a1', 'literal');
      expect(await store.get('r-tok_3ax_3a1')).toBe('literal');
      const first = await store.get('r-tok:x:1').catch((e: unknown) => (e instanceof CaravanError ? e.code : e));
      expect(['colon', 'CONTEXT_NOT_FOUND']).toContain(first);
    });
  });
}

const servers: NatsServer[] = [];

contextStoreContract('in-memory', async () => ({ store: new InMemoryContextStore(), close: async () => undefined }));
for (const { label, bin } of natsServerBinaries()) {
  contextStoreContract(`NATS JetStream, ${label}`, async () => {
    const server = await NatsServer.start(undefined, { bin });
    servers.push(server);
    const nats = await connectJetStream({ connection: await natsConnectionOptions({}, [server.url]) });
    return { store: nats.contexts, close: () => nats.close() };
  });
}

afterAll(async () => {
  for (const server of servers) await server.close();
});

describe('the embedded context store', () => {
  it('forgets a context past its age, as the stream does', async () => {
    let now = 0;
    const store = new InMemoryContextStore({ maxAgeMs: 1000, now: () => now });
    await store.put('old:t:1', 'old');
    now = 500;
    await store.put('new:t:1', 'new');
    now = 1200;
    expect(await missing(store, 'old:t:1')).toBe('CONTEXT_NOT_FOUND');
    expect(await store.get('new:t:1')).toBe('new');
  });
});
