#!/usr/bin/env node
// Makes sure PostgreSQL server binaries are on this machine (the tests start their own
// server from them). Installs Debian's `postgresql` package when we are root; otherwise
// prints the one command to run and exits non-zero.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";

const base = "/usr/lib/postgresql";
const have = () => existsSync(base) && readdirSync(base).some((v) => existsSync(join(base, v, "bin", "postgres")));
if (have()) process.exit(0);

const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
const hasApt = spawnSync("sh", ["-c", "command -v apt-get"]).status === 0;
if (!hasApt || !isRoot) {
  console.error("tandem: the PostgreSQL server is missing (the tests of the PostgreSQL store start one). Install it with:");
  console.error("  sudo apt-get update && sudo apt-get install -y postgresql");
  process.exit(1);
}
console.error("tandem: installing postgresql from the OS package manager ...");
const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
execFileSync("apt-get", ["update", "-qq"], { stdio: "inherit", env });
execFileSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", "postgresql"], { stdio: "inherit", env });
if (!have()) {
  console.error("tandem: postgresql was installed but no server binary is under /usr/lib/postgresql/*/bin");
  process.exit(1);
}
console.error("tandem: postgresql installed.");
