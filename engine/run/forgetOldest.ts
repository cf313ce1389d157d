/**
 * Keeps a memory of recent keys bounded: once `c` holds more than `max` entries, the oldest
 * (first inserted) goes. For maps and sets that only remember things for a while.
 */
export function forgetOldest(c: Map<unknown, unknown> | Set<unknown>, max: number): void {
  if (c.size > max) c.delete(c.keys().next().value);
}
