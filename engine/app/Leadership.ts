import { hostname } from 'node:os';
import { CaravanError } from '../errors/CaravanError.js';
import type { Registry } from '../run/Registry.js';
import type { RunEngine } from '../run/RunEngine.js';

export interface LeadershipOptions {
  key?: string;
  ttlMs?: number;
  lockDelayMs?: number;
}

/** One term of office: the engines led in it, and the error that ended it, if it did. */
interface Term {
  ready: Promise<void>;
  lost?: CaravanError;
  /** The lock's fencing token for this term (see Registry.onElected). */
  index?: number;
  engines: Set<RunEngine>;
  stop: () => Promise<void>;
  /** Told at once when this term's lock is lost (the controller stops its own leader work). */
  listeners: Set<(e: CaravanError) => void>;
}

/**
 * The leader lock of a process acting as the cluster's controller. One campaign serves all
 * of the process's runs (child workflows included); losing the lock relinquishes every one
 * of them at once, and the lock is released when the last run is over.
 */
export class Leadership {
  private term: Term | undefined;
  /** Runs that hold the lock open: acquired and not yet released. */
  private holders = 0;

  constructor(private readonly registry: Registry, private readonly options: LeadershipOptions = {}) {}

  /**
   * Waits until this process leads (campaigning if it does not yet), and counts one more
   * run holding the lock. Every acquire must be paired with release(), even when it throws.
   */
  async acquire(): Promise<void> {
    this.holders++;
    const term = (this.term ??= this.campaign());
    await term.ready;
    if (term.lost !== undefined) throw term.lost;
  }

  /** Puts an engine under this term: it is relinquished at once if the lock is (or gets) lost. */
  lead(engine: RunEngine): void {
    const term = this.term;
    if (term === undefined) return;
    term.engines.add(engine);
    if (term.lost !== undefined) engine.relinquish(term.lost);
  }

  /**
   * Calls `listener` at once if the current term's lock is (or gets) lost; returns the way to
   * stop listening. The controller stops syncing and firing triggers with it.
   */
  onLost(listener: (e: CaravanError) => void): () => void {
    const term = this.term;
    if (term === undefined) return () => undefined;
    if (term.lost !== undefined) {
      listener(term.lost);
      return () => undefined;
    }
    term.listeners.add(listener);
    return () => term.listeners.delete(listener);
  }

  /** This term's fencing token, once elected: stamped on what the leader registers. */
  index(): number | undefined {
    return this.term?.lost === undefined ? this.term?.index : undefined;
  }

  unlead(engine: RunEngine): void {
    this.term?.engines.delete(engine);
  }

  /** One run is over: when none holds the lock any more, it is released. */
  async release(): Promise<void> {
    this.holders--;
    if (this.holders === 0 && this.term !== undefined) {
      const term = this.term;
      this.term = undefined;
      await term.stop();
    }
  }

  private campaign(): Term {
    let elected!: () => void;
    const term: Term = { ready: new Promise<void>((r) => { elected = r; }), engines: new Set(), stop: async () => undefined, listeners: new Set() };
    const key = this.options.key ?? 'caravan/leader';
    term.stop = this.registry.elect({
      key,
      holder: `${hostname()}:${process.pid}`,
      ...(this.options.ttlMs !== undefined ? { ttlMs: this.options.ttlMs } : {}),
      ...(this.options.lockDelayMs !== undefined ? { lockDelayMs: this.options.lockDelayMs } : {}),
      onElected: (index) => {
        term.index = index;
        elected();
      },
      onLost: (why) => {
        const runs = [...term.engines].map((e) => e.state.runId);
        term.lost = new CaravanError('LEADERSHIP_LOST', `lost the leader lock ${key} (${why}); stopped scheduling. The next leader recovers the run${runs.length === 1 ? '' : 's'}: caravan recover ${runs.join(' ')}`, { data: { key, runs } });
        for (const e of term.engines) e.relinquish(term.lost);
        for (const l of term.listeners) l(term.lost);
      },
    });
    return term;
  }
}
