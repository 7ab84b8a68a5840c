/**
 * When work fails (issue 15), against a real nats-server, manager, servers and clients: error
 * classes across the wire, retries with back-off, deadlines, cancellation, and long handlers
 * that are neither sent again nor warned about.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ManagerNode } from "../../src/actors/manager.js";
import { TandemServer, type Handler } from "../../src/actors/server.js";
import { TandemClient } from "../../src/actors/client.js";
import { RetryableError, TandemError, TerminalError } from "../../src/runtime/errors.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { decode } from "../../src/runtime/wire.js";
import { primaryManager, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";

const DEEP = process.env.TANDEM_DEEP === "1";
let ns: NatsServer;
let rt: Runtime & { logs: () => Array<Record<string, unknown>> };
let srvRt: Runtime & { logs: () => Array<Record<string, unknown>> };
let mgr: ManagerNode;
let server: TandemServer;

/** What each request id saw: executions, attempts, and whether its signal fired (and why). */
const seen = new Map<string, { runs: number; attempts: number[]; aborted: string | null }>();
const note = (id: string) => {
  let e = seen.get(id);
  if (!e) seen.set(id, (e = { runs: 0, attempts: [], aborted: null }));
  return e;
};

class ValidationError extends Error {
  override name = "ValidationError";
}

const handler: Handler = async (req, ctx) => {
  const p = req.payload as { id: string; do?: string; ms?: number; failTimes?: number };
  const e = note(p.id);
  e.runs++;
  e.attempts.push(req.attempt);
  const wait = (ms: number, ignoreSignal = false) =>
    new Promise<void>((resolve, reject) => {
      const t = setTimeout(resolve, ms);
      if (ignoreSignal) return;
      ctx.signal.addEventListener("abort", () => {
        clearTimeout(t);
        e.aborted = (ctx.signal.reason as TandemError)?.code ?? "aborted";
        reject(ctx.signal.reason);
      });
    });
  switch (p.do) {
    case "terminal":
      throw new TerminalError("no such account", { code: "NO_ACCOUNT", details: { account: "Z" } });
    case "validation":
      throw new ValidationError("amount must be positive");
    case "retry":
      if (req.attempt <= (p.failTimes ?? Infinity)) throw new RetryableError("busy, try later", { code: "BUSY", delayMs: 50 });
      return { attempt: req.attempt };
    case "hang":
      await wait(2 ** 31 - 1);
      return "never";
    case "late":
      await wait(p.ms ?? 500, true); // ignores its signal: answers after the deadline
      return "late";
    case "long":
      await wait(p.ms ?? 1000);
      return { done: p.ms };
    default:
      return { ok: p.id };
  }
};

beforeAll(async () => {
  ns = await startNats();
  rt = await runtimeFor(ns, { stallMs: 100 });
  mgr = await primaryManager(rt);
  srvRt = await runtimeFor(ns, {}, "server");
  server = await TandemServer.start(srvRt, { service: "svc", handler });
}, 60_000);

afterAll(async () => {
  await server?.stop();
  await srvRt?.close();
  await mgr?.stop();
  await rt?.close();
  await ns?.cleanup();
});

const fails = (p: Promise<unknown>) => p.then(() => null, (e: unknown) => e as TandemError);

describe("errors across the wire", () => {
  it("a TerminalError keeps its code, name and details; a plain throw is TANDEM_HANDLER_FAILED with its class name; neither is retried", async () => {
    const c = await TandemClient.connect(rt);
    const s = await c.open("svc");
    const t = await fails(s.request({ id: "t1", do: "terminal" }));
    expect(t).toBeInstanceOf(TandemError);
    expect([t!.code, t!.handlerName, t!.details, t!.message]).toEqual(["NO_ACCOUNT", "TerminalError", { account: "Z" }, "no such account"]);
    const v = await fails(s.request({ id: "v1", do: "validation" }));
    expect([v!.code, v!.handlerName, v!.message]).toEqual(["TANDEM_HANDLER_FAILED", "ValidationError", "amount must be positive"]);
    expect([seen.get("t1")!.runs, seen.get("v1")!.runs]).toEqual([1, 1]);
    await s.close();
    await c.close();
  });
});

describe("retries", () => {
  it("a RetryableError is tried again after its back-off until it succeeds; exhausted, it is TANDEM_POISON with the handler's error as its last", async () => {
    const c = await TandemClient.connect(rt);
    const s = await c.open("svc", { retry: { maxAttempts: 4, initialMs: 100, factor: 2, jitter: 0 } });
    const t0 = performance.now();
    expect(await s.request({ id: "r1", do: "retry", failTimes: 2 })).toEqual({ attempt: 3 });
    const ms = performance.now() - t0;
    expect(seen.get("r1")!.attempts).toEqual([1, 2, 3]);
    expect(ms).toBeGreaterThanOrEqual(100 + 200 - 20); // the back-off was waited out (100, then 200 ms)
    const p = await fails(s.request({ id: "r2", do: "retry" }, { retry: { maxAttempts: 2, initialMs: 10 } }));
    expect(p!.code).toBe("TANDEM_POISON");
    expect(p!.context.attempts).toBe(2);
    expect((p!.context.lastError as { code: string; name: string }).code).toBe("BUSY");
    expect(seen.get("r2")!.runs).toBe(2);
    await s.close();
    await c.close();
  });
});

