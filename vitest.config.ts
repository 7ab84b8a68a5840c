import { defineConfig } from "vitest/config";

// 2 cores: integration tests spawn nats-server and Tandem processes, so run files in two
// forks at most and keep each test's own time bounded.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/global-setup.ts"],
    pool: "forks",
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ["default"],
  },
});
