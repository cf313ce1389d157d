import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    // Integration tests start real servers; keep them from fighting over the 2 cores.
    pool: 'forks',
    testTimeout: 30_000,
  },
});
