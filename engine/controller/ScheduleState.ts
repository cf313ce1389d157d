import { CaravanError } from '../errors/CaravanError.js';
import type { KeyValue } from '../run/Registry.js';

interface Stored {
  at: string;
}

/**
 * Where each schedule trigger last fired, in the registry (Consul KV
 * `caravan/schedules/<workflow>/<trigger index>`), so that a restarted controller or a new
 * leader carries on from there instead of firing a time again or treating the schedule as
 * new. Writes are check-and-set: of two controllers that read the same state, one records.
 */
export class ScheduleState {
  constructor(
    private readonly registry: KeyValue,
    private readonly prefix = 'caravan/schedules',
  ) {}

  /**
   * The latest scheduled time handled for this trigger (what dueFires takes as lastFire) and
   * the index to pass to recordFire; undefined if none was ever recorded (first sight).
   */
  async lastFire(workflow: string, triggerIndex: number): Promise<{ at: Date; index: number } | undefined> {
    const key = this.key(workflow, triggerIndex);
    const entry = await this.registry.getKey(key);
    if (entry === undefined) return undefined;
    let at: Date | undefined;
    try {
      const stored = JSON.parse(entry.value) as Partial<Stored> | null;
      if (typeof stored?.at === 'string') at = new Date(stored.at);
    } catch {
      // Reported below with the key, which is what an operator needs.
    }
    if (at === undefined || Number.isNaN(at.getTime())) {
      // Not a guess: treating it as first sight could fire a time twice, and nothing could
      // overwrite it (a first record only writes an absent key).
      throw new CaravanError('IO', `schedule state ${key} is not a Caravan record (${JSON.stringify(entry.value.slice(0, 80))}); delete the key to start the schedule afresh`, { data: { key } });
    }
    return { at, index: entry.index };
  }

  /**
   * Records `at` as the trigger's last fire if the state is still what was read: `index` from
   * lastFire, or 0 if it returned undefined. False, and nothing written, if another
   * controller recorded meanwhile: read lastFire again before acting on this trigger.
   */
  async recordFire(workflow: string, triggerIndex: number, at: Date, index: number): Promise<boolean> {
    const value: Stored = { at: at.toISOString() };
    return this.registry.putKey(this.key(workflow, triggerIndex), JSON.stringify(value), { cas: index });
  }

  private key(workflow: string, triggerIndex: number): string {
    if (!Number.isSafeInteger(triggerIndex) || triggerIndex < 0) throw new CaravanError('USAGE', `trigger index must be a whole number from 0, not ${triggerIndex}`, { data: { workflow, triggerIndex } });
    // Workflow names are DNS labels; a `/` would let two (workflow, index) pairs share a key.
    // The registry refuses the rest (`..`, control characters).
    if (workflow.includes('/')) throw new CaravanError('USAGE', `workflow name '${workflow}' must not contain /`, { data: { workflow } });
    return `${this.prefix}/${workflow}/${triggerIndex}`;
  }
}
