import { rm, writeFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import type { RunEvent } from '../../engine/run/RunEvent.js';
import { withEnv } from '../harness/cli.js';
import { gatePath } from '../harness/gatePath.js';
import { NatsServer, requireServer } from '../harness/natsServer.js';
import { openApp } from '../harness/openApp.js';
import { until } from '../harness/until.js';
import { repoWith, workflow } from '../harness/gitRepo.js';

const available = requireServer('nats-server', 'apt-get install -y nats-server');

/** The client connections nats-server has open now (its monitoring endpoint `/connz`). */
async function connectionCount(server: NatsServer): Promise<number> {
  const body = (await (await fetch(`${server.monitorUrl}/connz`)).json()) as { num_connections: number };
  return body.num_connections;
}

describe.skipIf(!available)('the application layer opens one NATS connection per process', () => {
  it('a run with a child run on the NATS bus uses one connection, and close() closes it', async () => {
    const server = await NatsServer.start(undefined, { monitor: true });
    const gate = await gatePath();
    const dir = await repoWith({
      'parent.yaml': workflow('parent', '  tasks:\n    - { name: first, run: "echo one" }\n    - { name: child, needs: [first], workflow: { name: kid } }\n'),
      'kid.yaml': workflow('kid', `  tasks:\n    - { name: wait, run: "while [ ! -f ${gate} ]; do sleep 0.05; done" }\n`),
    });
    try {
      await withEnv({ NATS_URL: server.url }, async () => {
        expect(await connectionCount(server)).toBe(0);
        const seen: RunEvent[] = [];
        const app = openApp({ repoDir: dir, bus: 'nats', onEvent: (e) => seen.push(e) });
        const parent = await app.start('parent', {});
        // Two runs live at once (the parent waits for its child, the child for the gate).
        await until('the child run to start its task', () => seen.some((e) => e.type === 'task.started' && e.task === 'wait'));
        expect(await connectionCount(server)).toBe(1);
        await writeFile(gate, '');
        const { state } = await parent.done;
        expect(state.status).toBe('succeeded');
        // Runs that end do not close what the process shares: the next run reuses it.
        expect(await connectionCount(server)).toBe(1);
        const again = await app.start('parent', {});
        expect((await again.done).state.status).toBe('succeeded');
        expect(await connectionCount(server)).toBe(1);
        await app.close();
        await until('the connection to close', async () => (await connectionCount(server)) === 0, 10_000);
      });
    } finally {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
