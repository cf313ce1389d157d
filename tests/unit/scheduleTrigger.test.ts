import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { newRunId } from '../../engine/audit/updateRef.js';
import { ScheduleState } from '../../engine/controller/ScheduleState.js';
import { MAX_CATCHUP_FIRES, dueFires, nextFire, scheduledRunId, type ScheduleSpec } from '../../engine/controller/ScheduleTrigger.js';
import { readApproval } from '../../engine/gitops/readApproval.js';
import { InMemoryRegistry } from '../../engine/local/InMemoryRegistry.js';
import { validateText } from '../../engine/spec/validateWorkflows.js';
import { workflow } from '../harness/gitRepo.js';

const at = (iso: string): Date => new Date(iso);
const iso = (dates: Date[]): string[] => dates.map((d) => d.toISOString());

/** Every scheduled time in (from, to], walking forwards with nextFire. */
function forwards(spec: ScheduleSpec, from: string, to: string): string[] {
  const out: string[] = [];
  for (let t = nextFire(spec, at(from)); t !== undefined && t <= at(to); t = nextFire(spec, t)) out.push(t.toISOString());
  return out;
}

/** The same, walking backwards: dueFires with catch-up `all` and a window reaching `from`. */
function backwards(spec: ScheduleSpec, from: string, to: string): string[] {
  return iso(dueFires({ ...spec, catchup: 'all', catchupWindow: '10d' }, at(from), at(to)));
}

describe('scheduled times', () => {
  it('an every-minute schedule fires each minute once, and nothing between minutes', () => {
    const spec = { cron: '* * * * *' };
    expect(iso(dueFires(spec, at('2026-11-22T12:00:00Z'), at('2026-11-22T12:01:00.250Z')))).toEqual(['2026-11-22T12:01:00.000Z']);
    expect(dueFires(spec, at('2026-11-22T12:01:00Z'), at('2026-11-22T12:01:59.999Z'))).toEqual([]);
    // lastFire itself is excluded, now itself included.
    expect(iso(dueFires(spec, at('2026-11-22T12:01:00Z'), at('2026-11-22T12:02:00Z')))).toEqual(['2026-11-22T12:02:00.000Z']);
    expect(nextFire(spec, at('2026-11-22T12:00:00Z'))?.toISOString()).toBe('2026-11-22T12:01:00.000Z');
    expect(nextFire(spec, at('2026-11-22T12:00:30Z'))?.toISOString()).toBe('2026-11-22T12:01:00.000Z');
  });

  it('a daily schedule fires once a day at its time', () => {
    const spec = { cron: '0 6 * * *' };
    expect(forwards(spec, '2026-11-22T00:00:00Z', '2026-11-25T00:00:00Z')).toEqual(['2026-11-22T06:00:00.000Z', '2026-11-23T06:00:00.000Z', '2026-11-24T06:00:00.000Z']);
    expect(dueFires(spec, at('2026-11-22T06:00:00Z'), at('2026-11-23T05:59:59Z'))).toEqual([]);
    expect(iso(dueFires(spec, at('2026-11-22T06:00:00Z'), at('2026-11-23T06:00:05Z')))).toEqual(['2026-11-23T06:00:00.000Z']);
    expect(iso(dueFires({ cron: '@daily' }, at('2026-11-22T00:00:00Z'), at('2026-11-23T00:00:02Z')))).toEqual(['2026-11-23T00:00:00.000Z']);
  });

  it('nextFire is undefined for a schedule that never fires; a spec that did not validate is refused', () => {
    expect(nextFire({ cron: '0 0 29 2 *' }, at('2026-01-01T00:00:00Z'))?.toISOString()).toBe('2028-02-29T00:00:00.000Z');
    expect(nextFire({ cron: '0 0 30 2 *' }, at('2026-01-01T00:00:00Z'))).toBeUndefined();
    expect(dueFires({ cron: '0 0 30 2 *' }, at('2026-01-01T00:00:00Z'), at('2027-01-01T00:00:00Z'))).toEqual([]);
    expect(() => nextFire({ cron: '0 0 6 * * 1' }, at('2026-01-01T00:00:00Z'))).toThrow(expect.objectContaining({ code: 'WORKFLOW_INVALID' }));
    expect(() => dueFires({ cron: '0 6 * * *', timezone: 'Mars/Olympus' }, undefined, at('2026-01-01T00:00:00Z'))).toThrow(expect.objectContaining({ code: 'WORKFLOW_INVALID' }));
    expect(() => dueFires({ cron: '0 6 * * *', catchupWindow: 'an hour' }, at('2026-01-01T00:00:00Z'), at('2026-01-02T00:00:00Z'))).toThrow(expect.objectContaining({ code: 'WORKFLOW_INVALID' }));
  });
});

