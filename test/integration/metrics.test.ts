/**
 * Metrics and health (issue 16, item 2), scraped from a running deployment: two manager
 * processes and a server process with --metrics-port, and a client and a failing handler in
 * this process with the library's serveMetrics(). The figures must move with load, with errors
 * (by code), with a dead letter and with a failover; readiness must say primary, current
 * standby, registered server and open client, and a standby that has taken over must say so.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TandemClient } from "../../src/actors/client.js";
import { TandemServer } from "../../src/actors/server.js";
import { TerminalError } from "../../src/runtime/errors.js";
import { freePorts } from "../../src/runtime/dev/nats-server.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { encode } from "../../src/runtime/wire.js";
import { eventually, fastEnv, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";
import { killAll, tandem, type TandemProc } from "../helpers/procs.js";

type Samples = Map<string, number>;

/** The Prometheus text format, as `name{a="x",b="y"}` (labels sorted) -> value. */
function parseMetrics(text: string): Samples {
  const out: Samples = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels = m[3] ? [...m[3].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => `${x[1]}="${x[2]}"`).sort() : [];
    out.set(`${m[1]}${labels.length ? `{${labels.join(",")}}` : ""}`, Number(m[4]));
  }
  return out;
}

async function scrape(port: number): Promise<Samples> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(r.headers.get("content-type")).toContain("text/plain");
  return parseMetrics(await r.text());
}

async function ready(port: number): Promise<{ status: number; body: { ready: boolean; checks: Record<string, { ready: boolean; why: string }> } }> {
  const r = await fetch(`http://127.0.0.1:${port}/readyz`);
  return { status: r.status, body: (await r.json()) as never };
}

const v = (s: Samples, key: string) => s.get(key) ?? 0;

let ns: NatsServer;
let rt: Runtime;
let ports: number[];
let mA: TandemProc;
let mB: TandemProc;
let srv: TandemProc;
let flaky: TandemServer;
let client: TandemClient;
let clientPort: number;

beforeAll(async () => {
  ns = await startNats();
  ports = await freePorts(3);
  const env = fastEnv(ns.url);
  mA = tandem("manager-a", ["manager", "--node", "ma", "--metrics-port", String(ports[0])], env);
  await eventually(async () => (await ready(ports[0]!).catch(() => null))?.status === 200 || undefined, "manager a is primary", 30_000, 100);
  mB = tandem("manager-b", ["manager", "--node", "mb", "--metrics-port", String(ports[1])], env);
  srv = tandem("server", ["server", "--service", "echo", "--work", "echo", "--id", "echo-1", "--metrics-port", String(ports[2])], env);
  rt = await runtimeFor(ns);
  clientPort = (await rt.serveMetrics(0)).port;
  flaky = await TandemServer.start(rt, {
    service: "flaky",
    handler: async (req) => {
      if ((req.payload as { fail?: boolean }).fail) throw new TerminalError("no such account", { code: "BAD_ACCOUNT" });
      return "fine";
    },
  });
  client = await TandemClient.connect(rt, { id: "metrics" });
}, 90_000);

afterAll(async () => {
  await client?.close();
  await flaky?.stop();
  await rt?.close();
  await killAll();
  await ns?.cleanup();
});

