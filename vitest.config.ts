import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Integration tests start real clusters; two cores, so keep file-level parallelism low.
    maxWorkers: 2,
    fileParallelism: true,
  },
});
