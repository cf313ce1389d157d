import type { Logger } from '../run/Logger.js';
import type { ApiBackend } from './ApiBackend.js';
import type { IdempotencyKeys } from './IdempotencyKeys.js';

/** What the route modules get from registerApi: the backend, the idempotency keys, the route prefix and the log. */
export interface RouteContext {
  backend: ApiBackend;
  idempotency: IdempotencyKeys;
  prefix: string;
  log: Logger;
}