describe('catch-up after the controller was down 3 hours (window 1h)', () => {
  // Every 15 minutes; the last fire was 09:00, the controller is back at 12:05.
  const spec: ScheduleSpec = { cron: '*/15 * * * *', catchupWindow: '1h' };
  const last = at('2026-11-22T09:00:00Z');
  const now = at('2026-11-22T12:05:00Z');

  it('none: runs nothing missed, only a time that is not late', () => {
    expect(dueFires({ ...spec, catchup: 'none' }, last, now)).toEqual([]);
    expect(iso(dueFires({ ...spec, catchup: 'none' }, last, at('2026-11-22T12:00:30Z')))).toEqual(['2026-11-22T12:00:00.000Z']);
    expect(iso(dueFires({ ...spec, catchup: 'none' }, last, at('2026-11-22T12:01:00Z')))).toEqual(['2026-11-22T12:00:00.000Z']);
    expect(dueFires({ ...spec, catchup: 'none' }, last, at('2026-11-22T12:01:00.001Z'))).toEqual([]);
  });

  it('last (the default): runs the most recent missed time, once', () => {
    expect(iso(dueFires({ ...spec, catchup: 'last' }, last, now))).toEqual(['2026-11-22T12:00:00.000Z']);
    expect(iso(dueFires({ cron: spec.cron }, last, now))).toEqual(['2026-11-22T12:00:00.000Z']);
  });

  it('all: runs every missed time inside the window, oldest first', () => {
    expect(iso(dueFires({ ...spec, catchup: 'all' }, last, now))).toEqual(['2026-11-22T11:15:00.000Z', '2026-11-22T11:30:00.000Z', '2026-11-22T11:45:00.000Z', '2026-11-22T12:00:00.000Z']);
    // A time exactly one window late still runs; a millisecond older does not.
    expect(iso(dueFires({ ...spec, catchup: 'all' }, last, at('2026-11-22T12:15:00Z')))[0]).toBe('2026-11-22T11:15:00.000Z');
    expect(iso(dueFires({ ...spec, catchup: 'all' }, last, at('2026-11-22T12:15:00.001Z')))[0]).toBe('2026-11-22T11:30:00.000Z');
  });

  it('the window applies to last too: a daily time 3 hours late is skipped, one 30 minutes late runs', () => {
    const daily: ScheduleSpec = { cron: '0 9 * * *' };
    expect(dueFires(daily, at('2026-11-21T09:00:00Z'), at('2026-11-22T12:00:00Z'))).toEqual([]);
    expect(iso(dueFires(daily, at('2026-11-21T09:00:00Z'), at('2026-11-22T09:30:00Z')))).toEqual(['2026-11-22T09:00:00.000Z']);
    expect(iso(dueFires({ ...daily, catchupWindow: '4h' }, at('2026-11-21T09:00:00Z'), at('2026-11-22T12:00:00Z')))).toEqual(['2026-11-22T09:00:00.000Z']);
  });

  it(`all is capped at the ${MAX_CATCHUP_FIRES} most recent times`, () => {
    const fires = dueFires({ cron: '* * * * *', catchup: 'all', catchupWindow: '7d' }, at('2026-11-19T12:00:00Z'), at('2026-11-22T12:00:00Z'));
    expect(fires).toHaveLength(MAX_CATCHUP_FIRES);
    expect(fires[0]!.toISOString()).toBe('2026-11-22T10:21:00.000Z');
    expect(fires[fires.length - 1]!.toISOString()).toBe('2026-11-22T12:00:00.000Z');
  });

  it('nothing fires while the recorded last fire is ahead of now (a clock behind the last leader\'s)', () => {
    expect(dueFires({ ...spec, catchup: 'all' }, at('2026-11-22T12:15:00Z'), now)).toEqual([]);
  });
});

