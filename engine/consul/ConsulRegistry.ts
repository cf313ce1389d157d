import Consul from 'consul';
import { CaravanError } from '../errors/CaravanError.js';
import { noopLogger, type Logger } from '../run/Logger.js';
import type { Metrics } from '../run/Metrics.js';
import { checkRegistryKey, type LeaderOptions, type Registry, type RunStatusRecord } from '../run/Registry.js';

export type { LeaderOptions, RunStatusRecord } from '../run/Registry.js';

export interface ConsulRegistryOptions {
  /** host:port of the agent's HTTP API (default: $CONSUL_HTTP_ADDR, else 127.0.0.1:8500). */
  address?: string;
  /** ACL token (default: $CONSUL_HTTP_TOKEN). */
  token?: string;
  /** Where failures that do not stop the caller go (a TTL renewal, a deregistration). */
  logger?: Logger;
  /** Counts every HTTP API call by outcome: caravan_backend_requests_total{backend="consul"}. */
  metrics?: Metrics;
}

/**
 * Caravan's registry on Consul (behind its own interface: the `consul` npm package is no
 * longer maintained upstream). The controller registers itself as `caravan-controller` with a
 * TTL check, elects a leader with a session lock on `caravan/leader`, mirrors run status
 * to KV `caravan/runs/<workflow>/<run-id>` for the Consul UI, and keeps durable controller
 * state in KV with check-and-set writes (getKey, putKey).
 */
export class ConsulRegistry implements Registry {
  private readonly consul: Consul;
  private readonly logger: Logger;
  private readonly metrics: Metrics | undefined;

