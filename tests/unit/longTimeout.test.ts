import { afterEach, describe, expect, it, vi } from 'vitest';
import { realClock } from '../../engine/run/Clock.js';
import { MAX_TIMER_MS, setLongTimeout } from '../../engine/run/longTimeout.js';
import { validateText } from '../../engine/spec/validateWorkflows.js';
import { workflow } from '../harness/gitRepo.js';

const DAY = 86_400_000;

describe('timers longer than setTimeout allows (24.8 days)', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('a 30-day timeout fires after 30 days, not at once, and can be cleared', () => {
    vi.useFakeTimers();
    let fired = 0;
    setLongTimeout(() => fired++, 30 * DAY);
    vi.advanceTimersByTime(1);
    expect(fired).toBe(0);
    vi.advanceTimersByTime(MAX_TIMER_MS);
    expect(fired).toBe(0);
    vi.advanceTimersByTime(30 * DAY - MAX_TIMER_MS - 2);
    expect(fired).toBe(0);
    vi.advanceTimersByTime(1);
    expect(fired).toBe(1);
    const t = setLongTimeout(() => fired++, 400 * DAY);
    vi.advanceTimersByTime(200 * DAY);
    t.clear();
    vi.advanceTimersByTime(300 * DAY);
    expect(fired).toBe(1);
  });

  it('the engine clock keeps a 30-day approval timeout (plain setTimeout fired it after 1 ms)', () => {
    vi.useFakeTimers();
    const clock = realClock();
    let fired = false;
    const h = clock.setTimer(() => { fired = true; }, 30 * DAY);
    vi.advanceTimersByTime(29 * DAY);
    expect(fired).toBe(false);
    vi.advanceTimersByTime(DAY);
    expect(fired).toBe(true);
    clock.clearTimer(h);
  });

  it('the schema has a maximum: 30d is a duration, a 12-digit number of days is not', () => {
    const r = validateText('d.yaml', workflow('d', '  tasks:\n    - { name: a, run: echo, timeout: 30d }\n    - { name: b, run: echo, timeout: 999999999999d }\n'));
    expect(r.diagnostics.map((d) => `${d.line} ${d.code}`)).toEqual(['8 SCHEMA_FORMAT']);
  });
});
