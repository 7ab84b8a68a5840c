/**
 * The embedded default is shared and announced (issue 16, item 6): with no NATS_URL, processes
 * started together in one directory share one nats-server (the first starts it, under a lock;
 * the others find it), each logs which NATS it uses, the server outlives them, read-only
 * commands use it and never start one, and `tandem nats --stop` ends it. `tandem nats` serves
 * nats-server's monitoring port.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { freePort, portOr } from "../../src/runtime/dev/nats-server.js";
import { CLI } from "../helpers/procs.js";
import { eventually } from "../helpers/nats.js";

const dir = mkdtempSync(join(tmpdir(), "tandem-embedded-"));
const env = (): NodeJS.ProcessEnv => {
  const e: NodeJS.ProcessEnv = { ...process.env, TANDEM_LOG_JSON: "1", TANDEM_LOG_LEVEL: "info" };
  delete e.NATS_URL;
  delete e.TANDEM_DATA_DIR;
  return e;
};
const run = (args: string[]) =>
  promisify(execFile)(process.execPath, [CLI, ...args], { cwd: dir, env: env(), encoding: "utf8", timeout: 30_000 }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" }),
  );

interface Proc {
  child: ChildProcess;
  err: () => string;
}
const procs: Proc[] = [];
function start(args: string[]): Proc {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: dir, env: env(), stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const p = { child, err: () => err };
  procs.push(p);
  return p;
}
const discovery = () => JSON.parse(readFileSync(join(dir, ".tandem", "nats.json"), "utf8")) as { url: string; pid: number; embedded?: boolean; monitorPort?: number };
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const natsLine = (p: Proc) =>
  p
    .err()
    .split("\n")
    .filter((l) => l.includes('"msg":"NATS: '))
    .map((l) => (JSON.parse(l) as { msg: string }).msg)[0];

/** A server a failed test left behind, ended by its PID. */
function killLeftover(): void {
  if (!existsSync(join(dir, ".tandem", "nats.json"))) return;
  const pid = discovery().pid;
  if (alive(pid)) process.kill(pid, "SIGKILL");
  rmSync(join(dir, ".tandem", "nats.json"), { force: true });
}

beforeEach(killLeftover);
afterAll(() => {
  for (const p of procs) p.child.kill("SIGKILL");
  killLeftover();
  rmSync(dir, { recursive: true, force: true });
});

describe("the embedded default", () => {
  it("is one nats-server for a directory: started by the first process, found by the others, announced, outliving them", async () => {
    // Three processes at the same moment, none with NATS_URL.
    const started = [start(["manager", "--node", "m1"]), start(["server", "--service", "echo", "--work", "echo", "--id", "s1"]), start(["manager", "--node", "m2"])];
    await eventually(() => started.every((p) => natsLine(p) !== undefined) || undefined, "every process says which NATS it uses", 30_000);
    const lines = started.map((p) => natsLine(p)!);
    const d = discovery();
    expect(d.embedded).toBe(true);
    for (const l of lines) expect(l).toContain(`NATS: ${d.url}, this directory's shared embedded nats-server`);
    expect(lines.filter((l) => l.includes("started now"))).toHaveLength(1);
    expect(lines.filter((l) => l.includes("already running"))).toHaveLength(2);

    // A client in the same directory reaches the same world: the manager and server above.
    await eventually(() => started.some((p) => p.err().includes('"msg":"lease acquired"')) || undefined, "a manager is primary", 30_000);
    const c = await run(["client", "--service", "echo", "--requests", "5"]);
    expect(c.code, c.stderr).toBe(0);
    expect(c.stdout).toMatch(/"answered":\s*5/);

    // The shared server outlives the processes that use it.
    for (const p of started) p.child.kill("SIGKILL");
    await Promise.all(started.map((p) => (p.child.exitCode === null && p.child.signalCode === null ? new Promise((r) => p.child.once("exit", r)) : null)));
    expect(alive(d.pid)).toBe(true);
    // A read-only command finds it too (the dead-letter stream needs no manager).
    const dlq = await run(["dlq", "list"]);
    expect(dlq.code, dlq.stderr).toBe(0);

    // `tandem nats --stop` ends it; then a read-only command says none runs and starts none.
    const stop = await run(["nats", "--stop"]);
    expect(stop.stdout).toContain(`stopped the nats-server at ${d.url} (pid ${d.pid})`);
    expect(alive(d.pid)).toBe(false);
    const after = await run(["status"]);
    expect(after.code).not.toBe(0);
    expect(after.stderr).toMatch(/no nats-server running for .*tandem nats/);
    expect(existsSync(join(dir, ".tandem", "nats.json"))).toBe(false);
  }, 90_000);

  it("`tandem nats` serves a monitoring port and refuses to start a second server for a directory", async () => {
    const [port, monitorPort] = [await freePort(), await freePort()];
    const nats = start(["nats", "--port", String(port), "--monitor-port", String(monitorPort)]);
    await eventually(() => existsSync(join(dir, ".tandem", "nats.json")) || undefined, "tandem nats is up", 20_000);
    expect(discovery()).toMatchObject({ url: `nats://127.0.0.1:${port}`, monitorPort });
    const varz = (await (await fetch(`http://127.0.0.1:${monitorPort}/varz`)).json()) as { port: number; jetstream?: unknown };
    expect(varz.port).toBe(port);
    expect(varz.jetstream).toBeDefined();
    const second = await run(["nats"]);
    expect(second.code).not.toBe(0);
    expect(second.stderr).toContain(`already running for`);
    nats.child.kill("SIGTERM");
    await new Promise((r) => nats.child.once("exit", r));
  }, 60_000);

  it("takes the preferred port when it is free and another when it is taken", async () => {
    const p = await freePort();
    expect(await portOr(p)).toBe(p);
    const holder = createServer();
    await new Promise<void>((r) => holder.listen(p, "127.0.0.1", () => r()));
    try {
      const other = await portOr(p);
      expect(other).not.toBe(p);
      expect(other).toBeGreaterThan(0);
    } finally {
      holder.close();
    }
  });
});
