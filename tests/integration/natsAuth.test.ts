import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeAccount, encodeOperator, encodeUser, fmtCreds } from '@nats-io/jwt';
import { createAccount, createOperator, createUser } from '@nats-io/nkeys';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectJetStream } from '../../engine/nats/connectJetStream.js';
import { natsConnectionOptions } from '../../engine/nats/natsConnectionOptions.js';
import { eventSubject, runSubjects } from '../../engine/run/Bus.js';
import { eventId, type RunEvent } from '../../engine/run/RunEvent.js';
import { NatsServer, requireServer } from '../harness/natsServer.js';
import { until } from '../harness/until.js';

const available = requireServer('nats-server', 'apt-get install -y nats-server');

/** Connects with settings from `env` only, publishes one event and reads it back through JetStream. */
async function roundTrip(env: NodeJS.ProcessEnv, url: string): Promise<string> {
  const nats = await connectJetStream({ connection: { ...(await natsConnectionOptions(env, [url])), maxReconnectAttempts: 0, timeout: 5000 } });
  const bus = nats.bus;
  try {
    const got: string[] = [];
    const stop = bus.subscribe(runSubjects('auth', 'r1'), (e) => got.push(e.type));
    const e: RunEvent = { runId: 'r1', at: 1, type: 'task.started', task: 't', attempt: 1 };
    bus.publish(eventSubject('auth', 'r1', 't'), e, { msgId: eventId(e), origin: 'agent' });
    await bus.flush();
    await until('the event back', () => got.length > 0, 15_000);
    stop();
    return got.join(',');
  } finally {
    await nats.close();
  }
}

async function refused(env: NodeJS.ProcessEnv, url: string): Promise<string> {
  try {
    await roundTrip(env, url);
  } catch (e) {
    return (e as Error).message;
  }
  return 'connected';
}

describe.skipIf(!available)('NATS credentials and TLS from the environment, against servers that require them', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'caravan-nats-auth-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a token (NATS_TOKEN)', async () => {
    const server = await NatsServer.start('authorization { token: "tok-3f9a1c" }\n');
    try {
      expect(await roundTrip({ NATS_TOKEN: 'tok-3f9a1c' }, server.url)).toBe('task.started');
      const why = await refused({ NATS_TOKEN: 'wrong' }, server.url);
      expect(why).toMatch(/authorization/i);
      expect(why).not.toContain('wrong');
    } finally {
      await server.close();
    }
  });

  it('a user and password (NATS_USER, NATS_PASSWORD)', async () => {
    const server = await NatsServer.start('authorization { user: caravan, password: "pw-81b2" }\n');
    try {
      expect(await roundTrip({ NATS_USER: 'caravan', NATS_PASSWORD: 'pw-81b2' }, server.url)).toBe('task.started');
      expect(await refused({ NATS_USER: 'caravan' }, server.url)).toMatch(/authorization/i);
    } finally {
      await server.close();
    }
  });

  it('an nkey seed read from a file (NATS_NKEY_SEED_FILE)', async () => {
    const user = createUser();
    const seedFile = join(dir, 'user.nk');
    await writeFile(seedFile, new TextDecoder().decode(user.getSeed()) + '\n', { mode: 0o600 });
    const server = await NatsServer.start(`authorization { users: [ { nkey: "${user.getPublicKey()}" } ] }\n`);
    try {
      expect(await roundTrip({ NATS_NKEY_SEED_FILE: seedFile }, server.url)).toBe('task.started');
      const other = join(dir, 'other.nk');
      await writeFile(other, new TextDecoder().decode(createUser().getSeed()));
      expect(await refused({ NATS_NKEY_SEED_FILE: other }, server.url)).toMatch(/authorization/i);
    } finally {
      await server.close();
    }
  });

  it('a creds file (NATS_CREDS_FILE): a user JWT signed by an account the operator-mode server trusts', async () => {
    const operator = createOperator();
    const account = createAccount();
    // Every limit spelled out: one left out reads as 0 (no subscriptions, no payload).
    const limits = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1, mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 };
    const accountJwt = await encodeAccount('caravan', account, { limits }, { signer: operator });
    // JetStream in operator mode needs a system account.
    const system = createAccount();
    const systemJwt = await encodeAccount('SYS', system, {}, { signer: operator });
    const config = `operator: "${await encodeOperator('test-operator', operator)}"\nsystem_account: ${system.getPublicKey()}\nresolver: MEMORY\nresolver_preload: {\n  ${account.getPublicKey()}: "${accountJwt}"\n  ${system.getPublicKey()}: "${systemJwt}"\n}\n`;
    const creds = async (file: string, signer = account): Promise<string> => {
      const user = createUser();
      await writeFile(join(dir, file), fmtCreds(await encodeUser('agent', user, signer), user), { mode: 0o600 });
      return join(dir, file);
    };
    const server = await NatsServer.start(config);
    try {
      expect(await roundTrip({ NATS_CREDS_FILE: await creds('agent.creds') }, server.url)).toBe('task.started');
      // Signed by an account the server does not know.
      expect(await refused({ NATS_CREDS_FILE: await creds('stranger.creds', createAccount()) }, server.url)).toMatch(/authorization|authentication/i);
    } finally {
      await server.close();
    }
  });

  it('TLS with a private CA (NATS_CA_FILE), verified: a client without the CA is refused', async () => {
    const ssl = (...args: string[]): void => {
      execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
    };
    ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=caravan test CA');
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
    await writeFile(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
    ssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '1', '-extfile', 'san.ext');
    const server = await NatsServer.start(`tls {\n  cert_file: "${join(dir, 'server.pem')}"\n  key_file: "${join(dir, 'server.key')}"\n}\nauthorization { token: "tok-tls" }\n`);
    try {
      expect(await roundTrip({ NATS_CA_FILE: join(dir, 'ca.pem'), NATS_TOKEN: 'tok-tls' }, server.url)).toBe('task.started');
      expect(await refused({ NATS_TOKEN: 'tok-tls' }, server.url)).toMatch(/certificate|self.signed|tls/i);
    } finally {
      await server.close();
    }
    // Mutual TLS: the server verifies a client certificate (NATS_CERT_FILE, NATS_KEY_FILE).
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'client.key', '-out', 'client.csr', '-subj', '/CN=caravan-agent');
    ssl('x509', '-req', '-in', 'client.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'client.pem', '-days', '1');
    const mutual = await NatsServer.start(`tls {\n  cert_file: "${join(dir, 'server.pem')}"\n  key_file: "${join(dir, 'server.key')}"\n  ca_file: "${join(dir, 'ca.pem')}"\n  verify: true\n}\n`);
    try {
      expect(await roundTrip({ NATS_CA_FILE: join(dir, 'ca.pem'), NATS_CERT_FILE: join(dir, 'client.pem'), NATS_KEY_FILE: join(dir, 'client.key') }, mutual.url)).toBe('task.started');
      expect(await refused({ NATS_CA_FILE: join(dir, 'ca.pem') }, mutual.url)).not.toBe('connected');
    } finally {
      await mutual.close();
    }
  });
});
