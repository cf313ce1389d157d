import { join } from 'node:path';
import type { CaravanApp } from '../app/CaravanApp.js';
import { RunEventFeed } from '../app/RunEventFeed.js';
import type { Controller } from '../controller/Controller.js';
import { FileKeyValue } from '../local/FileKeyValue.js';
import type { Logger } from '../run/Logger.js';
import type { Registry } from '../run/Registry.js';
import type { ApiBackend } from './ApiBackend.js';

/** Where the leader advertises its API address in the registry. */
export const LEADER_API_KEY = 'caravan/leader-api';

/**
 * The API's backend on a running controller: the application layer's queries and control,
 * the workflows of the synced commit, runs started through the controller (so they are
 * tracked and handed over like a trigger's), and the registry for idempotency keys and the
 * leader's address.
 */
export function controllerBackend(app: CaravanApp, controller: Controller, registry: Registry | undefined, nomadAddress?: string): ApiBackend {
  return {
    queries: app.queries,
    control: app.control,
    events: new RunEventFeed({ live: app.live, audit: app.audit, queries: app.queries, eventLog: () => app.eventLog() }),
    audit: app.audit,
    kv: registry ?? new FileKeyValue(join(app.audit.gitdir, 'caravan', 'kv')),
    journalPath: (runId) => app.live.journalPath(runId),
    workflows: async () => controller.syncedWorkflows(),
    lastSync: () => {
      const s = controller.status().lastSync;
      return s !== undefined ? { commit: s.commit, status: s.status, at: s.startedAt } : undefined;
    },
    startRun: async (workflow, params, trigger) => ({ runId: (await controller.startManual(workflow, params, trigger)).runId }),
    retryRun: async (runId, options) => {
      const r = await controller.retryRun(runId, options);
      return { runId: r.runId, workflow: r.workflow, retryOf: r.retryOf, reused: Object.keys(r.selection.reuse), rerun: r.selection.rerun.map(({ task, why }) => ({ task, why })) };
    },
    role: () => controller.status().role,
    leaderAddress: async () => {
      const v = registry !== undefined ? await registry.getKey(LEADER_API_KEY) : undefined;
      if (v === undefined) return undefined;
      try {
        const url = (JSON.parse(v.value) as { url?: unknown }).url;
        return typeof url === 'string' ? url : undefined;
      } catch {
        // Not written by a controller: no address to give.
        return undefined;
      }
    },
    ...(nomadAddress !== undefined ? { nomadAddress } : {}),
  };
}

/** Once elected, the leader writes where its API answers, for followers to point clients at. */
export async function advertiseLeader(registry: Registry, url: string, controller: string, logger: Logger): Promise<void> {
  try {
    await registry.putKey(LEADER_API_KEY, JSON.stringify({ url, controller, at: new Date().toISOString() }));
    logger.info('API address advertised in the registry', { key: LEADER_API_KEY, url });
  } catch (e) {
    logger.error('could not advertise the API address in the registry', { key: LEADER_API_KEY, err: e });
  }
}
