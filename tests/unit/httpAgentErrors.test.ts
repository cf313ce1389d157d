import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentResult } from '../../agents/AgentType.js';
import { httpAgent } from '../../agents/builtinAgents.js';
import { freePort } from '../harness/natsServer.js';

/**
 * A failed request names the whole URL it went to (path and query: one host often serves
 * many hooks), but never the credentials a URL can carry.
 */
async function request(url: string): Promise<AgentResult> {
  return httpAgent.run({ agent: 'http', env: {}, outputs: [], http: { url, method: 'POST' } }, { log: () => undefined, signal: new AbortController().signal, scratchDir: '/nonexistent', baseDir: '/nonexistent' });
}

describe('http agent failures', () => {
  let server: Server;
  let base: string;
  beforeAll(async () => {
    server = createServer((req, res) => {
      req.resume();
      res.statusCode = 404;
      res.end('no such hook');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('an answer that is not 2xx names the full URL without user and password', async () => {
    const r = await request(`http://hook-user:hunter2pw@${base}/hooks/releases?channel=ops#top`);
    expect(r).toEqual({ ok: false, error: `HTTP 404 from http://${base}/hooks/releases?channel=ops`, retryable: false, failure: 'exit' });
  });

  it('a request that fails names the full URL without user and password', async () => {
    const port = await freePort();
    const r = await request(`http://hook-user:hunter2pw@127.0.0.1:${port}/hooks/releases?channel=ops`);
    expect(r.ok).toBe(false);
    const error = (r as { error: string }).error;
    expect(error).toMatch(new RegExp(`^request to http://127\\.0\\.0\\.1:${port}/hooks/releases\\?channel=ops failed: `));
    expect(error).not.toMatch(/hunter2pw|hook-user/);
  });
});
