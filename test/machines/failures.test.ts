/**
 * When work fails (docs/design.md §9), on the pure parts and a simulated clock: the back-off
 * schedule, attempt accounting and quarantine, deadlines and cancellation, and that a new primary
 * replaying the same queue records decides as the live one did.
 */
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { ManagerCore, type Effect } from "../../src/machines/managerCore.js";
import { countFailure, DEFAULT_RETRY, isRetryable, newAttempts, resolvePolicy, retryDelay } from "../../src/machines/retryPolicy.js";

const LIMITS = { maxPending: 50, maxPayload: 1000, serverTimeoutMs: 1000, ackTimeoutMs: 200 };
const of = <T extends Effect["type"]>(fx: Effect[], type: T) => fx.filter((e): e is Extract<Effect, { type: T }> => e.type === type);

let seq = 0;
const req = (n: number, extra: Record<string, unknown> = {}) => ({ seq: ++seq, client: "c", session: "A", n, kind: "request" as const, payload: { n }, size: 10, ...extra });
const lost = (n: number, server: string, at: number) => ({ seq: ++seq, client: "c", session: "A", n, server, at, error: { code: "TANDEM_SERVER_LOST", message: "lost" } });

function setup(retry?: Record<string, number>) {
  const core = new ManagerCore(LIMITS, 1);
  core.registerServer("s1", "svc", 4, 0);
  core.registerServer("s2", "svc", 4, 0);
  core.open({ session: "A", client: "c", service: "svc", maxPending: 50, ...(retry ? { retry } : {}) }, 0);
  return core;
}

describe("retry policy: the back-off schedule", () => {
  it("grows by the factor up to the cap, jitter only ever shortening it, the same for every replica", () => {
    const p = resolvePolicy({ initialMs: 100, factor: 2, maxMs: 1000, jitter: 0 });
    expect([1, 2, 3, 4, 5, 6].map((k) => retryDelay(p, k, "A.1"))).toEqual([100, 200, 400, 800, 1000, 1000]);
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 30 }), fc.double({ min: 0, max: 1, noNaN: true }), fc.string(), (k, jitter, seed) => {
        const q = resolvePolicy({ initialMs: 100, factor: 3, maxMs: 5000, jitter });
        const base = Math.min(5000, 100 * 3 ** (k - 1));
        const d = retryDelay(q, k, seed);
        expect(d).toBeLessThanOrEqual(Math.round(base));
        expect(d).toBeGreaterThanOrEqual(Math.floor(base * (1 - jitter)));
        expect(retryDelay(q, k, seed)).toBe(d);
      }),
      { numRuns: 200 },
    );
  });

  it("a retryable error's own delay is a floor; defaults are three attempts", () => {
    const p = resolvePolicy({ initialMs: 10, jitter: 0 });
    expect(retryDelay(p, 1, "x", 5000)).toBe(5000);
    expect(DEFAULT_RETRY.maxAttempts).toBe(3);
    expect(resolvePolicy({ maxAttempts: 5 }, { maxAttempts: 1 }).maxAttempts).toBe(1);
    expect(resolvePolicy(null, undefined)).toEqual(DEFAULT_RETRY);
  });

  it("infrastructure failures and marked errors are retried; a plain handler error is the answer", () => {
    expect(isRetryable({ code: "TANDEM_SERVER_LOST", message: "" })).toBe(true);
    expect(isRetryable({ code: "TANDEM_HANDLER_FAILED", message: "", retryable: true })).toBe(true);
    expect(isRetryable({ code: "TANDEM_HANDLER_FAILED", message: "" })).toBe(false);
    expect(isRetryable({ code: "MY_CODE", message: "", name: "TerminalError" })).toBe(false);
  });

  it("each attempt record counts once, however often it is read", () => {
    const a = newAttempts();
    const p = resolvePolicy({ maxAttempts: 3, jitter: 0, initialMs: 100 });
    const f = { seq: 7, at: 0, server: "s1", error: { code: "X", message: "" }, seed: "A.1" };
    expect(countFailure(a, p, f)).toEqual({ action: "retry", at: 100 });
    expect(countFailure(a, p, f)).toBeNull();
    expect(countFailure(a, p, { ...f, seq: 8, at: 50 })).toEqual({ action: "retry", at: 250 });
    expect(countFailure(a, p, { ...f, seq: 9 })).toEqual({ action: "quarantine" });
    expect(a.failures).toBe(3);
  });
});

