import { afterEach, describe, expect, it } from 'vitest';
import { CaravanApp } from '../../engine/app/CaravanApp.js';
import { Controller } from '../../engine/controller/Controller.js';
import { scheduledRunId } from '../../engine/controller/ScheduleTrigger.js';
import { InMemoryRegistry } from '../../engine/local/InMemoryRegistry.js';
import { MemoryLogger } from '../../engine/run/Logger.js';
import { cli } from '../harness/cli.js';
import { tempRepo, workflow } from '../harness/gitRepo.js';
import { until } from '../harness/until.js';

const opened: Array<{ app: CaravanApp; controller: Controller }> = [];
afterEach(async () => {
  for (const o of opened.splice(0)) {
    await o.controller.stop();
    await o.app.close();
  }
});

/** A controller whose schedules are judged by a clock the test sets. */
async function controllerAt(dir: string, clock: { now: number }): Promise<{ controller: Controller; logger: MemoryLogger }> {
  const logger = new MemoryLogger();
  const app = new CaravanApp({ repoDir: dir, logger });
  const controller = new Controller({ app, repoDir: dir, branch: 'main', workflowsDir: 'workflows', intervalMs: 3_600_000, identity: 'test', logger, now: () => clock.now });
  opened.push({ app, controller });
  await controller.start();
  return { controller, logger };
}

const hourly = (extra = ''): string => workflow('hourly', `  triggers:\n    - schedule: { cron: "0 * * * *"${extra} }\n  tasks:\n    - { name: report, run: "true" }\n`);
const t = (iso: string): Date => new Date(iso);

