import { CaravanError } from '../errors/CaravanError.js';
import type { ContextStore } from '../run/ContextStore.js';

/** Settings of the embedded context store. */
export interface InMemoryContextStoreOptions {
  /** How long a context is kept (default a week, as on JetStream); read lazily, no timer runs. */
  maxAgeMs?: number;
  /** The clock that ages contexts (tests). */
  now?: () => number;
}

/**
 * The embedded ContextStore: contexts in this process's memory, for runners in this
 * process. Kept as long as on JetStream, and forgotten when read past that age.
 */
export class InMemoryContextStore implements ContextStore {
  private readonly texts = new Map<string, { data: string; at: number }>();

  constructor(private readonly options: InMemoryContextStoreOptions = {}) {}

  async put(key: string, data: string): Promise<void> {
    // Deleted first so the map's order stays the order of storing, oldest first.
    this.texts.delete(key);
    this.texts.set(key, { data, at: this.now() });
    this.forgetExpired();
  }

  async get(key: string): Promise<string> {
    this.forgetExpired();
    const t = this.texts.get(key);
    if (t === undefined) throw new CaravanError('CONTEXT_NOT_FOUND', `no stored context ${key} in memory`, { data: { key } });
    return t.data;
  }

  private now(): number {
    return this.options.now?.() ?? Date.now();
  }

  /** Drops what is past its age, oldest first; stops at the first that is not. */
  private forgetExpired(): void {
    const oldest = this.now() - (this.options.maxAgeMs ?? 7 * 24 * 3_600_000);
    for (const [key, t] of this.texts) {
      if (t.at >= oldest) return;
      this.texts.delete(key);
    }
  }
}
