/**
 * The subset of Nomad's job API (JSON form, as POSTed to /v1/jobs) that Caravan emits. Field
 * names are Nomad's exactly: its decoder ignores unknown fields, so a typo here would be
 * silently dropped. tests/unit/nomadJobSchema.test.ts checks every emitted field against
 * Nomad's OpenAPI Job schema. Durations are integer nanoseconds.
 */
export interface NomadJob {
  ID: string;
  Name: string;
  Type: 'batch' | 'service';
  Namespace: string;
  Region: string;
  Datacenters: string[];
  Priority: number;
  Meta: Record<string, string>;
  ParameterizedJob?: {
    Payload: 'optional' | 'required' | 'forbidden';
    MetaRequired: string[];
    MetaOptional: string[];
  };
  TaskGroups: NomadTaskGroup[];
}

export interface NomadTaskGroup {
  Name: string;
  Count: number;
  RestartPolicy: { Attempts: number; Interval?: number; Delay?: number; Mode: 'fail' | 'delay' };
  ReschedulePolicy: {
    Attempts: number;
    Interval?: number;
    Delay?: number;
    DelayFunction?: 'constant' | 'exponential' | 'fibonacci';
    MaxDelay?: number;
    Unlimited: boolean;
  };
  EphemeralDisk?: { SizeMB: number };
  Networks?: Array<{ Mode: string; DynamicPorts: Array<{ Label: string }> }>;
  Services?: NomadService[];
  Meta?: Record<string, string>;
  Tasks: NomadTask[];
}

export interface NomadService {
  Name: string;
  Provider: 'consul' | 'nomad';
  PortLabel: string;
  Tags: string[];
  Meta: Record<string, string>;
  Checks: Array<{
    Name: string;
    Type: 'http' | 'tcp' | 'script';
    Path: string;
    Interval: number;
    Timeout: number;
  }>;
}

export interface NomadTemplate {
  EmbeddedTmpl: string;
  DestPath: string;
  Envvars: boolean;
  ChangeMode: 'noop' | 'restart' | 'signal';
}

export interface NomadTask {
  Name: string;
  Driver: string;
  Lifecycle?: { Hook: 'prestart' | 'poststart' | 'poststop'; Sidecar: boolean };
  Leader?: boolean;
  Config: Record<string, unknown>;
  Env: Record<string, string>;
  Templates?: NomadTemplate[];
  DispatchPayload?: { File: string };
  Resources: { CPU?: number; Cores?: number; MemoryMB: number; MemoryMaxMB?: number };
  KillTimeout: number;
  Meta?: Record<string, string>;
}

/** One compiled job and what it came from. */
export interface CompiledJob {
  id: string;
  kind: 'task' | 'compensate' | 'pool';
  workflow: string;
  /** Task name (kind task) or pool name (kind pool). */
  source: string;
  job: NomadJob;
}
