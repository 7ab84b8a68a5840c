#!/usr/bin/env node
// Makes sure a current nats-server (v2.15.2, floor 2.12) and the NATS CLI (natscli v0.5.0) are
// in the project's .tools/bin, where Tandem's processes, tests and bench look first. In order:
//   1. one already there or on PATH whose version is at least the floor: linked into .tools/bin;
//   2. with Go: `go install` of the pinned modules, GOBIN=.tools/bin (Go's caches make a second
//      build cheap);
//   3. without Go, nats-server only: Debian unstable's `nats-server` package (it needs only libc),
//      fetched with `apt-get download` through a private sources list and state directory under
//      .tools/apt and unpacked into .tools/bin; the system's apt configuration is not touched;
//   4. otherwise: what to install, and how, and a non-zero exit.
// `--quiet` prints nothing when everything is there already. The NATS CLI is required only with
// `--with-cli` (the tests and CI run it); otherwise a missing one is a warning.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync, symlinkSync, writeFileSync, copyFileSync, chmodSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const bin = join(root, ".tools", "bin");
const quiet = process.argv.includes("--quiet");
const withCli = process.argv.includes("--with-cli");
const say = (s) => console.error(`tandem setup: ${s}`);

const TOOLS = [
  {
    name: "nats-server",
    want: "2.15.2",
    floor: [2, 12, 0],
    module: "github.com/nats-io/nats-server/v2@v2.15.2",
    versionArgs: ["--version"],
    debian: "nats-server",
  },
  {
    name: "nats",
    want: "0.5.0",
    floor: [0, 2, 0],
    module: "github.com/nats-io/natscli/nats@v0.5.0",
    versionArgs: ["--version"],
    debian: null, // Debian's natscli is older than the commands the tests use
  },
];

function versionOf(path, args) {
  const r = spawnSync(path, args, { encoding: "utf8", timeout: 10_000 });
  if (r.status !== 0) return null;
  const m = /v?(\d+)\.(\d+)\.(\d+)/.exec(`${r.stdout}${r.stderr}`);
  return m ? m.slice(1, 4).map(Number) : null;
}

const atLeast = (v, floor) => {
  for (let i = 0; i < 3; i++) if (v[i] !== floor[i]) return v[i] > floor[i];
  return true;
};

function onPath(name) {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (!dir || resolve(dir) === bin) continue;
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  return null;
}

function goInstall(tool) {
  // TANDEM_SETUP_NO_GO=1 tries the paths after Go (how the Debian path is checked on a machine with Go).
  if (process.env.TANDEM_SETUP_NO_GO === "1") return false;
  const go = onPath("go") ?? (existsSync("/usr/local/go/bin/go") ? "/usr/local/go/bin/go" : null);
  if (!go) return false;
  say(`building ${tool.module} with ${go} (the first build takes a few minutes; Go caches it) ...`);
  const t0 = Date.now();
  const r = spawnSync(go, ["install", tool.module], {
    stdio: ["ignore", "inherit", "inherit"],
    env: { ...process.env, GOBIN: bin, CGO_ENABLED: "0", GOFLAGS: "-trimpath" },
  });
  if (r.status !== 0) {
    say(`go install ${tool.module} failed (exit ${r.status})`);
    return false;
  }
  say(`built ${tool.name} in ${Math.round((Date.now() - t0) / 1000)} s`);
  return true;
}