describe("manager core: attempts and quarantine", () => {
  it("a server death while holding a request records an attempt and holds the request until it is read back", () => {
    const core = setup({ jitter: 0, initialMs: 100 });
    const d1 = core.onRequest(req(1), 0, false);
    expect(of(d1, "dispatch")).toEqual([expect.objectContaining({ server: "s1", n: 1 })]);
    // s1 goes silent past the server timeout; s2 keeps beating.
    core.heartbeat("s2", 1000);
    const fx = core.tick(1500);
    expect(of(fx, "recordAttempt")).toEqual([expect.objectContaining({ session: "A", n: 1, server: "s1", error: expect.objectContaining({ code: "TANDEM_SERVER_LOST" }) })]);
    core.serverRestartAcked({ server: "s2", working: [] }, 1500);
    // Not sent again before its record is read back (a failover meanwhile would not know it).
    expect(of(core.tick(1600), "dispatch")).toEqual([]);
    const back = core.onAttemptRecord(lost(1, "s1", 1550), 1600);
    expect(of(back, "dispatch")).toEqual([]); // back-off: 100 ms from when it was stored
    expect(of(core.tick(1649), "dispatch")).toEqual([]);
    expect(of(core.tick(1651), "dispatch").map((d) => [d.server, d.n])).toEqual([["s2", 1]]);
  });

  it("a server that dies after taking work whose acknowledgement never came back still costs that request an attempt", () => {
    // Found by the work-failure property: a handler that ends its process right after taking the
    // work loses the acknowledgement on the way; the dispatch failed, and the death counted nothing.
    const core = setup({ jitter: 0, initialMs: 10 });
    core.onRequest(req(1), 0, false);
    core.dispatchFailed("A", 1, 100); // no acknowledgement: the table has no dispatch open
    expect(core.sessions.get("A")!.inFlight.size).toBe(0);
    core.heartbeat("s2", 1000);
    const fx = core.tick(1500); // s1 silent past the timeout
    expect(of(fx, "recordAttempt")).toEqual([expect.objectContaining({ session: "A", n: 1, server: "s1" })]);
  });

  it("after maxAttempts failures the request is answered TANDEM_POISON, dead-lettered with its queue position, and the next request goes on", () => {
    const core = setup({ maxAttempts: 2, jitter: 0, initialMs: 10 });
    const r1 = req(1);
    core.onRequest(r1, 0, false);
    core.onRequest(req(2), 0, false);
    core.onAttemptRecord(lost(1, "s1", 0), 0);
    const fx = core.onAttemptRecord(lost(1, "s2", 20), 20);
    const err = of(fx, "storeError");
    expect(err).toEqual([expect.objectContaining({ n: 1, error: expect.objectContaining({ code: "TANDEM_POISON", context: expect.objectContaining({ attempts: 2, servers: ["s1", "s2"] }) }) })]);
    expect(of(fx, "dlq")).toEqual([expect.objectContaining({ code: "TANDEM_POISON", reqSeq: r1.seq })]);
    expect(of(core.tick(30), "dispatch")).toEqual([]); // 1 is answered by the error, not run again
    const answered = core.onResponse({ seq: ++seq, client: "c", session: "A", n: 1, server: "manager", error: err[0]!.error }, 31);
    expect(of(answered, "dispatch").map((d) => d.n)).toEqual([2]);
    expect(of(answered, "deliver").map((d) => d.n)).toEqual([1]);
  });

  it("a retryable handler failure is an attempt, not the answer; a terminal one is the answer", () => {
    const core = setup({ jitter: 0, initialMs: 50 });
    core.onRequest(req(1), 0, false);
    const retry = { code: "FLAKY", message: "try later", retryable: true, retryAfterMs: 500 };
    const fx = core.onResponse({ seq: ++seq, client: "c", session: "A", n: 1, server: "s1", error: retry, at: 10 }, 10);
    expect(of(fx, "deliver")).toEqual([]);
    expect(core.sessions.get("A")!.responses.has(1)).toBe(false);
    expect(of(core.tick(509), "dispatch")).toEqual([]); // its own delay (500 ms) is a floor
    expect(of(core.tick(511), "dispatch").map((d) => d.n)).toEqual([1]);
    const terminal = { code: "BAD_INPUT", message: "no", name: "TerminalError" };
    const done = core.onResponse({ seq: ++seq, client: "c", session: "A", n: 1, server: "s1", error: terminal, at: 600 }, 600);
    expect(of(done, "deliver")).toEqual([expect.objectContaining({ n: 1 })]);
    expect(core.sessions.get("A")!.responses.get(1)?.error).toEqual(terminal);
  });

  it("per-request policy is over the session's", () => {
    const core = setup({ maxAttempts: 5 });
    core.onRequest(req(1, { retry: { maxAttempts: 1 } }), 0, false);
    const fx = core.onAttemptRecord(lost(1, "s1", 0), 0);
    expect(of(fx, "storeError").map((e) => e.error.code)).toEqual(["TANDEM_POISON"]);
  });

  it("on replay, attempts read before their request (the queues are read apart) still quarantine it", () => {
    const core = setup({ maxAttempts: 2 });
    core.onAttemptRecord(lost(1, "s1", 0), 0);
    core.onAttemptRecord(lost(1, "s2", 0), 0);
    const fx = core.onRequest(req(1), 0, true);
    expect(of(fx, "storeError").map((e) => e.error.code)).toEqual(["TANDEM_POISON"]);
    expect(of(fx, "dispatch")).toEqual([]);
  });

  it("a server reporting a request running keeps it from looking lost (long handlers)", () => {
    const core = setup();
    core.onRequest(req(1), 0, false);
    core.heartbeat("s1", 400, [["A", 1]]);
    const s = core.sessions.get("A")!;
    expect(s.inFlight.get(1)).toMatchObject({ runningAt: 400, acked: true });
    core.heartbeat("s1", 800, [["A", 2]]); // not the dispatched one: changes nothing
    expect(s.inFlight.get(1)!.runningAt).toBe(400);
    expect(s.inFlight.has(2)).toBe(false);
  });
});

