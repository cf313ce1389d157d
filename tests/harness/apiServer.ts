import { onTestFinished } from 'vitest';
import { ApiTokens } from '../../engine/api/ApiTokens.js';
import { controllerBackend } from '../../engine/api/controllerBackend.js';
import { ControllerServer } from '../../engine/api/ControllerServer.js';
import { startController, type RunningController } from '../../engine/api/startController.js';
import { MemoryLogger, type Logger } from '../../engine/run/Logger.js';
import { tempRepo } from './gitRepo.js';

export const OPERATOR_TOKEN = 'operator-token-0123456789abcdef';

export interface ApiServerOptions {
  webhookSecret?: string;
  logger?: Logger;
  /** Listen on a free loopback port (requests over sockets); default: unbound, inject() only. */
  listen?: boolean;
  rateLimit?: { max: number; windowMs: number };
}

/**
 * The controller's server with the API over a real controller on a real repository holding
 * these workflows, unbound (requests through inject()) unless `listen`; closed when the test ends.
 */
export async function unboundApi(workflows: Record<string, string>, options: ApiServerOptions = {}): Promise<{ server: ControllerServer; ctl: RunningController; logger: Logger; dir: string }> {
  const dir = await tempRepo(workflows);
  const logger = options.logger ?? new MemoryLogger();
  const ctl = await startController({ repoDir: dir, intervalMs: 3_600_000, logger });
  const config = {
    host: '127.0.0.1',
    port: 0,
    logger,
    ...(options.webhookSecret !== undefined ? { webhookSecret: options.webhookSecret } : {}),
    readiness: async () => ({ ready: true, details: {} }),
    onPush: () => undefined,
    api: {
      backend: controllerBackend(ctl.app, ctl.controller, undefined),
      tokens: new ApiTokens([{ name: 'ops', token: OPERATOR_TOKEN, roles: ['operator', 'approver'] }]),
      ...(options.rateLimit !== undefined ? { rateLimit: options.rateLimit } : {}),
    },
  };
  const server = options.listen === true ? await ControllerServer.start(config) : await ControllerServer.unbound(config);
  onTestFinished(async () => {
    await server.close();
    await ctl.stop();
  });
  return { server, ctl, logger, dir };
}
