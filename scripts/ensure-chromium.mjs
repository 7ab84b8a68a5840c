#!/usr/bin/env node
// Makes sure a Chromium is on this machine for the dashboard's browser test (playwright-core
// drives it; no browser download is possible here, so it is Debian's `chromium` package).
// Installs it when we are root and it is missing; otherwise prints the one command to run.
// CHROMIUM_BIN names another executable.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";

const candidates = [process.env.CHROMIUM_BIN, "/usr/bin/chromium", "/usr/bin/chromium-browser"].filter(Boolean);
if (candidates.some((p) => existsSync(p))) process.exit(0);

const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
const hasApt = spawnSync("sh", ["-c", "command -v apt-get"]).status === 0;
if (!hasApt || !isRoot) {
  console.error("tandem: Chromium is missing (the dashboard's test drives it headless). Install it with:");
  console.error("  sudo apt-get update && sudo apt-get install -y chromium");
  process.exit(1);
}
console.error("tandem: installing chromium from the OS package manager (for the dashboard's browser test) ...");
const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
execFileSync("apt-get", ["update", "-qq"], { stdio: "inherit", env });
execFileSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", "chromium"], { stdio: "inherit", env });
if (!existsSync("/usr/bin/chromium")) {
  console.error("tandem: chromium was installed but /usr/bin/chromium is not there; set CHROMIUM_BIN");
  process.exit(1);
}
console.error("tandem: chromium installed.");