describe("deadlines and cancellation", () => {
  it("a request past its timeout rejects TANDEM_DEADLINE and its handler's signal fires", async () => {
    const c = await TandemClient.connect(rt);
    const s = await c.open("svc");
    const t0 = performance.now();
    const e = await fails(s.request({ id: "d1", do: "hang" }, { timeoutMs: 300 }));
    const ms = performance.now() - t0;
    expect(e!.code).toBe("TANDEM_DEADLINE");
    expect(ms).toBeGreaterThanOrEqual(290);
    expect(ms).toBeLessThan(300 + 1000); // the manager records it well before the client's own grace
    await expect.poll(() => seen.get("d1")?.aborted, { timeout: 5000 }).toBe("TANDEM_DEADLINE");
    // The session goes on.
    expect(await s.request({ id: "d1-next" })).toEqual({ ok: "d1-next" });
    await s.close();
    await c.close();
  });

  it("an aborted request rejects TANDEM_CANCELLED and is stopped where it runs; one queued behind is never dispatched", async () => {
    const c = await TandemClient.connect(rt);
    const s = await c.open("svc");
    const ac = new AbortController();
    const running = s.request({ id: "c1", do: "hang" }, { signal: ac.signal });
    const queued = s.request({ id: "c2" }, { timeoutMs: 200 });
    await expect.poll(() => seen.get("c1")?.runs, { timeout: 5000 }).toBe(1);
    const q = await fails(queued);
    expect(q!.code).toBe("TANDEM_DEADLINE");
    ac.abort();
    const r = await fails(running);
    expect(r!.code).toBe("TANDEM_CANCELLED");
    await expect.poll(() => seen.get("c1")?.aborted, { timeout: 5000 }).toBe("TANDEM_CANCELLED");
    expect(await s.request({ id: "c3" })).toEqual({ ok: "c3" });
    expect(seen.get("c2")).toBeUndefined(); // past its deadline before its turn: never run
    await s.close();
    await c.close();
  });

  it("an answer stored after the deadline is not delivered as a success; the recorded outcome is TANDEM_DEADLINE", async () => {
    const c = await TandemClient.connect(rt);
    const s = await c.open("svc");
    const e = await fails(s.request({ id: "l1", do: "late", ms: 600 }, { timeoutMs: 200 }));
    expect(e!.code).toBe("TANDEM_DEADLINE");
    await expect.poll(() => seen.get("l1")?.runs, { timeout: 5000 }).toBe(1);
    await new Promise((r) => setTimeout(r, 700)); // the handler's late answer is in the queue now
    // The session's response queue: the late answer, and the manager's TANDEM_DEADLINE for it.
    const stream = rt.names.streamResp;
    const bodies: Array<{ subject: string; body: Record<string, unknown> }> = [];
    for (let seq = 1; ; ) {
      const sm = await rt.jsm.streams.getMessage(stream, { seq, next_by_subj: rt.names.respOf(s.id) } as never).catch(() => null);
      if (!sm) break;
      bodies.push({ subject: sm.subject, body: decode(sm.data) as Record<string, unknown> });
      seq = sm.seq + 1;
    }
    expect(bodies.some((b) => b.subject === rt.names.resp("manager", s.id) && (b.body.error as { code: string })?.code === "TANDEM_DEADLINE")).toBe(true);
    expect(await s.request({ id: "l2" })).toEqual({ ok: "l2" });
    await s.close();
    await c.close();
  });

  it("with its caller gone, the deadline is kept by the manager: a resumed session sees TANDEM_DEADLINE", async () => {
    const c = await TandemClient.connect(rt);
    const s = await c.open("svc");
    const id = s.id;
    await s.send({ id: "g1", do: "hang" }, { timeoutMs: 300 });
    await s.detach();
    await c.close();
    await new Promise((r) => setTimeout(r, 600));
    const c2 = await TandemClient.connect(rt, { id: c.id });
    const again = await c2.resume(id);
    const it = again.responses();
    const r = (await it.next()).value as { n: number; ok: boolean; error?: TandemError };
    expect([r.n, r.ok, r.error?.code]).toEqual([1, false, "TANDEM_DEADLINE"]);
    expect(seen.get("g1")!.aborted).toBe("TANDEM_DEADLINE");
    await again.close();
    await c2.close();
  });
});

describe("long handlers", () => {
  it(`a handler running ${DEEP ? 60 : 9} s, well past the stall watchdog, STUCK_DISPATCH and server timeout, runs once, with no duplicate dispatch and no warning`, async () => {
    const ms = DEEP ? 60_000 : 9000;
    const warnedBefore = [...rt.logs(), ...srvRt.logs()].filter((l) => (l.level as number) >= 40).length;
    const duplicatesBefore = server.stats.duplicates;
    const c = await TandemClient.connect(rt);
    const s = await c.open("svc");
    expect(await s.request({ id: "long1", do: "long", ms })).toEqual({ done: ms });
    expect(seen.get("long1")!.runs).toBe(1);
    expect(server.stats.duplicates - duplicatesBefore).toBe(0);
    const logs = [...rt.logs(), ...srvRt.logs()];
    // (Handlers of the tests before this one may still end meanwhile: their warnings name their sessions.)
    const warned = logs.filter((l) => (l.level as number) >= 40).slice(warnedBefore).filter((l) => l.session === undefined || l.session === s.id);
    expect(warned.map((l) => l.msg)).toEqual([]);
    // The client did look (its watchdog re-synced), and was told the request was running.
    expect(logs.filter((l) => l.msg === "waiting on a long request still running at its server").length).toBeGreaterThan(0);
    await s.close();
    await c.close();
  }, 120_000);
});
