import { defineConfig } from "vitest/config";

// 2 cores: the fault tests each run a whole deployment (nats-server, managers, servers,
// clients as processes) and measure takeover times; two of them at once starve each other
// of CPU and the timings stop meaning anything. Files run one at a time.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/global-setup.ts"],
    pool: "forks",
    maxWorkers: 1,
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ["default"],
  },
});