describe('first sight (no last fire recorded)', () => {
  it('fires nothing from the past under any policy, only a time equal to now', () => {
    for (const catchup of ['none', 'last', 'all'] as const) {
      const spec: ScheduleSpec = { cron: '0 * * * *', catchup, catchupWindow: '1d' };
      expect(dueFires(spec, undefined, at('2026-11-22T12:00:01Z'))).toEqual([]);
      expect(dueFires(spec, undefined, at('2026-11-22T11:59:59.999Z'))).toEqual([]);
      expect(iso(dueFires(spec, undefined, at('2026-11-22T12:00:00Z')))).toEqual(['2026-11-22T12:00:00.000Z']);
    }
  });
});

describe('time zones', () => {
  const tz = process.env['TZ'];
  afterEach(() => {
    if (tz === undefined) delete process.env['TZ'];
    else process.env['TZ'] = tz;
  });

  it('evaluates the cron in the workflow\'s zone, with its summer time', () => {
    const berlin: ScheduleSpec = { cron: '0 6 * * *', timezone: 'Europe/Berlin' };
    expect(nextFire(berlin, at('2026-01-10T00:00:00Z'))?.toISOString()).toBe('2026-01-10T05:00:00.000Z');
    expect(nextFire(berlin, at('2026-07-10T00:00:00Z'))?.toISOString()).toBe('2026-07-10T04:00:00.000Z');
    expect(nextFire({ cron: '0 6 * * 1', timezone: 'America/New_York' }, at('2026-11-20T00:00:00Z'))?.toISOString()).toBe('2026-11-23T11:00:00.000Z');
    expect(iso(dueFires(berlin, at('2026-01-09T05:00:00Z'), at('2026-01-10T05:00:10Z')))).toEqual(['2026-01-10T05:00:00.000Z']);
  });

  it('defaults to UTC, not the controller\'s local zone', () => {
    process.env['TZ'] = 'Asia/Tokyo';
    expect(new Date('2026-01-10T00:00:00Z').getHours()).toBe(9);
    expect(nextFire({ cron: '0 6 * * *' }, at('2026-01-10T00:00:00Z'))?.toISOString()).toBe('2026-01-10T06:00:00.000Z');
  });
});

