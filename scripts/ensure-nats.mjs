#!/usr/bin/env node
// Makes sure nats-server is on this machine. Installs it from the OS package manager when
// we are root; otherwise prints the one command to run and exits non-zero.
import { execFileSync, spawnSync } from "node:child_process";

const MIN = [2, 9, 0];

function version() {
  const r = spawnSync("nats-server", ["--version"], { encoding: "utf8" });
  if (r.status !== 0) return null;
  const m = /v?(\d+)\.(\d+)\.(\d+)/.exec(r.stdout + r.stderr);
  return m ? m.slice(1, 4).map(Number) : null;
}

function newEnough(v) {
  for (let i = 0; i < 3; i++) {
    if (v[i] !== MIN[i]) return v[i] > MIN[i];
  }
  return true;
}

let v = version();
if (v && newEnough(v)) process.exit(0);

const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
const hasApt = spawnSync("sh", ["-c", "command -v apt-get"]).status === 0;
if (!hasApt) {
  console.error("tandem: nats-server (>= 2.9) is missing and this machine has no apt-get.");
  console.error("Install nats-server with your OS package manager, then run this again.");
  process.exit(1);
}
if (!isRoot) {
  console.error("tandem: nats-server (>= 2.9) is missing. Install it with:");
  console.error("  sudo apt-get update && sudo apt-get install -y nats-server");
  process.exit(1);
}
console.error("tandem: installing nats-server from the OS package manager ...");
const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
execFileSync("apt-get", ["update", "-qq"], { stdio: "inherit", env });
execFileSync("apt-get", ["install", "-y", "-qq", "nats-server"], { stdio: "inherit", env });
v = version();
if (!v || !newEnough(v)) {
  console.error("tandem: nats-server was installed but `nats-server --version` does not report >= 2.9.");
  process.exit(1);
}
console.error(`tandem: nats-server v${v.join(".")} installed.`);
