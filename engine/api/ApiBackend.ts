import type { GitAuditStore } from '../audit/GitAuditStore.js';
import type { RunControl } from '../app/RunControl.js';
import type { RunEventFeed } from '../app/RunEventFeed.js';
import type { RunQueries } from '../app/RunQueries.js';
import type { KeyValue } from '../run/Registry.js';
import type { FileResult } from '../spec/validateWorkflows.js';

/** What this process is in the cluster: only a leader (or a controller without a lock) takes mutations. */
export type ControllerRole = 'standalone' | 'leader' | 'follower' | 'deposed';

/** The last sync as the API shows it beside each workflow. */
export interface LastSync {
  commit: string;
  status: 'synced' | 'partial' | 'failed';
  at: string;
}

/**
 * What the HTTP API stands on: the application layer's read and write sides, and the
 * controller's view of the watched branch. startController wires it to the running
 * controller; tests can give their own.
 */
export interface ApiBackend {
  queries: RunQueries;
  control: RunControl;
  /** Live events for the SSE routes (the events stream on NATS, journals in memory). */
  events: RunEventFeed;
  audit: GitAuditStore;
  /** Where a live run's journal is (LiveRuns.journalPath): read for the workflow a run runs. */
  journalPath(runId: string): string;
  /** Durable state for idempotency keys (the registry's KV, else files under .git/caravan). */
  kv: KeyValue;
  /** The workflow files at the last synced commit, validated; commit undefined before the first sync. */
  workflows(): Promise<{ commit: string | undefined; files: readonly FileResult[] }>;
  lastSync(): LastSync | undefined;
  /** Starts a run of a valid workflow at the synced commit; resolves once it is recorded as started. */
  startRun(workflow: string, params: Record<string, unknown>, trigger: string): Promise<{ runId: string }>;
  /**
   * Starts a retry of a finished run (CaravanApp.retry): what succeeded is reused, the rest
   * runs again; `by` is recorded in its trigger.
   */
  retryRun(runId: string, options: { from?: string; secretParams?: Record<string, unknown>; by: string }): Promise<{ runId: string; workflow: string; retryOf: string; reused: string[]; rerun: Array<{ task: string; why: string }> }>;
  role(): ControllerRole;
  /** The leader's advertised API address, for a follower's 503. */
  leaderAddress(): Promise<string | undefined>;
  /** Nomad's address, for links to the UI (backend nomad only). */
  nomadAddress?: string;
}