describe("manager core: deadlines and cancellation", () => {
  it("a queued request past its deadline is answered TANDEM_DEADLINE and never dispatched", () => {
    const core = setup();
    core.onRequest(req(1), 0, false);
    core.onRequest(req(2, { deadline: 100 }), 0, false);
    // 1 runs long; 2 waits behind it and its deadline passes.
    expect(of(core.tick(150), "storeError")).toEqual([]); // 2 is not at the head yet
    const fx = core.onResponse({ seq: ++seq, client: "c", session: "A", n: 1, server: "s1", ok: 1 }, 200);
    expect(of(fx, "dispatch")).toEqual([]);
    expect(of(fx, "storeError")).toEqual([expect.objectContaining({ n: 2, error: expect.objectContaining({ code: "TANDEM_DEADLINE" }) })]);
  });

  it("a request at a server past its deadline is cancelled there and answered so; a late response is not its answer", () => {
    const core = setup();
    core.onRequest(req(1, { deadline: 100 }), 0, false);
    const fx = core.tick(101);
    // With its reason: the handler's signal says TANDEM_DEADLINE too, whichever of the server's
    // own timer and this cancel comes first.
    expect(of(fx, "cancel")).toEqual([expect.objectContaining({ server: "s1", n: 1, reason: "deadline" })]);
    expect(of(fx, "storeError").map((e) => e.error.code)).toEqual(["TANDEM_DEADLINE"]);
    // The server's answer, stored after the deadline, comes first in the queue: not taken.
    core.onResponse({ seq: ++seq, client: "c", session: "A", n: 1, server: "s1", ok: "late", at: 150 }, 150);
    expect(core.sessions.get("A")!.responses.has(1)).toBe(false);
  });

  it("a cancel record answers a waiting request TANDEM_CANCELLED once; an answered request stays answered", () => {
    const core = setup();
    core.onRequest(req(1), 0, false);
    core.onRequest(req(2), 0, false);
    const c2 = core.onCancelRecord({ seq: ++seq, client: "c", session: "A", n: 2, reason: "cancelled" }, 5);
    expect(of(c2, "storeError").map((e) => [e.n, e.error.code])).toEqual([[2, "TANDEM_CANCELLED"]]);
    expect(of(core.onCancelRecord({ seq: ++seq, client: "c", session: "A", n: 2, reason: "cancelled" }, 6), "storeError")).toEqual([]);
    core.onResponse({ seq: ++seq, client: "c", session: "A", n: 1, server: "s1", ok: 1 }, 7);
    expect(of(core.onCancelRecord({ seq: ++seq, client: "c", session: "A", n: 1, reason: "cancelled" }, 8), "storeError")).toEqual([]);
    const c1 = core.onCancelRecord({ seq: ++seq, client: "c", session: "A", n: 1, reason: "deadline" }, 8);
    expect(c1).toEqual([]);
  });

  it("a running request cancelled by its caller is stopped at its server", () => {
    const core = setup();
    core.onRequest(req(1), 0, false);
    const fx = core.onCancelRecord({ seq: ++seq, client: "c", session: "A", n: 1, reason: "cancelled" }, 5);
    expect(of(fx, "cancel")).toEqual([expect.objectContaining({ server: "s1", n: 1, reason: "cancelled" })]);
  });
});

describe("manager core: a failover replays the same decisions", () => {
  it("a new primary replaying the attempt records waits out the same back-off and counts the same attempts", () => {
    // Live: two failures, then the takeover replays the queues into a fresh core.
    const records: Array<ReturnType<typeof lost>> = [];
    const live = setup({ maxAttempts: 4, jitter: 0.5, initialMs: 1000 });
    const r1 = req(1);
    live.onRequest(r1, 0, false);
    records.push(lost(1, "s1", 100), lost(1, "s2", 2000));
    for (const r of records) live.onAttemptRecord(r, r.at);
    const liveRetryAt = live.sessions.get("A")!.attempts.get(1)!.retryAt;

    const next = new ManagerCore(LIMITS, 2);
    next.onOpenRecord({ seq: 1, client: "c", session: "A", service: "svc", maxPending: 50, retry: { maxAttempts: 4, jitter: 0.5, initialMs: 1000 } }, 3000, true);
    for (const r of records) next.onAttemptRecord(r, 3000);
    next.onRequest(r1, 3000, true);
    const a = next.sessions.get("A")!.attempts.get(1)!;
    expect(a.failures).toBe(2);
    expect(a.retryAt).toBe(liveRetryAt);
  });
});