  constructor(o: ConsulRegistryOptions = {}) {
    this.logger = (o.logger ?? noopLogger).child({ component: 'consul' });
    this.metrics = o.metrics;
    const addr = (o.address ?? process.env['CONSUL_HTTP_ADDR'] ?? '127.0.0.1:8500').replace(/^https?:\/\//, '');
    const [host, port] = addr.split(':');
    const token = o.token ?? process.env['CONSUL_HTTP_TOKEN'];
    this.consul = new Consul({ host: host ?? '127.0.0.1', port: Number(port ?? 8500), ...(token !== undefined ? { defaults: { token } } : {}) });
  }

  /** Registers `caravan-controller` with a TTL check kept passing; returns the deregister function. */
  async registerController(id: string, ttlMs = 15_000): Promise<() => Promise<void>> {
    // The package's typings demand `timeout` on every check; a TTL check has none.
    const registration = {
      id,
      name: 'caravan-controller',
      tags: ['caravan'],
      check: { name: 'caravan controller alive', ttl: `${Math.ceil(ttlMs / 1000)}s`, deregistercriticalserviceafter: '1m' },
    } as unknown as Parameters<Consul['agent']['service']['register']>[0];
    await this.count(this.consul.agent.service.register(registration));
    // A missed renewal is retried at the next tick; the operator sees the check go critical
    // in the Consul UI only if several fail in a row, so each failure is logged.
    const pass = (): Promise<void> => this.count(this.consul.agent.check.pass(`service:${id}`)).then(() => undefined, (e: unknown) => this.logger.warn('could not renew the caravan-controller TTL check', { service: id, err: e }));
    await pass();
    const timer = setInterval(() => void pass(), Math.max(1000, ttlMs / 3));
    timer.unref();
    return async () => {
      clearInterval(timer);
      // Left registered, the service goes critical and Consul removes it after a minute.
      await this.count(this.consul.agent.service.deregister(id)).catch((e: unknown) => this.logger.warn('could not deregister caravan-controller; Consul removes it after 1m critical', { service: id, err: e }));
    };
  }

  /** Mirrors a run's status to KV `caravan/runs/<workflow>/<run-id>`. */
  async mirrorRun(r: RunStatusRecord): Promise<void> {
    await this.count(this.consul.kv.set({ key: `caravan/runs/${r.workflow}/${r.runId}`, value: JSON.stringify(r) }));
  }

  async readRun(workflow: string, runId: string): Promise<RunStatusRecord | undefined> {
    const item = (await this.count(this.consul.kv.get(`caravan/runs/${workflow}/${runId}`))) as { Value?: string } | undefined | null;
    return item?.Value !== undefined ? (JSON.parse(item.Value) as RunStatusRecord) : undefined;
  }

  async getKey(key: string): Promise<{ value: string; index: number } | undefined> {
    checkRegistryKey(key);
    const item = await this.kvCall('read', key, () => this.consul.kv.get(key) as Promise<{ Value?: string | null; ModifyIndex: number } | undefined | null>);
    // Consul stores an empty value as null.
    return item === undefined || item === null ? undefined : { value: item.Value ?? '', index: item.ModifyIndex };
  }

  /** A `?cas=` write: Consul answers false, not an error, when the index has moved on. */
  async putKey(key: string, value: string, options: { cas?: number } = {}): Promise<boolean> {
    checkRegistryKey(key);
    const written = await this.kvCall('write', key, () => this.consul.kv.set({ key, value, ...(options.cas !== undefined ? { cas: options.cas } : {}) }));
    return written === true;
  }

  async deleteKey(key: string): Promise<void> {
    checkRegistryKey(key);
    await this.kvCall('delete', key, () => this.consul.kv.del(key));
  }

  async listKeys(prefix: string): Promise<string[]> {
    checkRegistryKey(prefix, 'prefix');
    try {
      const keys = (await this.count(this.consul.kv.keys(prefix))) as string[];
      return [...keys].sort();
    } catch (e) {
      // Consul answers 404 when no key has the prefix.
      if ((e as { statusCode?: number }).statusCode === 404) return [];
      throw new CaravanError('CONSUL_UNREACHABLE', `cannot list KV keys under '${prefix}' in Consul: ${(e as Error).message}`, { cause: e, data: { prefix } });
    }
  }

  private async kvCall<T>(verb: string, key: string, call: () => Promise<T>): Promise<T> {
    try {
      return await this.count(call());
    } catch (e) {
      throw new CaravanError('CONSUL_UNREACHABLE', `cannot ${verb} KV key ${key} in Consul: ${(e as Error).message}`, { cause: e, data: { key } });
    }
  }

  /**
   * Leader election: a session with a TTL and a lock delay, `acquire` on the key, renewal at
   * half the TTL. Losing the session or the lock calls onLost at once (within one TTL of the
   * loss); followers keep trying. Returns a stop function that releases the lock.
   */
  elect(o: LeaderOptions): () => Promise<void> {
    const key = o.key ?? 'caravan/leader';
    const ttl = o.ttlMs ?? 15_000;
    const lockDelay = o.lockDelayMs ?? 1000;
    let session: string | undefined;
    let leader = false;
    let stopped = false;
    let ticking = false;
    let timer: NodeJS.Timeout | undefined;
    const lose = (reason: string): void => {
      if (!leader) return;
      leader = false;
      o.onLost(reason);
    };
    const tick = async (): Promise<void> => {
      if (ticking || stopped) return;
      ticking = true;
      if (timer !== undefined) clearTimeout(timer);
      try {
        if (session === undefined) {
          const s = (await this.count(this.consul.session.create({ name: `caravan leader ${o.holder}`, ttl: `${Math.ceil(ttl / 1000)}s`, behavior: 'release', lockdelay: `${lockDelay}ms` }))) as { ID: string };
          session = s.ID;
        } else {
          const renewed = (await this.count(this.consul.session.renew(session))) as unknown[] | undefined;
          if (renewed === undefined || (Array.isArray(renewed) && renewed.length === 0)) throw new Error('session expired');
        }
        if (!leader) {
          const got = await this.count(this.consul.kv.set({ key, value: JSON.stringify({ holder: o.holder, since: new Date().toISOString() }), acquire: session }));
          if (got === true && !stopped) {
            leader = true;
            const held = (await this.count(this.consul.kv.get(key))) as { LockIndex?: number; ModifyIndex?: number } | undefined | null;
            o.onElected(held?.LockIndex ?? held?.ModifyIndex ?? 0);
          }
        } else {
          const item = (await this.count(this.consul.kv.get(key))) as { Session?: string } | undefined | null;
          if (item?.Session !== session) lose('the leader lock is held by another session');
        }
      } catch (e) {
        session = undefined;
        lose(`leader session lost: ${(e as Error).message}`);
      } finally {
        ticking = false;
      }
      if (!stopped) timer = setTimeout(() => void tick(), ttl / 2);
    };
    // A blocking query on the key between renewals: the leader sees its lock go (session
    // destroyed or invalidated) as soon as Consul does, and followers see it free and try at
    // once (again after the lock delay, which Consul enforces after an invalidation).
    const watch = this.consul.watch({ method: this.consul.kv.get, options: { key, wait: `${Math.max(1, Math.ceil(ttl / 2000))}s` }, backoffFactor: 100, backoffMax: 2000 });
    watch.on('change', (item: { Session?: string } | undefined | null) => {
      this.metrics?.backendRequest('consul', 'ok');
      if (stopped) return;
      // An answer can predate our own acquire: confirm with a consistent read before giving up.
      if (leader && item?.Session !== session) {
        void (this.count(this.consul.kv.get(key)) as Promise<{ Session?: string } | undefined | null>).then(
          (now) => {
            if (leader && !stopped && now?.Session !== session) lose('the leader lock was released or taken over');
          },
          // Unconfirmed: the next renewal (within half a TTL) checks the lock again.
          (e: unknown) => this.logger.warn('could not confirm the leader lock; checking again at the next renewal', { key, err: e }),
        );
      }
      if (!leader && (item?.Session === undefined || item.Session === '')) {
        void tick();
        setTimeout(() => void (leader || stopped ? undefined : tick()), lockDelay + 100).unref();
      }
    });
    // The watch retries on its own (with backoff); renewal still runs on its timer.
    watch.on('error', (e: unknown) => {
      this.counted(e);
      this.logger.debug('leader lock watch failed; retrying', { key, err: e });
    });
    void tick();
    return async () => {
      stopped = true;
      watch.end();
      if (timer !== undefined) clearTimeout(timer);
      if (session !== undefined) {
        // Not released, the lock goes with the session's TTL: the next leader waits that long.
        if (leader) await this.count(this.consul.kv.set({ key, value: '', release: session })).catch((e: unknown) => this.logger.warn('could not release the leader lock; it expires with the session', { key, err: e }));
        await this.count(this.consul.session.destroy(session)).catch((e: unknown) => this.logger.warn('could not destroy the leader session; it expires with its TTL', { key, err: e }));
      }
      leader = false;
    };
  }

  /** Health of the services Nomad registered for a workflow's pools (for `caravan status`). */
  async poolHealth(service: string): Promise<Array<{ node: string; status: string }>> {
    try {
      const entries = (await this.count(this.consul.health.service(service))) as Array<{ Node: { Node: string }; Checks: Array<{ Status: string }> }>;
      return entries.map((e) => ({ node: e.Node.Node, status: e.Checks.every((c) => c.Status === 'passing') ? 'passing' : 'critical' }));
    } catch (e) {
      throw new CaravanError('CONSUL_UNREACHABLE', `cannot read service ${service} from Consul: ${(e as Error).message}`, { cause: e });
    }
  }

  /** Counts one API call when it settles: an answer below 500 (a 404 included) is Consul working. */
  private count<T>(call: Promise<T>): Promise<T> {
    const m = this.metrics;
    if (m === undefined) return call;
    return call.then((v) => {
      m.backendRequest('consul', 'ok');
      return v;
    }, (e: unknown) => {
      this.counted(e);
      throw e;
    });
  }

  /** Counts a failed call by its status: no status (no answer) or 5xx is an error. */
  private counted(e: unknown): void {
    const status = (e as { statusCode?: unknown }).statusCode;
    this.metrics?.backendRequest('consul', typeof status === 'number' && status < 500 ? 'ok' : 'error');
  }
}