/** Debian unstable's package, through apt's own client but with private lists and state. */
function debianDownload(tool) {
  if (!tool.debian || !onPath("apt-get") || !onPath("dpkg-deb")) return false;
  const aptDir = join(root, ".tools", "apt");
  const dirs = ["lists/partial", "cache/archives/partial", "etc/sources.list.d", "etc/preferences.d", "state"];
  for (const d of dirs) mkdirSync(join(aptDir, d), { recursive: true });
  writeFileSync(join(aptDir, "status"), "");
  writeFileSync(
    join(aptDir, "etc", "sources.list"),
    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian unstable main\n",
  );
  const opts = [
    `-o`, `Dir::Etc::SourceList=${join(aptDir, "etc", "sources.list")}`,
    `-o`, `Dir::Etc::SourceParts=${join(aptDir, "etc", "sources.list.d")}`,
    `-o`, `Dir::Etc::PreferencesParts=${join(aptDir, "etc", "preferences.d")}`,
    `-o`, `Dir::State=${join(aptDir, "state")}`,
    `-o`, `Dir::State::Lists=${join(aptDir, "lists")}`,
    `-o`, `Dir::State::status=${join(aptDir, "status")}`,
    `-o`, `Dir::Cache=${join(aptDir, "cache")}`,
    `-o`, `APT::Architecture=amd64`,
    `-o`, `Debug::NoLocking=1`,
  ];
  say(`fetching Debian unstable's ${tool.debian} package into ${aptDir} (the system's apt is not touched) ...`);
  const upd = spawnSync("apt-get", [...opts, "update", "-qq"], { stdio: "inherit" });
  if (upd.status !== 0) return false;
  // As root, apt downloads as _apt, who cannot write into the project: download as ourselves.
  const dl = spawnSync("apt-get", [...opts, "-o", "APT::Sandbox::User=root", "download", tool.debian], { stdio: "inherit", cwd: aptDir });
  if (dl.status !== 0) return false;
  const deb = readdirSync(aptDir).find((f) => f.startsWith(`${tool.debian}_`) && f.endsWith(".deb"));
  if (!deb) return false;
  const unpacked = join(aptDir, "unpacked");
  rmSync(unpacked, { recursive: true, force: true });
  if (spawnSync("dpkg-deb", ["-x", join(aptDir, deb), unpacked], { stdio: "inherit" }).status !== 0) return false;
  const exe = ["sbin", "bin"].map((d) => join(unpacked, "usr", d, tool.name)).find((p) => existsSync(p));
  if (!exe) return false;
  copyFileSync(exe, join(bin, tool.name));
  chmodSync(join(bin, tool.name), 0o755);
  return true;
}

function howTo(tool) {
  return [
    `tandem: ${tool.name} ${tool.want} (at least ${tool.floor.join(".")}) is missing, and no way to install it worked here. Any of:`,
    `  - with Go:  GOBIN=${bin} go install ${tool.module}`,
    tool.name === "nats-server"
      ? `  - a release binary from github.com/nats-io/nats-server/releases, put into ${bin} or on PATH`
      : `  - a release binary from github.com/nats-io/natscli/releases, put into ${bin} or on PATH`,
    tool.name === "nats-server"
      ? `  - a package manager: Debian unstable/testing "apt-get install nats-server", Homebrew "brew install nats-server"`
      : `  - a package manager: Homebrew "brew install nats-io/nats-tools/nats"`,
    tool.name === "nats-server" ? `  - a container: docker run -p 4222:4222 nats:2.15 -js (then set NATS_URL)` : "",
  ]
    .filter(Boolean)
    .join("\n");
}

mkdirSync(bin, { recursive: true });
let failed = false;
for (const tool of TOOLS) {
  const local = join(bin, tool.name);
  const have = existsSync(local) ? versionOf(local, tool.versionArgs) : null;
  if (have && atLeast(have, tool.floor)) {
    if (!quiet) say(`${tool.name} v${have.join(".")} (${local})`);
    continue;
  }
  const sys = onPath(tool.name);
  const sysV = sys ? versionOf(sys, tool.versionArgs) : null;
  if (sys && sysV && atLeast(sysV, tool.floor)) {
    rmSync(local, { force: true });
    symlinkSync(sys, local);
    if (!quiet) say(`${tool.name} v${sysV.join(".")} from PATH (${sys}), linked into ${bin}`);
    continue;
  }
  if (sys && sysV) say(`${sys} is v${sysV.join(".")}, older than the floor ${tool.floor.join(".")}: installing ${tool.want}`);
  rmSync(local, { force: true });
  const ok = goInstall(tool) || debianDownload(tool);
  const v = ok && existsSync(local) ? versionOf(local, tool.versionArgs) : null;
  if (v && atLeast(v, tool.floor)) {
    say(`${tool.name} v${v.join(".")} installed in ${bin}`);
  } else {
    console.error(howTo(tool));
    if (tool.name === "nats" && !withCli) say("continuing without the NATS CLI (Tandem itself does not need it; the tests do)");
    else failed = true;
  }
}
process.exit(failed ? 1 : 0);