describe('daylight saving time: a daily job at 02:30 runs exactly once each day', () => {
  // Europe/Berlin 2026: 29 March 02:00 CET becomes 03:00 CEST (02:30 does not exist);
  // 25 October 03:00 CEST becomes 02:00 CET (02:30 happens twice, at 00:30Z and 01:30Z).
  const daily: ScheduleSpec = { cron: '30 2 * * *', timezone: 'Europe/Berlin' };

  it('spring forward: the missing 02:30 runs at 03:00 CEST, the first valid time after the gap', () => {
    expect(forwards(daily, '2026-03-27T12:00:00Z', '2026-03-31T12:00:00Z')).toEqual([
      '2026-03-28T01:30:00.000Z', // 02:30 CET
      '2026-03-29T01:00:00.000Z', // 03:00 CEST
      '2026-03-30T00:30:00.000Z', // 02:30 CEST
      '2026-03-31T00:30:00.000Z',
    ]);
    expect(dueFires(daily, at('2026-03-28T01:30:00Z'), at('2026-03-29T00:59:59Z'))).toEqual([]);
    expect(iso(dueFires(daily, at('2026-03-28T01:30:00Z'), at('2026-03-29T01:00:10Z')))).toEqual(['2026-03-29T01:00:00.000Z']);
  });

  it('fall back: the repeated 02:30 runs at its first occurrence only', () => {
    expect(forwards(daily, '2026-10-23T12:00:00Z', '2026-10-27T12:00:00Z')).toEqual([
      '2026-10-24T00:30:00.000Z', // 02:30 CEST
      '2026-10-25T00:30:00.000Z', // 02:30 CEST, the first of the two
      '2026-10-26T01:30:00.000Z', // 02:30 CET
      '2026-10-27T01:30:00.000Z',
    ]);
    // At the second 02:30 (CET) nothing is due again, even with catch-up all.
    expect(dueFires({ ...daily, catchup: 'all' }, at('2026-10-25T00:30:00Z'), at('2026-10-25T01:30:10Z'))).toEqual([]);
    expect(nextFire(daily, at('2026-10-25T00:30:00Z'))?.toISOString()).toBe('2026-10-26T01:30:00.000Z');
  });

  it('the same in America/New_York (8 March and 1 November 2026)', () => {
    const ny: ScheduleSpec = { cron: '30 1 * * *', timezone: 'America/New_York' };
    expect(forwards({ ...ny, cron: '30 2 * * *' }, '2026-03-07T00:00:00Z', '2026-03-10T00:00:00Z')).toEqual(['2026-03-07T07:30:00.000Z', '2026-03-08T07:00:00.000Z', '2026-03-09T06:30:00.000Z']);
    expect(forwards(ny, '2026-10-31T00:00:00Z', '2026-11-03T00:00:00Z')).toEqual(['2026-10-31T05:30:00.000Z', '2026-11-01T05:30:00.000Z', '2026-11-02T06:30:00.000Z']);
  });

  it('a list of hours is fixed times too: 02:30 and 14:30 each run once on both days', () => {
    const twice: ScheduleSpec = { cron: '30 2,14 * * *', timezone: 'Europe/Berlin' };
    expect(forwards(twice, '2026-03-29T00:00:00Z', '2026-03-30T00:00:00Z')).toEqual(['2026-03-29T01:00:00.000Z', '2026-03-29T12:30:00.000Z']);
    expect(forwards(twice, '2026-10-25T00:00:00Z', '2026-10-26T00:00:00Z')).toEqual(['2026-10-25T00:30:00.000Z', '2026-10-25T13:30:00.000Z']);
  });

  it('an interval job keeps elapsed time: both passes through the repeated hour, nothing in the gap', () => {
    const every30: ScheduleSpec = { cron: '*/30 * * * *', timezone: 'Europe/Berlin' };
    expect(forwards(every30, '2026-03-29T00:00:00Z', '2026-03-29T01:30:00Z')).toEqual(['2026-03-29T00:30:00.000Z', '2026-03-29T01:00:00.000Z', '2026-03-29T01:30:00.000Z']);
    expect(forwards(every30, '2026-10-24T23:30:00Z', '2026-10-25T02:00:00Z')).toEqual(['2026-10-25T00:00:00.000Z', '2026-10-25T00:30:00.000Z', '2026-10-25T01:00:00.000Z', '2026-10-25T01:30:00.000Z', '2026-10-25T02:00:00.000Z']);
    // So one that runs only inside the missing hour does not run that day (documented).
    const inGap: ScheduleSpec = { cron: '*/30 2 * * *', timezone: 'Europe/Berlin' };
    expect(forwards(inGap, '2026-03-28T12:00:00Z', '2026-03-29T12:00:00Z')).toEqual([]);
    expect(backwards(inGap, '2026-03-28T12:00:00Z', '2026-03-29T12:00:00Z')).toEqual([]);
    expect(forwards(inGap, '2026-10-24T12:00:00Z', '2026-10-25T12:00:00Z')).toEqual(['2026-10-25T00:00:00.000Z', '2026-10-25T00:30:00.000Z', '2026-10-25T01:00:00.000Z', '2026-10-25T01:30:00.000Z']);
  });

  it('dueFires (walking backwards) and nextFire (forwards) agree across both changes', () => {
    for (const cron of ['30 2 * * *', '0 2 * * *', '59 2 * * *', '0 3 * * *', '30 1-3 * * *', '30 2,14 * * *', '*/20 * * * *', '0 * * * *']) {
      // A day around each change: at most 72 times, under the cap of catch-up all.
      for (const [from, to] of [['2026-03-28T12:00:00Z', '2026-03-29T12:00:00Z'], ['2026-10-24T12:00:00Z', '2026-10-25T12:00:00Z']] as const) {
        const spec = { cron, timezone: 'Europe/Berlin' };
        const f = forwards(spec, from, to);
        expect(f.length, `${cron} ${from}`).toBeGreaterThan(0);
        expect(backwards(spec, from, to), `${cron} ${from}`).toEqual(f);
        expect(new Set(f).size, `${cron} ${from}`).toBe(f.length);
      }
    }
  });
});

