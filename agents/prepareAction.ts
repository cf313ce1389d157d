import { CaravanError } from '../engine/errors/CaravanError.js';
import { interpolate, interpolateDeep, type ExpressionContext } from '../engine/run/evaluate.js';
import { interpolateShell } from '../engine/run/interpolateShell.js';
import { parseDuration } from '../engine/spec/parseDuration.js';
import { STDOUT_OUTPUT_DEFAULT_BYTES, stdoutOutput, type EnvMap, type TaskSpec } from '../engine/spec/Workflow.js';
import type { AgentAction } from './AgentType.js';

export interface PreparedAction {
  action: AgentAction;
  /** Secret values put in the environment: masked wherever the task's logs go. */
  secrets: string[];
}

/** Where a secret comes from when no Nomad Variables exist (local runs): an environment variable. */
export function localSecretVariable(path: string, key: string): string {
  return 'CARAVAN_SECRET_' + `${path}_${key}`.toUpperCase().replace(/[^A-Z0-9]/g, '_');
}

export type SecretResolver = (path: string, key: string) => string | undefined;

export const environmentSecrets: SecretResolver = (path, key) => process.env[localSecretVariable(path, key)];

/** A secret the task needs that this place cannot resolve: the attempt fails with this message. */
function secretUnavailable(secret: { path: string; key: string }, usedFor: string): CaravanError {
  const variable = localSecretVariable(secret.path, secret.key);
  return new CaravanError('SECRET_UNAVAILABLE', `secret ${secret.path}#${secret.key} for ${usedFor} is not available here (locally, set ${variable})`, { data: { path: secret.path, key: secret.key, usedFor, variable } });
}

/**
 * Turns a task (or its compensation) into what an agent runs: `${{ }}` resolved from the
 * attempt's context, secret and host references resolved where the task runs.
 */
export function prepareAction(spec: TaskSpec, kind: 'task' | 'compensate', ctx: ExpressionContext, defaults: { env?: EnvMap; timeoutMs?: number }, secrets: SecretResolver): PreparedAction {
  const secretValues: string[] = [];
  const resolveEnv = (env: EnvMap): Record<string, string> => {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(env)) {
      if (typeof v === 'string') out[k] = interpolate(v, ctx);
      else if ('secret' in v) {
        const value = secrets(v.secret.path, v.secret.key);
        if (value === undefined) throw secretUnavailable(v.secret, k);
        secretValues.push(value);
        out[k] = value;
      } else out[k] = process.env[v.fromHost] ?? '';
    }
    return out;
  };
  if (kind === 'compensate') {
    const c = spec.compensate ?? {};
    const env = resolveEnv({ ...(defaults.env ?? {}), ...(spec.env ?? {}), ...(c.env ?? {}) });
    const action: AgentAction = {
      agent: 'shell',
      env,
      outputs: [],
      ...(c.run !== undefined ? shellRun(c.run, ctx, env) : {}),
      ...(c.args !== undefined ? { args: c.args.map((a) => interpolate(a, ctx)) } : {}),
      ...(spec.workingDir !== undefined ? { workingDir: spec.workingDir } : {}),
    };
    const t = c.timeout !== undefined ? parseDuration(c.timeout) : defaults.timeoutMs;
    if (t !== undefined) action.timeoutMs = t;
    return { action, secrets: secretValues };
  }
  const agent = spec.agent ?? (spec.http !== undefined ? 'http' : spec.sleep !== undefined ? 'sleep' : 'shell');
  const action: AgentAction = {
    agent,
    env: resolveEnv({ ...(defaults.env ?? {}), ...(spec.env ?? {}) }),
    outputs: (spec.outputs ?? []).filter((o): o is string => typeof o === 'string'),
  };
  const stdout = stdoutOutput(spec.outputs);
  if (stdout !== undefined) action.stdout = { task: spec.name, output: stdout.name, maxBytes: stdout.maxBytes ?? STDOUT_OUTPUT_DEFAULT_BYTES };
  if (spec.run !== undefined) Object.assign(action, shellRun(spec.run, ctx, action.env));
  if (spec.args !== undefined) action.args = spec.args.map((a) => interpolate(a, ctx));
  if (spec.workingDir !== undefined) action.workingDir = interpolate(spec.workingDir, ctx);
  if (spec.with !== undefined) action.with = interpolateDeep(spec.with, ctx);
  if (spec.sleep !== undefined) action.sleepMs = parseDuration(spec.sleep) ?? 0;
  if (spec.http !== undefined) {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(spec.http.headers ?? {})) {
      if (typeof v === 'string') headers[k] = interpolate(v, ctx);
      else {
        const value = secrets(v.secret.path, v.secret.key);
        if (value === undefined) throw secretUnavailable(v.secret, `header ${k}`);
        secretValues.push(value);
        headers[k] = value;
      }
    }
    action.http = { ...spec.http, url: interpolate(spec.http.url, ctx), headers, ...(spec.http.body !== undefined ? { body: interpolateDeep(spec.http.body, ctx) } : {}) };
  }
  const timeout = spec.timeout !== undefined ? parseDuration(spec.timeout) : defaults.timeoutMs;
  if (timeout !== undefined) action.timeoutMs = timeout;
  return { action, secrets: secretValues };
}

/**
 * A `run` script with its `${{ }}` values passed as environment variables the script refers
 * to (see interpolateShell): data from params or upstream outputs is never parsed as shell.
 * The variables join `env`, after the task's own.
 */
function shellRun(run: string, ctx: ExpressionContext, env: Record<string, string>): { run: string } {
  const { script, env: values } = interpolateShell(run, ctx);
  Object.assign(env, values);
  return { run: script };
}
