/** Where and how compiled jobs run. Everything here is cluster placement, never workflow logic. */
export interface CompileOptions {
  namespace: string;
  region: string;
  datacenters: string[];
  /**
   * The agent runner as installed on Nomad clients: the command and leading arguments that
   * start `caravan agent`. Tasks never run the user's command directly; the runner wraps it
   * and reports over the bus.
   */
  agentCommand: string[];
  /** Commit of the workflow repository, put in Job Meta when registering (not when rendering). */
  gitCommit?: string;
  /** Job priority (Nomad default 50). */
  priority: number;
  /** Extra environment for pool agents (for example NATS_URL), set when registering. */
  agentEnv?: Record<string, string>;
}

export const DEFAULT_COMPILE_OPTIONS: CompileOptions = {
  namespace: 'default',
  region: 'global',
  datacenters: ['*'],
  agentCommand: ['caravan', 'agent'],
  priority: 50,
};

/** Dispatch meta keys every attempt must carry (NOMAD_META_<key> in the allocation). */
export const DISPATCH_META_REQUIRED = ['caravan_run', 'caravan_attempt'] as const;
export const DISPATCH_META_OPTIONAL = ['caravan_item'] as const;
