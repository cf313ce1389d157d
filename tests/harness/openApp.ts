import { onTestFinished } from 'vitest';
import { CaravanApp, type CaravanAppOptions } from '../../engine/app/CaravanApp.js';

/**
 * The application layer for a test, closed when the test ends (its executor's shell workers,
 * its NATS connection), whether the test passed or not.
 */
export function openApp(options: CaravanAppOptions): CaravanApp {
  const app = new CaravanApp(options);
  onTestFinished(() => app.close());
  return app;
}