describe("metrics and health", () => {
  it("serve /healthz and /readyz that say what each role is and waits for", async () => {
    for (const p of ports) await eventually(async () => (await fetch(`http://127.0.0.1:${p}/healthz`).catch(() => null))?.status === 200 || undefined, `healthz on ${p}`, 20_000, 100);
    const a = await ready(ports[0]!);
    expect(a.body.checks["manager ma"]).toMatchObject({ ready: true, why: expect.stringContaining("primary at epoch 1") });
    await eventually(async () => (await ready(ports[1]!)).status === 200 || undefined, "the standby is current", 20_000, 100);
    expect((await ready(ports[1]!)).body.checks["manager mb"]!.why).toMatch(/^standby for ma, last backup \d+ ms ago/);
    await eventually(async () => (await ready(ports[2]!)).status === 200 || undefined, "the server is registered", 20_000, 100);
    expect((await ready(ports[2]!)).body.checks["server echo-1"]!.why).toMatch(/^registered at epoch 1/);
    expect((await fetch(`http://127.0.0.1:${ports[0]}/nothing`)).status).toBe(404);
  });

  it("count requests, responses, handler time and work with load, and errors by code", async () => {
    const echo = await client.open("echo");
    const bad = await client.open("flaky");
    expect((await ready(clientPort)).body.checks["client metrics"]).toMatchObject({ ready: true });
    const before = await scrape(ports[0]!);
    for (let i = 0; i < 40; i++) expect(await echo.request({ i })).toEqual({ i });
    await expect(bad.request({ fail: true })).rejects.toMatchObject({ code: "BAD_ACCOUNT" });
    expect(await bad.request({ fail: false })).toBe("fine");

    const c = await scrape(clientPort);
    expect(v(c, 'tandem_client_requests_total{service="echo"}')).toBe(40);
    expect(v(c, 'tandem_client_responses_total{code="",outcome="ok",service="echo"}')).toBe(40);
    expect(v(c, 'tandem_client_responses_total{code="BAD_ACCOUNT",outcome="error",service="flaky"}')).toBe(1);
    expect(v(c, 'tandem_client_round_trip_seconds_count{service="echo"}')).toBe(40);
    expect(v(c, 'tandem_client_round_trip_seconds_sum{service="echo"}')).toBeGreaterThan(0);
    expect(v(c, 'tandem_client_in_flight{service="echo"}')).toBe(0);
    expect(v(c, 'tandem_client_sessions{client="metrics"}')).toBe(2);
    // The failing handler runs in this process: its figures are here too.
    expect(v(c, 'tandem_server_handled_total{code="BAD_ACCOUNT",outcome="error",service="flaky"}')).toBe(1);
    expect(v(c, 'tandem_server_handled_total{code="",outcome="ok",service="flaky"}')).toBe(1);
    expect(c.has("tandem_process_cpu_user_seconds_total")).toBe(true);

    const s = await scrape(ports[2]!);
    expect(v(s, 'tandem_server_handled_total{code="",outcome="ok",service="echo"}')).toBe(40);
    expect(v(s, 'tandem_server_handler_seconds_count{service="echo"}')).toBe(40);
    expect(v(s, 'tandem_server_registered{server="echo-1",service="echo"}')).toBe(1);

    const m = await scrape(ports[0]!);
    expect(v(m, 'tandem_manager_dispatched_total{service="echo"}') - v(before, 'tandem_manager_dispatched_total{service="echo"}')).toBeGreaterThanOrEqual(40);
    expect(v(m, 'tandem_manager_delivered_total{service="echo"}') - v(before, 'tandem_manager_delivered_total{service="echo"}')).toBeGreaterThanOrEqual(40);
    expect(v(m, "tandem_manager_primary")).toBe(1);
    expect(v(m, "tandem_manager_epoch")).toBe(1);
    expect(v(m, "tandem_manager_takeovers_total")).toBe(1);
    expect(v(m, 'tandem_manager_sessions{service="echo"}')).toBe(1);
    expect(v(m, 'tandem_manager_servers_alive{service="echo"}')).toBe(1);
    expect(v(m, 'tandem_manager_standby_backup_age_seconds{standby="mb"}')).toBeLessThan(1);
    expect(m.get(`tandem_manager_consumer_lag{stream="${rt.names.streamReq}"}`), [...m.keys()].filter((k) => k.includes("lag")).join()).toBeGreaterThanOrEqual(0);
    expect(v(await scrape(ports[1]!), "tandem_manager_primary")).toBe(0);

    // Pending: requests sent while the server cannot answer them show up, and go when answered.
    await eventually(async () => v(await scrape(ports[0]!), 'tandem_manager_pending{service="echo"}') === 0 || undefined, "nothing pending");
  });

  it("count a dead letter and show the stream's size", async () => {
    const before = v(await scrape(ports[0]!), "tandem_dlq_messages");
    // A body that is not a request, straight into a session's request queue.
    await rt.js.publish(rt.names.req("metrics", "nosuchsession"), encode({ nonsense: true }));
    await eventually(async () => v(await scrape(ports[0]!), "tandem_dlq_messages") > before || undefined, "the dead letter is counted", 15_000, 100);
    const m = await scrape(ports[0]!);
    expect([...m.entries()].some(([k, x]) => k.startsWith("tandem_dead_lettered_total{") && x >= 1)).toBe(true);
  });

  it("follow a failover: the standby becomes primary at the next epoch, readiness follows, load goes on", async () => {
    const echo = await client.open("echo");
    expect(await echo.request("before")).toBe("before");
    expect(mB.running() && srv.running()).toBe(true);
    await mA.kill("SIGKILL");
    await eventually(async () => v(await scrape(ports[1]!), "tandem_manager_primary") === 1 || undefined, "manager b is primary", 20_000, 100);
    const b = await scrape(ports[1]!);
    expect(v(b, "tandem_manager_epoch")).toBe(2);
    expect(v(b, "tandem_manager_takeovers_total")).toBe(1);
    expect((await ready(ports[1]!)).body.checks["manager mb"]!.why).toBe("primary at epoch 2");
    for (let i = 0; i < 10; i++) expect(await echo.request(i)).toBe(i);
    await eventually(async () => v(await scrape(ports[1]!), 'tandem_manager_delivered_total{service="echo"}') >= 10 || undefined, "manager b delivers");
    // The server follows the new primary: registered at epoch 2.
    await eventually(async () => /epoch 2/.test((await ready(ports[2]!)).body.checks["server echo-1"]?.why ?? "") || undefined, "the server is registered at epoch 2", 20_000, 100);
  });
});
