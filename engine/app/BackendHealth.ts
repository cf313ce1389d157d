import type { Logger } from '../run/Logger.js';
import type { Registry } from '../run/Registry.js';

/** One backend as /ready shows it: `off` when this process does not use it. */
export type BackendState = 'connected' | 'unreachable' | 'off';

export interface BackendReport {
  ok: boolean;
  backends: { nats: BackendState; consul: BackendState; nomad: BackendState };
}

export interface BackendHealthOptions {
  /** Consul (the registry) if the process uses one: a KV read is the check. */
  registry?: Registry;
  /** The process reaches NATS ($NATS_URL and friends): a connect and a round trip is the check. */
  nats: boolean;
  /** The process reaches Nomad ($NOMAD_ADDR): a job listing is the check. */
  nomad: boolean;
  logger: Logger;
  /** One check serves the probes of this long (default 5 s): a probe every second must not open a NATS connection every second. */
  cacheMs?: number;
  /** Each check gives up after this long (default 3 s). */
  timeoutMs?: number;
}

/**
 * Whether the backends a controller uses answer, for GET /ready. Each check is a real round
 * trip with a bound; a backend going down or coming back is logged once, with the reason
 * (the probe's answer says only `unreachable`: probes are often public).
 */
export class BackendHealth {
  private last: { at: number; report: Promise<BackendReport> } | undefined;
  private readonly previous = new Map<string, BackendState>();

  constructor(private readonly options: BackendHealthOptions) {}

  check(): Promise<BackendReport> {
    const now = Date.now();
    if (this.last !== undefined && now - this.last.at < (this.options.cacheMs ?? 5000)) return this.last.report;
    const report = this.run();
    this.last = { at: now, report };
    return report;
  }

  private async run(): Promise<BackendReport> {
    const o = this.options;
    const [nats, consul, nomad] = await Promise.all([
      o.nats ? this.probe('nats', checkNats) : ('off' as const),
      o.registry !== undefined ? this.probe('consul', async () => void (await o.registry!.getKey('caravan/sync-last'))) : ('off' as const),
      o.nomad ? this.probe('nomad', checkNomad) : ('off' as const),
    ]);
    const backends = { nats, consul, nomad };
    return { ok: Object.values(backends).every((s) => s !== 'unreachable'), backends };
  }

  private async probe(name: string, check: () => Promise<void>): Promise<BackendState> {
    const limit = this.options.timeoutMs ?? 3000;
    let timer: NodeJS.Timeout | undefined;
    let state: BackendState;
    let reason: unknown;
    try {
      await Promise.race([check(), new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${limit} ms`)), limit)))]);
      state = 'connected';
    } catch (e) {
      state = 'unreachable';
      reason = e;
    } finally {
      clearTimeout(timer);
    }
    if (this.previous.get(name) !== state) {
      if (state === 'unreachable') this.options.logger.warn('backend unreachable: not ready', { backend: name, err: reason });
      else if (this.previous.has(name)) this.options.logger.info('backend reachable again', { backend: name });
      this.previous.set(name, state);
    }
    return state;
  }
}

async function checkNats(): Promise<void> {
  const { connect } = await import('@nats-io/transport-node');
  const { natsConnectionOptions } = await import('../nats/natsConnectionOptions.js');
  // A connection of its own, not retried: the question is whether NATS answers now.
  const nc = await connect({ ...(await natsConnectionOptions()), name: 'caravan-ready', reconnect: false, maxReconnectAttempts: 0, timeout: 2000 });
  try {
    await nc.flush();
  } finally {
    await nc.close().catch(() => undefined);
  }
}

async function checkNomad(): Promise<void> {
  const { NomadClient } = await import('../nomad/NomadClient.js');
  // A prefix no job has: the cheapest authenticated listing there is.
  await new NomadClient({ retries: 0, timeoutMs: 2000 }).listJobs('caravan-ready-probe-');
}
