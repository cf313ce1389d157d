import type { Diagnostic } from '../spec/Diagnostic.js';
import { toJsonPointer } from '../spec/Diagnostic.js';
import { decodeSource } from '../spec/decodeSource.js';
import { parseYamlSource } from '../spec/parseYamlSource.js';
import { SourceLocator } from '../spec/SourceLocator.js';
import { validateSchema } from '../spec/validateSchema.js';
import type { NomadJob } from './NomadJob.js';

/** deploy/controller.yaml, checked against schemas/controller-deploy.v1.json. */
export interface ControllerDeploy {
  repo: string;
  branch?: string;
  command?: string[];
  count?: number;
  datacenters?: string[];
  env?: Record<string, string>;
  args?: string[];
  serviceProvider?: 'consul' | 'nomad';
  resources?: { cpu?: number; memoryMB?: number };
}

export const CONTROLLER_JOB_ID = 'caravan-controller';
/** Where `caravan render` writes it, beside the workflows' jobs. */
export const CONTROLLER_JOB_PATH = `caravan/${CONTROLLER_JOB_ID}.json`;
const SECOND = 1_000_000_000;

export type ControllerDeployResult = { ok: true; deploy: ControllerDeploy } | { ok: false; diagnostics: Diagnostic[] };

/** Reads the controller's deployment settings, with diagnostics naming the file, line and field. */
export function readControllerDeploy(file: string, bytes: Uint8Array): ControllerDeployResult {
  const at = (d: { message: string; code: Diagnostic['code']; line?: number | undefined; col?: number | undefined }): ControllerDeployResult => ({ ok: false, diagnostics: [{ file, line: d.line ?? 1, col: d.col ?? 1, severity: 'error', code: d.code, message: d.message, path: '' }] });
  const decoded = decodeSource(bytes);
  if (!decoded.ok) return at(decoded.diagnostic);
  const parsed = parseYamlSource(decoded.text);
  if (parsed.value === undefined) return at(parsed.diagnostics[0]!);
  const problems = validateSchema(parsed.value, 'controller-deploy.v1.json');
  if (problems.length > 0) {
    const locator = new SourceLocator(decoded.text);
    return { ok: false, diagnostics: problems.map((p) => ({ file, ...locator.locate(p), severity: p.severity, code: p.code, message: p.message.replace(/the workflow/g, 'the controller settings'), path: toJsonPointer(p.path) })) };
  }
  return { ok: true, deploy: parsed.value as unknown as ControllerDeploy };
}

/**
 * The controller's own Nomad job: a service of `count` controllers (one leads through the
 * Consul lock, the others stand by) on raw_exec, each serving /health and /ready on a dynamic
 * port, with the service's check on /ready, so Nomad replaces a controller that stops being
 * ready. SIGTERM, Nomad's stop signal, makes a controller finish its sync and hand its runs
 * over within the kill timeout.
 */
export function controllerJob(d: ControllerDeploy): NomadJob {
  const [command, ...rest] = d.command ?? ['caravan'];
  const args = [...rest, 'controller', '--repo', d.repo, '--branch', d.branch ?? 'main', '--listen', '0.0.0.0:${NOMAD_PORT_http}', '--backend', 'nomad', '--bus', 'nats', '--registry', 'consul', ...(d.args ?? [])];
  const job: NomadJob = {
    ID: CONTROLLER_JOB_ID,
    Name: CONTROLLER_JOB_ID,
    Type: 'service',
    Namespace: 'default',
    Region: 'global',
    Datacenters: [...(d.datacenters ?? ['*'])],
    Priority: 70,
    Meta: { 'caravan.component': 'controller' },
    TaskGroups: [{
      Name: 'controller',
      Count: d.count ?? 2,
      RestartPolicy: { Attempts: 3, Interval: 600 * SECOND, Delay: 15 * SECOND, Mode: 'delay' },
      ReschedulePolicy: { Attempts: 0, Interval: 0, Delay: 30 * SECOND, DelayFunction: 'exponential', MaxDelay: 600 * SECOND, Unlimited: true },
      Networks: [{ Mode: 'host', DynamicPorts: [{ Label: 'http' }] }],
      Services: [{
        Name: CONTROLLER_JOB_ID,
        Provider: d.serviceProvider ?? 'consul',
        PortLabel: 'http',
        Tags: ['caravan', 'caravan-controller'],
        Meta: { caravan_component: 'controller' },
        Checks: [{ Name: 'controller ready', Type: 'http', Path: '/ready', Interval: 10 * SECOND, Timeout: 2 * SECOND }],
      }],
      Tasks: [{
        Name: 'controller',
        Driver: 'raw_exec',
        Config: { command, args },
        Env: Object.fromEntries(Object.entries(d.env ?? {}).sort(([a], [b]) => (a < b ? -1 : 1))),
        Resources: { CPU: d.resources?.cpu ?? 500, MemoryMB: d.resources?.memoryMB ?? 256 },
        // Time to finish the sync under way and hand runs over (journal and checkpoint).
        KillTimeout: 30 * SECOND,
      }],
    }],
  };
  return job;
}