describe('schedule triggers in the controller', () => {
  it('fire each scheduled time once: not again on a second look, not again after a restart, and after downtime the last missed time once (catchup: last)', async () => {
    const dir = await tempRepo({ 'hourly.yaml': hourly() });
    const clock = { now: t('2026-12-01T10:30:00Z').getTime() };
    const first = await controllerAt(dir, clock);
    // First sight: a baseline, nothing from the past.
    expect(await first.controller.fireSchedules(t('2026-12-01T10:30:00Z'))).toEqual([]);
    const fired = await first.controller.fireSchedules(t('2026-12-01T11:00:03Z'));
    expect(fired).toEqual([{ workflow: 'hourly', runId: scheduledRunId('hourly', t('2026-12-01T11:00:00Z')), at: '2026-12-01T11:00:00.000Z' }]);
    expect(await first.controller.fireSchedules(t('2026-12-01T11:00:30Z'))).toEqual([]);
    await until('the 11:00 run to be recorded', async () => (await cli(dir, 'status', fired[0]!.runId, '--json')).code === 0);
    await first.controller.stop();

    const second = await controllerAt(dir, clock);
    expect(await second.controller.fireSchedules(t('2026-12-01T11:00:40Z'))).toEqual([]);
    // Down from 11:01 to 14:10: 12:00 and 13:00 are older than the 1h window, 14:00 fires once.
    expect((await second.controller.fireSchedules(t('2026-12-01T14:10:00Z'))).map((f) => f.at)).toEqual(['2026-12-01T14:00:00.000Z']);
    expect(await second.controller.fireSchedules(t('2026-12-01T14:20:00Z'))).toEqual([]);
  });

  it('a time whose run id exists already (its state was lost) starts nothing', async () => {
    const dir = await tempRepo({ 'hourly.yaml': hourly(', catchup: all, catchupWindow: 3h, overlap: allow') });
    const clock = { now: t('2026-12-01T10:30:00Z').getTime() };
    const { controller, logger } = await controllerAt(dir, clock);
    await controller.fireSchedules(t('2026-12-01T10:30:00Z'));
    const fired = await controller.fireSchedules(t('2026-12-01T11:00:01Z'));
    expect(fired).toHaveLength(1);
    await until('the run to be recorded', async () => (await cli(dir, 'status', fired[0]!.runId, '--json')).code === 0);
    // Lose the schedule's state: a baseline from before 11:00 makes 11:00 due again.
    const { FileKeyValue } = await import('../../engine/local/FileKeyValue.js');
    const kv = new FileKeyValue(`${dir}/.git/caravan/kv`);
    const entry = await kv.getKey('caravan/schedules/hourly/0');
    await kv.putKey('caravan/schedules/hourly/0', JSON.stringify({ at: '2026-12-01T10:45:00.000Z' }), { cas: entry!.index });
    expect(await controller.fireSchedules(t('2026-12-01T11:00:02Z'))).toEqual([]);
    expect(logger.entries.some((e) => e.msg === 'run exists already: not started twice')).toBe(true);
  });

  it('overlap skip: a time that comes while the previous run still runs is skipped, and said so', async () => {
    const gated = workflow('gated', '  triggers:\n    - schedule: { cron: "0 * * * *" }\n  tasks:\n    - { name: gate, approval: { timeout: 1h } }\n');
    const dir = await tempRepo({ 'gated.yaml': gated });
    const clock = { now: t('2026-12-01T10:30:00Z').getTime() };
    const { controller, logger } = await controllerAt(dir, clock);
    await controller.fireSchedules(t('2026-12-01T10:30:00Z'));
    expect(await controller.fireSchedules(t('2026-12-01T11:00:01Z'))).toHaveLength(1);
    expect(await controller.fireSchedules(t('2026-12-01T12:00:01Z'))).toEqual([]);
    expect(logger.entries.some((e) => e.msg.startsWith('scheduled time skipped') && e.fields['scheduledAt'] === '2026-12-01T12:00:00.000Z')).toBe(true);
  });

  it('overlap allow starts a run for every time, even while the previous one runs', async () => {
    const gated = workflow('gated', '  triggers:\n    - schedule: { cron: "0 * * * *", overlap: allow }\n  tasks:\n    - { name: gate, approval: { timeout: 1h } }\n');
    const dir = await tempRepo({ 'gated.yaml': gated });
    const clock = { now: t('2026-12-01T10:30:00Z').getTime() };
    const { controller } = await controllerAt(dir, clock);
    await controller.fireSchedules(t('2026-12-01T10:30:00Z'));
    expect(await controller.fireSchedules(t('2026-12-01T11:00:01Z'))).toHaveLength(1);
    expect(await controller.fireSchedules(t('2026-12-01T12:00:01Z'))).toHaveLength(1);
  });

  it('across a change of leader: the new leader carries on from the last fire the old one recorded in the registry', async () => {
    const dir = await tempRepo({ 'hourly.yaml': hourly() });
    const registry = new InMemoryRegistry();
    const clock = { now: t('2026-12-01T10:30:00Z').getTime() };
    const contender = async (name: string): Promise<{ app: CaravanApp; controller: Controller }> => {
      const logger = new MemoryLogger();
      const app = new CaravanApp({ repoDir: dir, logger, registry, leader: {} });
      const controller = new Controller({ app, repoDir: dir, branch: 'main', workflowsDir: 'workflows', intervalMs: 3_600_000, identity: name, logger, registry, leadership: (await app.leadership())!, now: () => clock.now });
      opened.push({ app, controller });
      await controller.start();
      return { app, controller };
    };
    const a = await contender('a');
    await a.controller.elected();
    const b = await contender('b');
    expect(b.controller.status().role).toBe('follower');
    await a.controller.fireSchedules(t('2026-12-01T10:30:00Z'));
    expect(await a.controller.fireSchedules(t('2026-12-01T11:00:02Z'))).toHaveLength(1);
    // A follower fires nothing, whatever the time.
    expect(await b.controller.fireSchedules(t('2026-12-01T11:00:03Z'))).toEqual([]);
    await a.controller.stop();
    await b.controller.elected();
    expect(b.controller.status().role).toBe('leader');
    expect(await b.controller.fireSchedules(t('2026-12-01T11:00:30Z'))).toEqual([]);
    expect((await b.controller.fireSchedules(t('2026-12-01T12:00:01Z'))).map((f) => f.at)).toEqual(['2026-12-01T12:00:00.000Z']);
  });
});
