import { defineConfig } from 'vitest/config';

/**
 * Two projects: `unit` (pure code and in-process fakes, seconds in all) and `integration`
 * (contract suites, real servers, the built CLI). `npx vitest run` runs both, unit first;
 * `npm run test:unit` / `npm run test:integration` run one.
 *
 * Worker limits are set for the 2-core machines the suite runs on. Unit files are pure CPU:
 * two at a time. Integration files run one at a time: each starts nats-server, Consul or
 * Nomad and task processes of its own, and two of them on two shared cores made a fresh-clone
 * CI run flaky before (a teardown timed out); being slower is cheaper than a failed CI.
 */
export default defineConfig({
  test: {
    // Forks, not threads: integration tests spawn servers and set process.env per file.
    pool: 'forks',
    testTimeout: 30_000,
    // The JSON report lets .ci/run print a plain "N passed, N failed" closing line.
    reporters: ['default', ['json', { outputFile: 'reports/vitest.json' }]],
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['tests/unit/**/*.test.ts'],
          maxWorkers: 2,
          // Projects with different worker limits run as separate groups, in this order.
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['tests/contract/**/*.test.ts', 'tests/integration/**/*.test.ts', 'tests/e2e/**/*.test.ts'],
          maxWorkers: 1,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
