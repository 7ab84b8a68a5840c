/**
 * The command line's manners (issue 16, items 1, 4, 6 and 8): --version, errors that name the
 * flag typed, exit codes that say what was found, and read-only commands that never start a
 * nats-server of their own.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ManagerNode } from "../../src/actors/manager.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { primaryManager, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";
import { CLI } from "../helpers/procs.js";

const run = (args: string[], env: Record<string, string | undefined>, cwd?: string) =>
  promisify(execFile)(process.execPath, [CLI, ...args], { env: { ...process.env, NATS_URL: undefined, ...env } as NodeJS.ProcessEnv, encoding: "utf8", timeout: 30_000, ...(cwd ? { cwd } : {}) }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" }),
  );

let ns: NatsServer;
let rt: Runtime;
let mgr: ManagerNode;
const dir = mkdtempSync(join(tmpdir(), "tandem-cli-"));

beforeAll(async () => {
  ns = await startNats();
  rt = await runtimeFor(ns);
  mgr = await primaryManager(rt);
}, 60_000);

afterAll(async () => {
  await mgr?.stop();
  await rt?.close();
  await ns?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

describe("the tandem command's manners", () => {
  it("says its version, on its own and after any command", async () => {
    const version = (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;
    expect((await run(["--version"], {})).stdout.trim()).toBe(`tandem ${version}`);
    expect((await run(["status", "--version"], {})).stdout.trim()).toBe(`tandem ${version}`);
  });

  it("names a bad setting as it was given: the flag and its environment variable", async () => {
    const r = await run(["status", "--lease-ms", "5"], {});
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("invalid setting --lease-ms / TANDEM_LEASE_MS: 5 is outside 50..600000");
  });

  it("a read-only command with no NATS to look at says so and starts none", async () => {
    const r = await run(["status"], {}, dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no NATS_URL, and no nats-server running for .* start one there \(`tandem nats`\)/);
    expect(existsSync(join(dir, ".tandem"))).toBe(false);
  });

  it("status of a session that does not exist exits 3", async () => {
    const r = await run(["status", "--session", "nosuchsession"], { NATS_URL: ns.url });
    expect(r.stdout).toContain("no record");
    expect(r.code).toBe(3);
  });

  it("status --watch refreshes, one JSON line per refresh, and its exit code says what the last one found", async () => {
    const r = await run(["status", "--watch", "200", "--count", "3", "--json"], { NATS_URL: ns.url });
    expect(r.code, r.stderr).toBe(0);
    const views = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as { at: string; epoch: number; node: string });
    expect(views).toHaveLength(3);
    for (const x of views) expect(x.epoch).toBeGreaterThanOrEqual(1);
    const at = views.map((x) => Date.parse(x.at));
    expect(at[2]! - at[0]!).toBeGreaterThanOrEqual(350);
    const text = await run(["status", "--watch", "--count", "2"], { NATS_URL: ns.url });
    expect(text.stdout.match(/^primary /gm)).toHaveLength(2);
    const gone = await run(["status", "--session", "nosuchsession", "--watch", "100", "--count", "2", "--json"], { NATS_URL: ns.url });
    expect(gone.code).toBe(3);
    expect(gone.stdout.trim().split("\n")).toHaveLength(2);
  });

  it("status with no primary says so, as JSON too, and exits 1", async () => {
    const r = await run(["status", "--json", "--prefix", "nobody"], { NATS_URL: ns.url });
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ primary: null });
  });

  it("logs one line an event, labelled with the process's role and id, in colour unless NO_COLOR", async () => {
    // A terminal, as `script` gives one: the pretty format.
    const inTty = (env: string) =>
      promisify(execFile)("script", ["-qefc", `${env} TANDEM_PREFIX=prettylogs NATS_URL=${ns.url} timeout -s TERM 2 ${process.execPath} ${CLI} manager --node pretty1`, "/dev/null"], {
        encoding: "utf8",
        timeout: 20_000,
        env: { ...process.env, TANDEM_LOG_JSON: "", NO_COLOR: "" },
      }).then(
        (r) => r.stdout,
        (e: { stdout?: string }) => e.stdout ?? "",
      );
    const plain = (await inTty("NO_COLOR=1")).split(/\r?\n/).filter(Boolean);
    expect(plain.length).toBeGreaterThanOrEqual(4);
    for (const l of plain) expect(l).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] (INFO|WARN|DEBUG|ERROR) \(manager pretty1\): \S/);
    expect(plain.join("\n")).not.toContain("\x1b[");
    expect(plain.some((l) => l.includes("manager primary"))).toBe(true);
    const coloured = await inTty("");
    expect(coloured).toContain("\x1b[");
  });

  it("writes JSON log lines without a key twice", async () => {
    const r = await promisify(execFile)("timeout", ["-s", "TERM", "2", process.execPath, CLI, "manager", "--node", "json1", "--prefix", "jsonlogs"], {
      encoding: "utf8",
      timeout: 20_000,
      env: { ...process.env, NATS_URL: ns.url, TANDEM_LOG_JSON: "1" },
    }).then(
      (x) => x.stderr,
      (e: { stderr?: string }) => e.stderr ?? "",
    );
    const lines = r.split("\n").filter((l) => l.startsWith("{"));
    expect(lines.some((l) => l.includes("drained"))).toBe(true);
    for (const l of lines) {
      const keys = Object.keys(JSON.parse(l) as object);
      for (const k of keys) expect(l.split(`"${k}":`).length - 1, `${k} in ${l}`).toBe(1);
    }
  });
});
