import { checkRegistryKey, type LeaderOptions, type Registry, type RunStatusRecord } from '../run/Registry.js';

interface Contender {
  o: LeaderOptions;
  leader: boolean;
}

/**
 * The embedded registry: one process, so leadership is a queue of contenders per key and
 * nothing expires unless revoke() says so (what a lost Consul session is for real).
 */
export class InMemoryRegistry implements Registry {
  private readonly runs = new Map<string, RunStatusRecord>();
  private readonly controllers = new Set<string>();
  private readonly contenders = new Map<string, Contender[]>();
  /** Acquisitions of each lock so far: the fencing token, as Consul's LockIndex. */
  private readonly lockIndex = new Map<string, number>();
  private readonly kv = new Map<string, { value: string; index: number }>();
  /** One counter for all keys, as Consul's Raft index: an index is never reused, even after a delete. */
  private kvIndex = 0;

  async registerController(id: string): Promise<() => Promise<void>> {
    this.controllers.add(id);
    return async () => {
      this.controllers.delete(id);
    };
  }

  /** Controller instances registered now. */
  get controllerIds(): string[] {
    return [...this.controllers];
  }

  async mirrorRun(r: RunStatusRecord): Promise<void> {
    this.runs.set(`${r.workflow}/${r.runId}`, structuredClone(r));
  }

  async readRun(workflow: string, runId: string): Promise<RunStatusRecord | undefined> {
    const r = this.runs.get(`${workflow}/${runId}`);
    return r === undefined ? undefined : structuredClone(r);
  }

  async getKey(key: string): Promise<{ value: string; index: number } | undefined> {
    checkRegistryKey(key);
    const entry = this.kv.get(key);
    return entry === undefined ? undefined : { ...entry };
  }

  async putKey(key: string, value: string, options: { cas?: number } = {}): Promise<boolean> {
    checkRegistryKey(key);
    if (options.cas !== undefined && (this.kv.get(key)?.index ?? 0) !== options.cas) return false;
    this.kv.set(key, { value, index: ++this.kvIndex });
    return true;
  }

  async deleteKey(key: string): Promise<void> {
    checkRegistryKey(key);
    this.kv.delete(key);
  }

  async listKeys(prefix: string): Promise<string[]> {
    checkRegistryKey(prefix, 'prefix');
    return [...this.kv.keys()].filter((k) => k.startsWith(prefix)).sort();
  }

  elect(o: LeaderOptions): () => Promise<void> {
    const key = o.key ?? 'caravan/leader';
    const queue = this.contenders.get(key) ?? [];
    this.contenders.set(key, queue);
    const me: Contender = { o, leader: false };
    queue.push(me);
    queueMicrotask(() => this.promote(key));
    return async () => {
      const i = queue.indexOf(me);
      if (i >= 0) queue.splice(i, 1);
      me.leader = false;
      this.promote(key);
    };
  }

  /** Takes the lock away from `holder`, as an expired session would; it contends again. */
  revoke(holder: string, key = 'caravan/leader'): void {
    const queue = this.contenders.get(key) ?? [];
    const me = queue.find((c) => c.o.holder === holder && c.leader);
    if (me === undefined) return;
    me.leader = false;
    queue.splice(queue.indexOf(me), 1);
    queue.push(me);
    me.o.onLost('leader lock revoked');
    this.promote(key);
  }

  private promote(key: string): void {
    const queue = this.contenders.get(key) ?? [];
    if (queue.some((c) => c.leader) || queue.length === 0) return;
    const next = queue[0]!;
    next.leader = true;
    const index = (this.lockIndex.get(key) ?? 0) + 1;
    this.lockIndex.set(key, index);
    next.o.onElected(index);
  }
}
