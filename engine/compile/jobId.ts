/** Nomad accepts longer IDs, but past this the UI and CLI output become unreadable. */
export const MAX_JOB_ID_LENGTH = 128;

/** A name as it may appear in a Nomad job ID: lower case, '_' as '-'. */
export function sanitizeName(name: string): string {
  return name.toLowerCase().replace(/_/g, '-');
}

export function taskJobId(workflow: string, task: string): string {
  return `caravan-${sanitizeName(workflow)}-${sanitizeName(task)}`;
}

/** The job that undoes a task (its `compensate`), dispatched when a saga unwinds. */
export function compensateJobId(workflow: string, task: string): string {
  return `${taskJobId(workflow, task)}-compensate`;
}

export function poolJobId(workflow: string, pool: string): string {
  return `caravan-${sanitizeName(workflow)}-pool-${sanitizeName(pool)}`;
}