describe('scheduled run ids', () => {
  const t = at('2026-11-22T06:00:00Z');

  it('are deterministic: the scheduled time in UTC and the start of sha256(workflow@time)', () => {
    const hex = createHash('sha256').update('nightly@2026-11-22T06:00:00.000Z').digest('hex').slice(0, 6);
    expect(scheduledRunId('nightly', t)).toBe(`20261122-060000-${hex}`);
    expect(scheduledRunId('nightly', t)).toBe('20261122-060000-f00d2b'); // the example in docs/triggers.md
    expect(scheduledRunId('nightly', at('2026-11-22T06:00:00Z'))).toBe(scheduledRunId('nightly', t));
  });

  it('differ per workflow and per time', () => {
    const ids = [scheduledRunId('nightly', t), scheduledRunId('hourly', t), scheduledRunId('nightly', at('2026-11-22T07:00:00Z')), scheduledRunId('nightly', at('2026-11-22T06:00:00.500Z'))];
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids[0]!.slice(0, 15)).toBe(ids[1]!.slice(0, 15));
  });

  it('have the run id format: what newRunId makes and what approval paths and page cursors accept', () => {
    const id = scheduledRunId('nightly', t);
    expect(id).toMatch(/^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$/);
    expect(id.slice(0, 16)).toBe(newRunId(t).slice(0, 16));
    expect(id).toHaveLength(newRunId(t).length);
    expect(id).toMatch(/^[A-Za-z0-9_.-]{1,128}$/);
    const approval = 'apiVersion: caravan/v1\nkind: Approval\ndecision: approve\nby: alice\n';
    expect(readApproval(`approvals/${id}/review.yaml`, new TextEncoder().encode(approval))).toMatchObject({ ok: true, approval: { runId: id } });
  });
});

describe('schedule state', () => {
  it('refuses a record it cannot read rather than guessing, and names the key', async () => {
    const registry = new InMemoryRegistry();
    await registry.putKey('caravan/schedules/nightly/0', 'not json');
    await registry.putKey('caravan/schedules/nightly/1', '{"at":"yesterday"}');
    const state = new ScheduleState(registry);
    await expect(state.lastFire('nightly', 0)).rejects.toMatchObject({ code: 'IO', data: { key: 'caravan/schedules/nightly/0' } });
    await expect(state.lastFire('nightly', 1)).rejects.toMatchObject({ code: 'IO' });
    await expect(state.lastFire('a/b', 0)).rejects.toMatchObject({ code: 'USAGE' });
    await expect(state.lastFire('nightly', -1)).rejects.toMatchObject({ code: 'USAGE' });
    await expect(state.lastFire('..', 0)).rejects.toMatchObject({ code: 'USAGE' });
  });

  it('records under its prefix, one key per workflow and trigger', async () => {
    const registry = new InMemoryRegistry();
    const state = new ScheduleState(registry);
    expect(await state.recordFire('nightly', 2, at('2026-11-22T06:00:00Z'), 0)).toBe(true);
    expect(await registry.listKeys('caravan/schedules/')).toEqual(['caravan/schedules/nightly/2']);
    expect(await state.lastFire('nightly', 2)).toEqual({ at: at('2026-11-22T06:00:00Z'), index: expect.any(Number) });
  });
});

describe('validation of schedule fields', () => {
  const check = (schedule: string): string[] =>
    validateText('w.yaml', workflow('demo', `  triggers:\n    - schedule: ${schedule}\n  tasks:\n    - name: a\n      run: echo\n`)).diagnostics.map((d) => `${d.line}:${d.col} ${d.severity} ${d.code} ${d.message}`);

  it('accepts every field with valid values', () => {
    expect(check('{ cron: "0 6 * * *", timezone: Europe/Berlin, overlap: buffer-one, catchup: all, catchupWindow: 6h, params: { x: 1 } }')).toEqual([]);
    expect(check('{ cron: "0 6 * * *", overlap: cancel-running, catchup: last, catchupWindow: 1m }')).toEqual([]);
  });

  it('reports unknown policies and malformed windows at the field', () => {
    const out = check('{ cron: "0 6 * * *", overlap: queue, catchup: some, catchupWindow: 1 hour }');
    expect(out.map((l) => l.split(' ').slice(0, 3).join(' '))).toEqual(['7:47 error SCHEMA_ENUM', '7:63 error SCHEMA_ENUM', '7:84 error SCHEMA_FORMAT']);
  });

  it('a window under 1m is an error; a window with catchup none a warning', () => {
    expect(check('{ cron: "0 6 * * *", catchupWindow: 30s }')).toEqual([
      '7:53 error CATCHUP_WINDOW_TOO_SHORT catchupWindow 30s is shorter than 1m, the lateness every scheduled time is allowed anyway; use at least 1m',
    ]);
    expect(check('{ cron: "0 6 * * *", catchup: none, catchupWindow: 2h }')).toEqual([
      '7:68 warning CATCHUP_WINDOW_UNUSED catchupWindow 2h has no effect with catchup: none; remove it, or use catchup: last or all',
    ]);
  });
});
