// The process tests run the built CLI, and the dashboard test the built page: build both once
// before any test file runs.
import { execFileSync } from "node:child_process";

export default function setup(): void {
  execFileSync(process.execPath, ["node_modules/typescript/bin/tsc", "-p", "tsconfig.build.json"], { stdio: "inherit" });
  execFileSync(process.execPath, ["scripts/build-dashboard.mjs"], { stdio: "inherit" });
}
