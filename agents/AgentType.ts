import type { EnvMap, FailureKind, HttpSpec } from '../engine/spec/Workflow.js';
import type { StdoutCaptureSpec } from './captureStdout.js';
import type { ShellWorkerPool } from './ShellWorkerPool.js';

/** What an agent is asked to do, with every `${{ }}` already resolved. */
export interface AgentAction {
  agent: string;
  run?: string;
  args?: string[];
  http?: HttpSpec;
  sleepMs?: number;
  with?: Record<string, unknown>;
  /** Literal environment; secret and host references are resolved by the runner. */
  env: Record<string, string>;
  workingDir?: string;
  timeoutMs?: number;
  /** Output names the task declares in $CARAVAN_OUTPUTS; only these are kept. */
  outputs: string[];
  /** Keep the whole stdout as this output (shell agent only). */
  stdout?: StdoutCaptureSpec;
}

export interface AgentIo {
  /**
   * One line of the task's output, in order, without its newline. The runner masks secrets
   * in it, cuts it and bounds how many lines and bytes are kept; an agent need not.
   */
  log(stream: 'stdout' | 'stderr', line: string): void;
  /** Aborted on cancel; agents must stop promptly and kill what they started. */
  signal: AbortSignal;
  /** A private directory for this attempt (outputs file, scratch). */
  scratchDir: string;
  /** The directory relative working directories are resolved against. */
  baseDir: string;
  /** Long-lived shells to run commands in, when the executor keeps a pool. */
  workers?: ShellWorkerPool;
  /** Names the attempt for a later process: a job a worker runs carries it (see findOrphanJob). */
  label?: string;
}

export type AgentResult =
  | { ok: true; outputs: Record<string, string>; exitCode?: number }
  /**
   * `code`: the CaravanError code when the failure is one (OUTPUT_TOO_LARGE), recorded with the attempt.
   * `failure` says what failed, for `retry.on`; a plugin that leaves it out reports its own (exit) failure.
   */
  | { ok: false; error: string; retryable: boolean; exitCode?: number; code?: string; failure?: FailureKind };

/** An agent type: shell, http, noop, sleep, or a plugin registered at start-up. */
export interface AgentType {
  readonly name: string;
  run(action: AgentAction, io: AgentIo): Promise<AgentResult>;
}

export type { EnvMap };
