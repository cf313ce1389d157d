/**
 * The longest delay Node's setTimeout keeps: 2^31-1 ms (24.8 days). A longer one is taken as
 * 1 ms, with only a warning, so a `timeout: 30d` killed its task at once.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A pending long timeout. */
export interface LongTimeout {
  clear(): void;
  /** Lets the process exit while only this timeout is pending (as Timeout.unref()). */
  unref(): LongTimeout;
}

/**
 * setTimeout for any delay: past MAX_TIMER_MS it waits in steps of at most that long, so a
 * 30-day approval timeout fires after 30 days, not at once. Durations in workflows go up to
 * years; every timer set from one goes through here (or through the engine's Clock, which
 * uses this).
 */
export function setLongTimeout(fn: () => void, ms: number): LongTimeout {
  let handle: NodeJS.Timeout;
  let unrefd = false;
  const arm = (left: number): void => {
    handle = left > MAX_TIMER_MS ? setTimeout(() => arm(left - MAX_TIMER_MS), MAX_TIMER_MS) : setTimeout(fn, Math.max(0, left));
    if (unrefd) handle.unref();
  };
  arm(Number.isFinite(ms) ? ms : MAX_TIMER_MS);
  const timeout: LongTimeout = {
    clear: () => clearTimeout(handle),
    unref: () => {
      unrefd = true;
      handle.unref();
      return timeout;
    },
  };
  return timeout;
}
