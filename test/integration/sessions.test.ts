import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ManagerNode } from "../../src/actors/manager.js";
import { TandemServer, type Handler } from "../../src/actors/server.js";
import { TandemClient } from "../../src/actors/client.js";
import { JetStreamStore } from "../../src/actors/manager/store.js";
import { TandemError } from "../../src/runtime/errors.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { setTraceDir } from "../../src/runtime/trace.js";
import { encode } from "../../src/runtime/wire.js";
import { eventually, primaryManager, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

let ns: NatsServer;
let rt: Runtime & { logs: () => Array<Record<string, unknown>> };
let mgr: ManagerNode;
const servers: TandemServer[] = [];
const started: Array<{ abort: AbortSignal; n: number; session: string }> = [];

const handler: Handler = async (req, ctx) => {
  const p = req.payload as { op?: string; ms?: number; v?: unknown };
  if (p?.op === "fail") throw new Error("handler says no");
  if (p?.op === "slow") {
    started.push({ abort: ctx.signal, n: req.n, session: req.session });
    await new Promise((resolve, reject) => {
      const t = setTimeout(resolve, p.ms ?? 5000);
      ctx.signal.addEventListener("abort", () => {
        clearTimeout(t);
        reject(ctx.signal.reason);
      });
    });
  }
  if (p?.op === "progress") await ctx.checkpoint({ progress: req.n });
  if (p?.op === "destructure") {
    // The context's parts work taken apart, as a handler may write them.
    const { checkpoint, progress, log, signal, traceparent, store } = ctx;
    await progress();
    await progress({ half: req.n });
    await checkpoint({ whole: req.n, before: req.restart ?? null });
    log.debug("destructured");
    return { aborted: signal.aborted, traceparent: typeof traceparent, store: store === undefined, restart: req.restart ?? null };
  }
  return { echo: p?.v ?? p, n: req.n };
};

beforeAll(async () => {
  ns = await startNats();
  rt = await runtimeFor(ns, { maxPending: 20, maxPayload: 1024 });
  mgr = await primaryManager(rt);
  servers.push(await TandemServer.start(rt, { service: "svc", handler }));
});

afterAll(async () => {
  for (const s of servers) await s.stop();
  await mgr.stop();
  await rt.close();
  await ns.cleanup();
});

describe("brokered sessions", () => {
  it("round trip - a request reaches a server and its response reaches the application", async () => {
    const client = await TandemClient.connect(rt);
    const s = await client.open("svc");
    await expect(s.request({ v: "hello" })).resolves.toEqual({ echo: "hello", n: 1 });
    await client.close();
  });

  it("server machine - working while handlers run, ready again when they are done", async () => {
    const server = servers[0]!;
    const client = await TandemClient.connect(rt);
    const s = await client.open("svc");
    await eventually(() => server.state.includes("ready"), "the server is ready");
    const answers = [1, 2, 3].map(() => s.request({ op: "slow", ms: 400 }));
    await eventually(() => server.state.includes("working"), "the server is working");
    await Promise.all(answers);
    await eventually(() => server.state.includes("ready"), "the server is ready again", 5000);
    await client.close();
  });

  it("trace - with tracing on, a round trip records each stage of its path, in path order (bench --part path)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tandem-trace-test-"));
    const client = await TandemClient.connect(rt);
    const s = await client.open("svc");
    setTraceDir(dir);
    await s.request({ v: "traced" });
    setTraceDir(null);
    await s.request({ v: "not traced" });
    const lines = readFileSync(join(dir, `${process.pid}.txt`), "utf8").trim().split("\n").map((l) => l.split(" "));
    rmSync(dir, { recursive: true, force: true });
    const path = ["client.send", "manager.request", "manager.dispatch", "server.work", "server.done", "manager.response", "manager.deliver", "client.delivered", "client.handed"];
    const mine = lines.filter(([, key]) => key === `${s.id}.1`);
    const at = new Map(mine.map(([stage, , t]) => [stage!, Number(t)]));
    for (const stage of path) expect(at.has(stage), stage).toBe(true);
    for (let i = 1; i < path.length; i++) expect(at.get(path[i]!)!).toBeGreaterThanOrEqual(at.get(path[i - 1]!)!);
    expect(lines.some(([, key]) => key === `${s.id}.2`)).toBe(false);
    await client.close();
  });

  it("stall watchdog - a request sent after a long idle spell is not taken for a stall (regression: 10,000 sessions)", async () => {
    const client = await TandemClient.connect(rt);
    const s = await client.open("svc");
    await new Promise((r) => setTimeout(r, 5500)); // idle for longer than the watchdog's 5 s
    const resyncs = () => rt.logs().filter((l) => String(l.msg).includes("re-syncing with the manager") && l.session === s.id).length;
    await expect(s.request({ op: "slow", ms: 1500 })).resolves.toMatchObject({ n: 1 }); // spans a watchdog tick
    expect(resyncs()).toBe(0);
    await client.close();
  }, 20_000);

  it("order - pipelined requests on one session are answered in request order (I3)", async () => {
    const client = await TandemClient.connect(rt);
    const s = await client.open("svc");
    const sent = [];
    for (let i = 1; i <= 15; i++) sent.push(await s.send({ v: i }));
    const order: number[] = [];
    await Promise.all(sent.map(async (x) => order.push(((await x.response).value as { n: number }).n)));
    expect(order).toEqual(Array.from({ length: 15 }, (_, i) => i + 1));
    await client.close();
  });

  it("handler errors come back as TANDEM_HANDLER_FAILED with the handler's message", async () => {
    const client = await TandemClient.connect(rt);
    const s = await client.open("svc");
    const err = await s.request({ op: "fail" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TandemError);
    expect((err as TandemError).code).toBe("TANDEM_HANDLER_FAILED");
    expect((err as TandemError).message).toMatch(/handler says no/);
    await expect(s.request({ v: 2 })).resolves.toEqual({ echo: 2, n: 2 }); // the session goes on
    await client.close();
  });

  it("restart data - client restart data comes back on resume, server restart data is stored with the response", async () => {
    const client = await TandemClient.connect(rt, { id: "restart-client" });
    const s = await client.open("svc", { restart: { step: 0 } });
    await s.request({ v: 1 }, { restart: { step: 1 } });
    await s.request({ op: "progress" }, { restart: { step: 2 } });
    const id = s.id;
    await client.close(); // the process "dies" without closing the session
    const again = await TandemClient.connect(rt, { id: "restart-client" });
    const r = await again.resume(id);
    expect(r.restart).toEqual({ step: 2 });
    await eventually(async () => (await rt.kv.restart.get(`${id}.server`))?.json<{ data: unknown }>().data, "server restart data");
    expect((await rt.kv.restart.get(`${id}.server`))!.json<{ data: unknown; n: number }>()).toMatchObject({ data: { progress: 2 }, n: 2 });
    await again.close();
  });

  it("handler context - its parts work when taken apart; checkpoint and progress store restart data that the next request sees", async () => {
    const client = await TandemClient.connect(rt);
    const s = await client.open("svc");
    await expect(s.request({ op: "destructure" })).resolves.toEqual({ aborted: false, traceparent: "string", store: true, restart: null });
    // The last checkpoint is the session's server restart data, and it travels with the next work.
    await expect(s.request({ op: "destructure" })).resolves.toEqual({ aborted: false, traceparent: "string", store: true, restart: { whole: 1, before: null } });
    // Request 2 stored two checkpoints ({half: 2}, then this): the later one is what stays.
    const latest = async () => (await rt.kv.restart.get(`${s.id}.server`))?.json<{ data: { whole?: number } }>().data;
    await eventually(async () => (await latest())?.whole === 2 || null, "the last checkpoint of request 2 in the bucket");
    expect(await latest()).toEqual({ whole: 2, before: { whole: 1, before: null } });
    await client.close();
  });

  it("a notice - a request of a session the manager no longer has is refused TANDEM_UNKNOWN_SESSION at the caller (the manager's notice, which wants no reply)", async () => {
    const client = await TandemClient.connect(rt);
    const s = await client.open("svc");
    await expect(s.request({ v: 1 })).resolves.toEqual({ echo: 1, n: 1 });
    // Closed behind the client's back (its close call, sent by hand): the client still has it.
    const closed = await rt.nc.request(rt.names.clientCall("close", client.id), encode({ client: client.id, session: s.id }), { timeout: 2000 });
    expect(closed.json<{ ok: boolean }>().ok).toBe(true);
    await expect(s.request({ v: 2 })).rejects.toMatchObject({ code: "TANDEM_UNKNOWN_SESSION" });
    await client.close();
  });

  it("restart data - unchanged since the last request, it is not sent again; the manager still holds the latest", async () => {
    const client = await TandemClient.connect(rt, { id: "same-restart" });
    const s = await client.open("svc", { restart: { step: 0 } });
    /** Whether request n's queue message carries restart data (read from the session's queue). */
    const carries = async (n: number, session = s.id) => {
      const bodies: Array<{ n?: number; restart?: unknown }> = [];
      await new JetStreamStore(rt).queues.readSession("req", "same-restart", session, (m) => bodies.push(m.json()));
      const body = bodies.find((b) => b.n === n);
      expect(body).toBeDefined();
      return "restart" in body!;
    };
    await s.request({ v: 1 }, { restart: { step: 0 } }); // what the open stored
    expect(await carries(1)).toBe(false);
    await s.request({ v: 2 }, { restart: { step: 1 } });
    expect(await carries(2)).toBe(true);
    await s.request({ v: 3 }, { restart: { step: 1 } });
    expect(await carries(3)).toBe(false);
    await s.request({ v: 4 }, { restart: { step: 0 } }); // back to an earlier value: a change
    expect(await carries(4)).toBe(true);
    const id = s.id;
    await client.close();
    const again = await TandemClient.connect(rt, { id: "same-restart" });
    const r = await again.resume(id);
    expect(r.restart).toEqual({ step: 0 });
    // The resumed session knows what the manager holds: the same data is not sent again.
    await r.request({ v: 5 }, { restart: { step: 0 } });
    expect(await carries(5, id)).toBe(false);
    await r.close();
    await again.close();
  });

  it("resume - a client that comes back gets every response its application had not taken (I1, I2)", async () => {
    const c1 = await TandemClient.connect(rt, { id: "resumer" });
    const s1 = await c1.open("svc");
    await s1.request({ v: "taken" });
    // Queue three requests, then "die" before any response is taken.
    await s1.send({ op: "slow", ms: 300, v: "a" });
    await s1.send({ v: "b" });
    await s1.send({ v: "c" });
    const id = s1.id;
    await c1.close();
    const c2 = await TandemClient.connect(rt, { id: "resumer" });
    const s2 = await c2.resume(id);
    expect(s2.lastRequest).toBe(4);
    expect(s2.takenUpTo).toBe(1);
    const got: unknown[] = [];
    const it = s2.responses();
    for (let i = 0; i < 3; i++) got.push(((await it.next()).value as { value: { echo: unknown } }).value.echo);
    expect(got).toEqual(["a", "b", "c"]);
    // Nothing more arrives: each response reached the application once.
    const more = await Promise.race([it.next().then(() => "more"), new Promise((r) => setTimeout(() => r("none"), 500))]);
    expect(more).toBe("none");
    await s2.close();
    await c2.close();
  });

  it("back-pressure - a session over its pending limit gets TANDEM_BACKPRESSURE, not unbounded memory", async () => {
    const client = await TandemClient.connect(rt);
    const s = await client.open("svc", { maxPending: 3 });
    for (let i = 0; i < 3; i++) await s.send({ op: "slow", ms: 200 });
    const err = await s.send({ v: "one too many" }).catch((e: unknown) => e);
    expect((err as TandemError).code).toBe("TANDEM_BACKPRESSURE");
    expect((err as TandemError).retryable).toBe(true);
    await eventually(() => s.pending === 0, "responses taken", 10_000).catch(() => {});
    await client.close();
  });

  it("payload limit - an oversized payload is refused before it is queued", async () => {
    const client = await TandemClient.connect(rt);
    const s = await client.open("svc");
    const err = await s.request({ v: "x".repeat(2000) }).catch((e: unknown) => e);
    expect((err as TandemError).code).toBe("TANDEM_PAYLOAD_TOO_LARGE");
    await expect(s.request({ v: "small" })).resolves.toMatchObject({ echo: "small" });
    await client.close();
  });

  it("close - cancels the work in hand (its AbortSignal fires) and purges the session's queues and records", async () => {
    const client = await TandemClient.connect(rt);
    const s = await client.open("svc");
    const { response } = await s.send({ op: "slow", ms: 10_000 });
    const entry = await eventually(() => started.find((x) => x.session === s.id), "slow work started");
    const id = s.id;
    await s.close();
    await eventually(() => entry.abort.aborted, "abort signal");
    expect((await response).error?.code).toBe("TANDEM_CLOSED");
    const rec = await rt.kv.sessions.get(id);
    expect(rec === null || rec.operation !== "PUT").toBe(true);
    const info = await rt.jsm.streams.info(rt.names.streamReq, { subjects_filter: rt.names.req(client.id, id) });
    expect(info.state.subjects?.[rt.names.req(client.id, id)] ?? 0).toBe(0);
    await client.close();
  });

  it("server loss - sessions of a server without heartbeats move to another server and finish", async () => {
    const extra = await TandemServer.start(rt, { service: "moving", handler, id: "moving-1" });
    const client = await TandemClient.connect(rt);
    const s = await client.open("moving");
    await s.request({ v: 0 });
    const second = await TandemServer.start(rt, { service: "moving", handler, id: "moving-2" });
    servers.push(second);
    // moving-1 stops heartbeating and answering (as if frozen): its session must move.
    await extra.stop();
    const r = await s.send({ v: "after" });
    expect((await r.response).server).toBe("moving-2");
    await client.close();
  });

  it("unknown service - open says which command starts a server", async () => {
    const client = await TandemClient.connect(rt);
    const err = await client.open("no-such-service").catch((e: unknown) => e);
    expect(String((err as Error).message)).toMatch(/tandem server --service no-such-service/);
    await client.close();
  });
});
