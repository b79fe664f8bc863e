import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Native addons are not safe to load into worker threads that get recycled; use processes.
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
