import { stdoutOutput, type TaskSpec } from '../spec/Workflow.js';

/**
 * Nomad evaluates strings in a task's driver config as HCL templates, where `${` and `%{`
 * start an interpolation or a directive (a live agent rejects `${{ ... }}` with "Missing
 * key/value separator"). What the user wrote must reach the runner verbatim, so it is
 * escaped (`$${`, `%%{`); the runner's own `${NOMAD_TASK_DIR}` is left for Nomad to fill in.
 */
export function escapeHcl(s: string): string {
  return s.replace(/\$\{/g, () => '$${').replace(/%\{/g, () => '%%{');
}

export function unescapeHcl(s: string): string {
  return s.replace(/\$\$\{/g, () => '${').replace(/%%\{/g, () => '%{');
}

/**
 * The arguments that start the agent runner for one task. The runner (`caravan agent`) reads
 * the attempt's context from the dispatch payload, evaluates the `${{ }}` expressions left in
 * these arguments, runs the action, and reports over the bus. Keeping the user's command in
 * the job (instead of only in the payload) is what lets reviewers see it change in a plan
 * and operators see it in the Nomad UI.
 */
export function agentArgs(
  workflow: string,
  task: TaskSpec,
  timeout: string | undefined,
  payloadPath: string,
  secretHeaders: Map<string, string>,
  extra: readonly string[] = [],
): string[] {
  const common = ['--workflow', workflow, '--task', task.name, '--payload', payloadPath, ...extra];
  if (timeout !== undefined) common.push('--timeout', timeout);
  const fileOutputs = (task.outputs ?? []).filter((o): o is string => typeof o === 'string');
  if (fileOutputs.length > 0) common.push('--outputs', fileOutputs.join(','));
  const stdout = stdoutOutput(task.outputs);
  if (stdout !== undefined) common.push('--stdout-output', stdout.name, ...(stdout.maxBytes !== undefined ? ['--stdout-max-bytes', String(stdout.maxBytes)] : []));
  if (task.workingDir !== undefined) common.push('--cwd', escapeHcl(task.workingDir));
  const agent = task.agent ?? (task.http !== undefined ? 'http' : task.sleep !== undefined ? 'sleep' : 'shell');
  switch (agent) {
    case 'shell':
      if (task.run !== undefined) return ['shell', ...common, '--', escapeHcl(task.run)];
      return ['exec', ...common, '--', ...(task.args ?? []).map(escapeHcl)];
    case 'http': {
      const h = task.http!;
      const out = ['http', ...common, '--method', h.method ?? 'GET', '--url', escapeHcl(h.url)];
      for (const [name, value] of Object.entries(h.headers ?? {}).sort(([a], [b]) => (a < b ? -1 : 1))) {
        if (typeof value === 'string') out.push('--header', escapeHcl(`${name}: ${value}`));
        else out.push('--header-from-env', `${name}=${secretHeaders.get(name)!}`);
      }
      if (h.body !== undefined) out.push('--body', escapeHcl(typeof h.body === 'string' ? h.body : JSON.stringify(h.body)));
      return out;
    }
    case 'sleep':
      return ['sleep', ...common, '--duration', task.sleep ?? '0s'];
    case 'noop':
      return ['noop', ...common];
    default:
      return ['plugin', ...common, '--type', agent, '--with', escapeHcl(JSON.stringify(task.with ?? {}))];
  }
}
