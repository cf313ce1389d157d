import { readFileSync } from 'node:fs';
import type { NodeConnectionOptions } from '@nats-io/transport-node';

/**
 * Connection settings from the environment, so secrets never sit in flags or files Caravan
 * writes: NATS_URL (comma-separated), NATS_TOKEN, NATS_USER + NATS_PASSWORD, NATS_NKEY_SEED_FILE,
 * NATS_CREDS_FILE, and NATS_CA_FILE / NATS_CERT_FILE / NATS_KEY_FILE for TLS.
 */
export async function natsConnectionOptions(env: NodeJS.ProcessEnv = process.env, servers?: string[]): Promise<NodeConnectionOptions> {
  const opts: NodeConnectionOptions = {
    servers: servers ?? (env['NATS_URL'] ?? 'nats://127.0.0.1:4222').split(',').map((s) => s.trim()),
    name: 'caravan',
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    // nats.js otherwise builds an Error (a stack capture) per request to name a timeout's
    // caller: a fifth of a pool agent's CPU. Timeouts still raise, without that stack.
    noAsyncTraces: true,
  };
  if (env['NATS_TOKEN'] !== undefined) opts.token = env['NATS_TOKEN'];
  if (env['NATS_USER'] !== undefined) {
    opts.user = env['NATS_USER'];
    if (env['NATS_PASSWORD'] !== undefined) opts.pass = env['NATS_PASSWORD'];
  }
  if (env['NATS_CREDS_FILE'] !== undefined || env['NATS_NKEY_SEED_FILE'] !== undefined) {
    const { credsAuthenticator, nkeyAuthenticator } = await import('@nats-io/transport-node');
    if (env['NATS_CREDS_FILE'] !== undefined) opts.authenticator = credsAuthenticator(readFileSync(env['NATS_CREDS_FILE']));
    else opts.authenticator = nkeyAuthenticator(new TextEncoder().encode(readFileSync(env['NATS_NKEY_SEED_FILE']!, 'utf8').trim()));
  }
  if (env['NATS_CA_FILE'] !== undefined || env['NATS_CERT_FILE'] !== undefined) {
    opts.tls = {
      ...(env['NATS_CA_FILE'] !== undefined ? { caFile: env['NATS_CA_FILE'] } : {}),
      ...(env['NATS_CERT_FILE'] !== undefined ? { certFile: env['NATS_CERT_FILE'] } : {}),
      ...(env['NATS_KEY_FILE'] !== undefined ? { keyFile: env['NATS_KEY_FILE'] } : {}),
    };
  }
  return opts;
}
