import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { ManagerCore, type Effect } from "../../src/machines/managerCore.js";

const LIMITS = { maxPending: 5, maxPayload: 100, serverTimeoutMs: 1000, ackTimeoutMs: 200 };

function setup() {
  const core = new ManagerCore(LIMITS, 1);
  const fx: Effect[] = [];
  fx.push(...core.registerServer("s1", "svc", 4, 0));
  const { entry, effects } = core.open({ session: "A", client: "c", service: "svc", maxPending: 5, restart: { step: 0 } }, 0);
  fx.push(...effects);
  return { core, entry, fx };
}

const of = <T extends Effect["type"]>(fx: Effect[], type: T) => fx.filter((e): e is Extract<Effect, { type: T }> => e.type === type);

let seq = 0;
const req = (n: number, extra: Record<string, unknown> = {}) => ({ seq: ++seq, client: "c", session: "A", n, kind: "request" as const, payload: { n }, size: 10, ...extra });
const resp = (n: number, server = "s1", extra: Record<string, unknown> = {}) => ({ seq: ++seq, client: "c", session: "A", n, server, ok: { n }, ...extra });

describe("manager core - open records in the queue (issue 13)", () => {
  it("a live open record for a session the table lacks is refused and dead-lettered, not a new session", () => {
    const { core } = setup();
    const fx = core.onOpenRecord({ seq: 100, client: "c", session: "FORGED", service: "madeup", maxPending: 5 }, 0, false);
    expect(core.sessions.has("FORGED")).toBe(false);
    expect(core.isKnownService("madeup")).toBe(false);
    expect(of(fx, "dlq")).toEqual([expect.objectContaining({ code: "TANDEM_MALFORMED", context: expect.objectContaining({ session: "FORGED" }) })]);
  });

  it("on replay an open record recreates its session, with maxPending capped at the limit", () => {
    const core = new ManagerCore(LIMITS, 1);
    core.registerServer("s1", "svc", 4, 0);
    core.onOpenRecord({ seq: 1, client: "c", session: "B", service: "svc", maxPending: 1_000_000 }, 0, true);
    expect(core.sessions.get("B")?.maxPending).toBe(LIMITS.maxPending);
  });
});

describe("manager core - responses past the last request (issue 13)", () => {
  it("live, a response or checkpoint for a request the session never sent is refused and changes nothing", () => {
    const { core } = setup();
    core.onRequest(req(1), 0, false);
    const big = 2 ** 53;
    const fx = core.onResponse(resp(big), 0, false);
    expect(of(fx, "dlq")).toEqual([expect.objectContaining({ code: "TANDEM_MALFORMED", context: expect.objectContaining({ n: big, lastReq: 1 }) })]);
    const s = core.sessions.get("A")!;
    expect(s.lastReq).toBe(1);
    expect(s.responses.has(big)).toBe(false);
    const cp = core.onCheckpoint({ seq: ++seq, client: "c", session: "A", n: big, restart: { forged: true } }, false);
    expect(of(cp, "dlq")).toHaveLength(1);
    expect(s.serverRestart?.data).not.toEqual({ forged: true });
    // The real answer still goes through.
    expect(of(core.onResponse(resp(1), 0, false), "deliver")).toHaveLength(1);
  });

  it("a receipt naming more than the session's last request counts only up to it; later requests still run", () => {
    const { core } = setup();
    core.onRequest(req(1), 0, false);
    core.onResponse(resp(1), 0, false);
    core.onTaken({ seq: ++seq, client: "c", session: "A", taken: 2 ** 53 - 1 }, 0);
    const s = core.sessions.get("A")!;
    expect(s.taken).toBe(1);
    // Taken as is, request 2 looked taken already and was never dispatched.
    expect(of(core.onRequest(req(2), 0, false), "dispatch").map((d) => d.n)).toEqual([2]);
  });

  it("on replay a response may come before its request, and is kept", () => {
    const { core } = setup();
    core.onResponse(resp(3), 0, true);
    expect(core.sessions.get("A")!.responses.has(3)).toBe(true);
  });
});

describe("manager core - routing", () => {
  it("open assigns a live server of the service and stores the initial client restart data", () => {
    const { entry, fx } = setup();
    expect(entry.server).toBe("s1");
    expect(of(fx, "putRestart")).toEqual([{ type: "putRestart", session: "A", side: "client", record: { data: { step: 0 }, n: 0, seq: 0 } }]);
  });

  it("dispatches one request at a time per session, in request order", () => {
    const { core } = setup();
    const a = core.onRequest(req(1), 0, false);
    const b = core.onRequest(req(2), 0, false);
    expect(of(a, "dispatch").map((d) => d.n)).toEqual([1]);
    expect(of(b, "dispatch")).toEqual([]); // 1 is still at the server
    const c = core.onResponse(resp(1), 0);
    expect(of(c, "dispatch").map((d) => d.n)).toEqual([2]);
    expect(of(c, "deliver").map((d) => d.n)).toEqual([1]);
  });

  it("handles requests that reach the queue out of order (a retried publish)", () => {
    const { core } = setup();
    expect(of(core.onRequest(req(2), 0, false), "dispatch")).toEqual([]);
    expect(of(core.onRequest(req(1), 0, false), "dispatch").map((d) => d.n)).toEqual([1]);
  });

  it("delivers in order, one in flight, and forgets responses once taken", () => {
    const { core, entry } = setup();
    core.onRequest(req(1), 0, false);
    core.onRequest(req(2), 0, false);
    core.onResponse(resp(1), 0);
    const fx = core.onResponse(resp(2), 0);
    expect(of(fx, "deliver")).toEqual([]); // 1 is being delivered
    expect(of(core.deliverAcked("A", 1, 0), "deliver").map((d) => d.n)).toEqual([2]);
    core.deliverAcked("A", 2, 0);
    core.onTaken({ seq: ++seq, client: "c", session: "A", taken: 2 }, 0);
    expect(entry.taken).toBe(2);
    expect(entry.responses.size).toBe(0);
  });

  it("ignores a duplicate response and a duplicate request", () => {
    const { core, entry } = setup();
    core.onRequest(req(1), 0, false);
    core.onResponse(resp(1), 0);
    expect(core.onResponse(resp(1, "s2"), 0)).toEqual([]);
    expect(entry.responses.get(1)?.server).toBe("s1");
    expect(of(core.onRequest(req(1), 0, false), "dispatch")).toEqual([]);
  });

  it("keeps the newest client restart data by queue position (I6)", () => {
    const { core, entry } = setup();
    core.onRequest(req(2, { restart: "two" }), 0, false);
    core.onRequest(req(1, { restart: "one" }), 0, false); // arrived late: older position
    expect(entry.clientRestart?.data).toBe("two");
  });

  it("stores server restart data from checkpoints and responses", () => {
    const { core, entry } = setup();
    core.onRequest(req(1), 0, false);
    const fx = core.onCheckpoint({ seq: ++seq, client: "c", session: "A", n: 1, restart: { round: 5 } });
    expect(of(fx, "putRestart")[0]?.side).toBe("server");
    core.onResponse(resp(1, "s1", { restart: { round: 10 } }), 0);
    expect(entry.serverRestart?.data).toEqual({ round: 10 });
  });
});

describe("manager core - bad input (I7)", () => {
  it("answers an oversized request with TANDEM_PAYLOAD_TOO_LARGE and a DLQ copy, never dispatches it", () => {
    const { core } = setup();
    const fx = core.onRequest(req(1, { size: 1000 }), 0, false);
    expect(of(fx, "storeError")[0]?.error.code).toBe("TANDEM_PAYLOAD_TOO_LARGE");
    expect(of(fx, "dlq")[0]?.code).toBe("TANDEM_PAYLOAD_TOO_LARGE");
    expect(of(fx, "dispatch")).toEqual([]);
  });

  it("answers requests over the pending limit with TANDEM_BACKPRESSURE", () => {
    const { core } = setup();
    const codes: string[] = [];
    for (let n = 1; n <= 7; n++) for (const e of of(core.onRequest(req(n), 0, false), "storeError")) codes.push(e.error.code);
    expect(codes).toEqual(["TANDEM_BACKPRESSURE", "TANDEM_BACKPRESSURE"]);
  });

  it("reports an unknown session to the client and the DLQ, but not while replaying", () => {
    const core = new ManagerCore(LIMITS, 1);
    const live = core.onRequest({ ...req(1), session: "nope" }, 0, false);
    expect(of(live, "notify")[0]?.error.code).toBe("TANDEM_UNKNOWN_SESSION");
    expect(of(live, "dlq")).toHaveLength(1);
    expect(core.onRequest({ ...req(1), session: "nope" }, 0, true)).toEqual([]);
  });
});

describe("manager core - servers", () => {
  it("moves the sessions of a server without heartbeats to another server, which must restart them", () => {
    const { core, entry } = setup();
    core.registerServer("s2", "svc", 4, 0);
    core.onRequest(req(1), 0, false); // dispatched to s1
    core.heartbeat("s2", 900);
    const fx = core.tick(1500);
    expect(entry.server).toBe("s2");
    expect(of(fx, "restartServer")).toEqual([{ type: "restartServer", server: "s2", sessions: ["A"] }]);
    expect(of(fx, "dispatch")).toEqual([]); // not before s2 acknowledged the restart
    const lost = of(fx, "recordAttempt")[0]!;
    expect(lost).toEqual(expect.objectContaining({ session: "A", n: 1, server: "s1" }));
    expect(of(core.serverRestartAcked({ server: "s2", working: [] }, 1500), "dispatch")).toEqual([]); // nor before its failed attempt is on record
    const after = core.onAttemptRecord({ seq: ++seq, client: "c", session: "A", n: 1, server: "s1", error: lost.error, at: 1000 }, 1500);
    expect(of(after, "dispatch").map((d) => [d.server, d.n])).toEqual([["s2", 1]]);
  });

  it("a new epoch restarts the servers named in the table at once, and dispatches when they acknowledge", () => {
    const { core } = setup();
    core.onRequest(req(1), 0, false);
    const fx = core.startEpoch(2, 10);
    expect(of(fx, "restartServer")).toEqual([{ type: "restartServer", server: "s1", sessions: ["A"] }]);
    expect(of(fx, "dispatch")).toEqual([]); // not before s1 acknowledged
    const after = core.serverRestartAcked({ server: "s1", working: [] }, 20);
    expect(of(after, "dispatch").map((d) => [d.server, d.n])).toEqual([["s1", 1]]);
    // Known again: its heartbeats are enough, and a registration restarts nothing twice.
    expect(core.heartbeat("s1", 30)).toBe(true);
    expect(of(core.registerServer("s1", "svc", 4, 30), "restartServer")).toEqual([]);
  });

  it("a restored session on a server the cursor does not name moves when that server never answers (regression)", () => {
    const { core } = setup();
    core.onRequest(req(1), 0, false);
    const { records, cursor } = core.snapshot();
    const next = new ManagerCore(LIMITS, 2);
    next.restore(records, new Map(), { ...cursor, servers: [] }, 0); // the cursor lost s1
    next.startEpoch(2, 0);
    next.registerServer("s2", "svc", 4, 100); // another server of the service registers
    next.heartbeat("s2", 1500);
    const fx = next.tick(1500); // s1 silent past serverTimeoutMs
    expect(next.sessions.get("A")!.server).toBe("s2");
    expect(of(fx, "restartServer")).toEqual([{ type: "restartServer", server: "s2", sessions: ["A"] }]);
  });

  it("does not send work twice that a restarted server reports still running", () => {
    const { core, entry } = setup();
    core.onRequest(req(1), 0, false);
    core.startEpoch(2, 10);
    expect(core.heartbeat("s1", 20)).toBe(false); // presumed from a backup: register again
    const reg = core.registerServer("s1", "svc", 4, 20);
    expect(of(reg, "restartServer")[0]?.sessions).toEqual(["A"]);
    const fx = core.serverRestartAcked({ server: "s1", working: [{ session: "A", n: 1 }] }, 30);
    expect(of(fx, "dispatch")).toEqual([]);
    expect([...entry.inFlight.keys()]).toEqual([1]);
  });

  it("sends each open to a least-loaded live server, and counts sessions per client, through opens, closes and a dead server (property)", () => {
    const op = fc.oneof(
      fc.record({ op: fc.constant("open" as const), client: fc.constantFrom("c1", "c2") }),
      fc.record({ op: fc.constant("close" as const), pick: fc.nat() }),
      fc.record({ op: fc.constant("down" as const) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const core = new ManagerCore(LIMITS, 1);
        core.registerServer("s1", "svc", 1, 0);
        core.registerServer("s2", "svc", 1, 0);
        const on = (srv: string) => [...core.sessions.values()].filter((s) => s.server === srv).length;
        let t = 0;
        let id = 0;
        for (const o of ops) {
          if (o.op === "open") {
            const live = ["s1", "s2"].filter((s) => core.servers.get(s)?.alive);
            const least = Math.min(...live.map(on));
            const { entry } = core.open({ session: `S${++id}`, client: o.client, service: "svc", maxPending: 5 }, t);
            expect(live).toContain(entry.server);
            expect(on(entry.server!) - 1).toBe(least);
          } else if (o.op === "close") {
            const all = [...core.sessions.values()];
            if (all.length === 0) continue;
            const s = all[o.pick % all.length]!;
            core.close(s.client, s.id);
          } else if (core.servers.get("s2")?.alive) {
            t += 5000; // s2 stops sending heartbeats; s1 goes on
            core.heartbeat("s1", t);
            core.tick(t);
            expect(on("s2")).toBe(0);
          }
          for (const c of ["c1", "c2"]) expect(core.sessionsOf(c)).toBe([...core.sessions.values()].filter((s) => s.client === c).length);
        }
      }),
      { numRuns: 200 },
    );
  });

  it("waits for a server when a service has none alive, then assigns the next to register", () => {
    const { core, entry } = setup();
    core.onRequest(req(1), 0, false);
    core.tick(5000); // s1 dead, nobody else
    expect(entry.server).toBeNull();
    const fx = core.registerServer("s3", "svc", 1, 5000);
    expect(entry.server).toBe("s3");
    expect(of(fx, "restartServer")[0]?.sessions).toEqual(["A"]);
  });

  it("retries a failed dispatch after a back-off", () => {
    const { core } = setup();
    core.onRequest(req(1), 0, false);
    core.dispatchFailed("A", 1, 100);
    expect(of(core.tick(101), "dispatch")).toEqual([]);
    expect(of(core.tick(400), "dispatch").map((d) => d.n)).toEqual([1]);
  });
});

describe("manager core - clients", () => {
  it("after a new epoch delivers only once the client acknowledged the restart, from what it accepted", () => {
    const { core } = setup();
    core.onRequest(req(1), 0, false);
    core.onRequest(req(2), 0, false);
    core.onResponse(resp(1), 0);
    core.onResponse(resp(2), 0);
    const fx = core.startEpoch(2, 0);
    expect(of(fx, "restartClient")).toEqual([{ type: "restartClient", client: "c", sessions: ["A"] }]);
    expect(of(fx, "deliver")).toEqual([]);
    const after = core.clientRestartAcked({ client: "c", sessions: [{ session: "A", taken: 1 }] }, 0);
    expect(of(after, "deliver").map((d) => d.n)).toEqual([2]);
  });

  it("resume resets delivery to what the application took", () => {
    const { core, entry } = setup();
    core.onRequest(req(1), 0, false);
    core.onResponse(resp(1), 0);
    core.deliverAcked("A", 1, 0); // accepted by a process that then died before taking it
    const { effects } = core.resume("c", "A", 0);
    expect(entry.delivered).toBe(0);
    expect(of(effects, "deliver").map((d) => d.n)).toEqual([1]);
    expect(core.resume("someone-else", "A", 0).entry).toBeNull();
  });
});

describe("manager core - snapshot and replay", () => {
  it("reports a session that waits for a request the table does not hold (a stale cut under a newer cursor)", () => {
    const core = new ManagerCore(LIMITS, 2);
    const stale = { v: 1 as const, session: "A", client: "c", service: "svc", maxPending: 5, server: null, status: "open" as const, lastReq: 4, answered: 2, taken: 2, epoch: 1 };
    core.restore([stale], new Map(), { v: 1, epoch: 1, reqSeq: 10, respSeq: 10, reqFrom: 11, respFrom: 11, services: ["svc"], servers: [] }, 0);
    core.onRequest({ seq: 11, client: "c", session: "A", n: 4, kind: "request", payload: 4, size: 1 }, 0, true);
    expect(core.stalled()).toEqual([{ session: "A", missing: "request", n: 3 }]);
  });

  it("a session opened after the cut is recreated from its open record when the queue is replayed", () => {
    const before = new ManagerCore(LIMITS, 1);
    before.registerServer("s1", "svc", 1, 0);
    const { cursor, records } = before.snapshot(); // the cut: no sessions yet
    const after = new ManagerCore(LIMITS, 2);
    after.restore(records, new Map(), cursor, 0);
    after.onOpenRecord({ seq: 1, client: "c", session: "A", service: "svc", maxPending: 5, restart: { step: 0 } }, 0);
    after.onRequest({ seq: 2, client: "c", session: "A", n: 1, kind: "request", payload: 1, size: 1 }, 0, true);
    const s = after.sessions.get("A");
    expect(s?.lastReq).toBe(1);
    expect(s?.clientRestart?.data).toEqual({ step: 0 });
    // Live, the record of an existing session changes nothing.
    expect(after.onOpenRecord({ seq: 3, client: "c", session: "A", service: "svc", maxPending: 5 }, 0)).toEqual([]);
    expect(after.sessions.get("A")?.lastReq).toBe(1);
  });

  it("rebuilds from a snapshot plus the queues past its cursors to the same decisions", () => {
    // Property: for any split point, snapshot + replay of the rest == the live table.
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 0, max: 40 }), (requests, cut) => {
        const events: Array<{ stream: "req" | "resp"; seq: number; apply: (c: ManagerCore, replay: boolean) => void }> = [];
        let rs = 0;
        let ps = 0;
        for (let n = 1; n <= requests; n++) {
          const s1 = ++rs;
          events.push({ stream: "req", seq: s1, apply: (c, r) => void c.onRequest({ seq: s1, client: "c", session: "A", n, kind: "request", payload: n, size: 1, restart: n }, 0, r) });
          if (n % 3 !== 0) {
            const s2 = ++ps;
            events.push({ stream: "resp", seq: s2, apply: (c) => void c.onResponse({ seq: s2, client: "c", session: "A", n, server: "s1", ok: n * 10 }, 0) });
          }
          if (n % 2 === 0 && n % 3 !== 0 && (n - 1) % 3 !== 0) {
            const s3 = ++rs;
            events.push({ stream: "req", seq: s3, apply: (c) => void c.onTaken({ seq: s3, client: "c", session: "A", taken: n }, 0) });
          }
        }
        const mk = () => {
          const c = new ManagerCore({ ...LIMITS, maxPending: 1000 }, 1);
          c.registerServer("s1", "svc", 1, 0);
          c.open({ session: "A", client: "c", service: "svc", maxPending: 1000 }, 0);
          return c;
        };
        const live = mk();
        for (const e of events) e.apply(live, false);
        const k = Math.min(cut, events.length);
        const before = mk();
        for (const e of events.slice(0, k)) e.apply(before, false);
        const { records, cursor } = before.snapshot();
        const restored = new ManagerCore({ ...LIMITS, maxPending: 1000 }, 2);
        const b = before.sessions.get("A")!;
        restored.restore(records, new Map([["A", { ...(b.clientRestart ? { client: b.clientRestart } : {}) }]]), cursor, 0);
        // Replay each stream from its `from` cursor (what JetStream would deliver).
        for (const e of events) {
          const from = e.stream === "req" ? cursor.reqFrom : cursor.respFrom;
          if (e.seq >= from) e.apply(restored, true);
        }
        const L = live.sessions.get("A")!;
        const R = restored.sessions.get("A")!;
        expect([R.lastReq, R.answered, R.taken]).toEqual([L.lastReq, L.answered, L.taken]);
        expect([...R.requests.keys()].sort()).toEqual([...L.requests.keys()].sort());
        expect([...R.responses.keys()].sort()).toEqual([...L.responses.keys()].sort());
        expect(R.clientRestart?.data).toEqual(L.clientRestart?.data);
      }),
      { numRuns: 200 },
    );
  });
});

describe("manager core - hedging", () => {
  function hedged() {
    const core = new ManagerCore({ ...LIMITS, hedge: { ratio: 0.5, reserve: 1, window: 64, minSamples: 2, fallbackMs: 40 } }, 1);
    for (const s of ["s1", "s2", "s3"]) core.registerServer(s, "svc", 4, 0);
    core.registerServer("other", "elsewhere", 4, 0);
    core.open({ session: "H", client: "c", service: "svc", maxPending: 5, hedge: { copies: 3, after: "p95" } }, 0);
    return core;
  }
  const hreq = (n: number) => ({ seq: ++seq, client: "c", session: "H", n, kind: "request" as const, payload: n, size: 1 });

  it("hedge targets are other live servers of the service, each paid for by a budget token", () => {
    const core = hedged();
    const fx = core.onRequest(hreq(1), 0, false); // deposits 0.5: 1.5 tokens
    const first = of(fx, "dispatch")[0]!.server;
    const targets = core.hedgeTargets("H", [first], 2);
    expect(targets).toHaveLength(1); // one whole token only
    expect(targets[0]).not.toBe(first);
    expect(["s1", "s2", "s3"]).toContain(targets[0]);
    expect(core.hedgeTargets("H", [first], 2)).toEqual([]); // spent
  });

  it("learns the delay from response latencies and reports answers of hedged sessions only", () => {
    const core = hedged();
    expect(core.hedgeDelay("H")).toBe(40); // fallback before enough samples
    core.onRequest(hreq(1), 0, false);
    const fx = core.onResponse({ seq: ++seq, client: "c", session: "H", n: 1, server: "s2", ok: 1 }, 10);
    // Read on replay: answered before this epoch, so no copies to cancel on other servers.
    expect(of(fx, "answered")).toEqual([{ type: "answered", session: "H", n: 1, server: "s2", others: [], replaying: true }]);
    core.onRequest(hreq(2), 10, false);
    // Live: the other live servers of the service, where copies no proxy knows of may run.
    const live = core.onResponse({ seq: ++seq, client: "c", session: "H", n: 2, server: "s1", ok: 2 }, 40, false);
    expect(of(live, "answered").map((e) => [e.server, [...e.others].sort(), e.replaying])).toEqual([["s1", ["s2", "s3"], false]]);
    expect(core.hedgeDelay("H")).toBe(30);
    const { core: plain } = setup();
    plain.onRequest(req(1), 0, false);
    expect(of(plain.onResponse(resp(1), 5), "answered")).toEqual([]);
  });

  it("hedge options, budget and learned delay survive a snapshot and restore (a failover)", () => {
    const core = hedged();
    core.onRequest(hreq(1), 0, false);
    core.onResponse({ seq: ++seq, client: "c", session: "H", n: 1, server: "s1", ok: 1 }, 25);
    core.onRequest(hreq(2), 25, false);
    core.onResponse({ seq: ++seq, client: "c", session: "H", n: 2, server: "s1", ok: 2 }, 60);
    const snap = JSON.parse(JSON.stringify(core.snapshot()));
    const next = new ManagerCore(core.limits, 2);
    next.restore(snap.records, new Map(), snap.cursor, 0);
    expect(next.sessions.get("H")!.hedge).toEqual({ copies: 3, after: "p95" });
    expect(next.budget("svc").toJSON()).toEqual(core.budget("svc").toJSON());
    expect(next.hedgeDelay("H")).toBe(core.hedgeDelay("H"));
  });
});

describe("manager core - a request stuck at its server", () => {
  it("redispatch sends the request at the server again, and nothing when none is there", () => {
    const { core } = setup();
    expect(of(core.onRequest(req(1), 0, false), "dispatch").map((d) => d.n)).toEqual([1]);
    expect(of(core.redispatch("A", 1, 5000), "dispatch")).toMatchObject([{ type: "dispatch", server: "s1", session: "A", n: 1 }]);
    core.onResponse(resp(1), 5001);
    expect(core.redispatch("A", 1, 5002)).toEqual([]);
  });
});

describe("manager core - diagnosing a waiting session", () => {
  it("says what holds a session with unanswered requests and nothing at a server", () => {
    const core = new ManagerCore(LIMITS, 1);
    core.open({ session: "W", client: "c", service: "svc", maxPending: 5 }, 0); // no server yet
    core.onRequest({ seq: ++seq, client: "c", session: "W", n: 1, kind: "request", payload: 1, size: 1 }, 0, false);
    expect(core.diagnose("W", 10)?.reason).toBe("no server for the service");
    core.registerServer("s1", "svc", 1, 20); // takes the waiting session: a restart goes out
    expect(core.diagnose("W", 30)?.reason).toBe("server restart in flight");
    core.serverRestartAcked({ server: "s1", working: [] }, 40); // dispatches
    expect(core.diagnose("W", 50)).toBeNull(); // something is at the server now
  });
});

describe("manager core - bytes held per session, client and manager (issue 13)", () => {
  const BYTES = { ...LIMITS, maxPending: 1000, maxPayload: 100, maxSessionBytes: 300, maxClientBytes: 500, maxHeldBytes: 700 };

  it("requests held behind a gap are refused TANDEM_BACKPRESSURE past the session's bytes, never held", () => {
    const core = new ManagerCore(BYTES, 1);
    core.registerServer("s1", "svc", 4, 0);
    core.open({ session: "A", client: "c", service: "svc", maxPending: 1000 }, 0);
    // n = 1 never comes: 2, 3, 4 fit (3 × 100), the rest are answered with an error.
    const refused: number[] = [];
    for (let n = 2; n <= 20; n++) {
      const fx = core.onRequest({ ...req(n), size: 100 }, 0, false);
      const err = of(fx, "storeError")[0];
      if (err) {
        expect(err.error.code).toBe("TANDEM_BACKPRESSURE");
        expect(err.error.context).toMatchObject({ scope: "session", limit: 300 });
        refused.push(n);
      }
    }
    expect(refused).toEqual(Array.from({ length: 16 }, (_, i) => i + 5));
    expect(core.heldBytes()).toBe(300);
    expect(core.sessions.get("A")!.bytes).toBe(300);
  });

  it("a session that holds nothing may always send one request: one heavy client cannot starve the rest", () => {
    const core = new ManagerCore(BYTES, 1);
    core.registerServer("s1", "svc", 4, 0);
    for (const id of ["A", "B", "C"]) core.open({ session: id, client: "heavy", service: "svc", maxPending: 1000 }, 0);
    core.open({ session: "D", client: "other", service: "svc", maxPending: 1000 }, 0);
    for (const id of ["A", "B", "C"]) for (let n = 2; n <= 4; n++) core.onRequest({ ...req(n), client: "heavy", session: id, size: 100 }, 0, false);
    // A 300; B 200 (the client's 500 reached); C takes its one request anyway.
    expect(core.heldBytes("heavy")).toBe(600);
    const d1 = core.onRequest({ ...req(1), client: "other", session: "D", size: 100 }, 0, false);
    expect(of(d1, "dispatch")).toHaveLength(1);
    const d2 = core.onRequest({ ...req(2), client: "other", session: "D", size: 100 }, 0, false);
    expect(of(d2, "storeError")[0]?.error.context).toMatchObject({ scope: "manager" });
  });

  it("property: the counts always equal what the table holds, and stay within the bounds", () => {
    const step = fc.oneof(
      fc.record({ t: fc.constant("req" as const), s: fc.constantFrom("A", "B"), n: fc.integer({ min: 1, max: 12 }), size: fc.integer({ min: 0, max: 100 }) }),
      fc.record({ t: fc.constant("resp" as const), s: fc.constantFrom("A", "B"), n: fc.integer({ min: 1, max: 12 }), size: fc.integer({ min: 0, max: 100 }) }),
      fc.record({ t: fc.constant("taken" as const), s: fc.constantFrom("A", "B"), n: fc.integer({ min: 0, max: 12 }) }),
      fc.record({ t: fc.constant("close" as const), s: fc.constantFrom("A", "B") }),
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 60 }), (steps) => {
        const core = new ManagerCore(BYTES, 1);
        core.registerServer("s1", "svc", 4, 0);
        const open = (id: string) => core.open({ session: id, client: "c", service: "svc", maxPending: 1000 }, 0);
        open("A");
        open("B");
        for (const st of steps) {
          if (!core.sessions.has(st.s)) open(st.s);
          if (st.t === "req") core.onRequest({ ...req(st.n), session: st.s, size: st.size }, 0, false);
          else if (st.t === "resp") core.onResponse({ ...resp(st.n), session: st.s, size: st.size }, 0, true);
          else if (st.t === "taken") core.onTaken({ seq: ++seq, client: "c", session: st.s, taken: st.n }, 0);
          else core.close(st.s, "c");
          let sum = 0;
          for (const s of core.sessions.values()) {
            let own = 0;
            for (const r of s.requests.values()) own += r.bytes ?? 0;
            for (const r of s.responses.values()) own += r.bytes ?? 0;
            expect(s.bytes).toBe(own);
            sum += own;
          }
          expect(core.heldBytes()).toBe(sum);
          expect(core.heldBytes("c")).toBe(sum);
          // Requests are bounded; a response (whatever its size) replaces its request.
          expect(sum).toBeLessThanOrEqual(BYTES.maxClientBytes + 2 * 100 * 2);
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe("manager core - replay past the byte bounds (issue 13)", () => {
  const BYTES = { ...LIMITS, maxPending: 1000, maxPayload: 100, maxSessionBytes: 300, maxClientBytes: 500, maxHeldBytes: 700 };

  it("keeps what the live primary accepted, without holding its payload past the bounds, and still dispatches it", () => {
    const core = new ManagerCore(BYTES, 1);
    core.registerServer("s1", "svc", 4, 0);
    core.onOpenRecord({ seq: 1, client: "c", session: "A", service: "svc", maxPending: 1000 }, 0, true);
    for (let n = 1; n <= 10; n++) expect(of(core.onRequest({ ...req(n), size: 100 }, 0, true), "storeError")).toEqual([]);
    const s = core.sessions.get("A")!;
    expect(s.requests.size).toBe(10);
    expect(core.heldBytes()).toBeLessThanOrEqual(300);
    expect([...s.requests.values()].filter((r) => r.evicted).map((r) => r.payload)).toEqual(Array(7).fill(undefined));
    // A request whose answer was read first is not held at all.
    core.onResponse({ ...resp(11), size: 10 }, 0, true);
    const before = core.heldBytes();
    core.onRequest({ ...req(11), size: 100 }, 0, true);
    expect(s.requests.has(11)).toBe(false);
    expect(core.heldBytes()).toBe(before);
  });
});

describe("manager core - restart data bounded as payloads are (issue 13)", () => {
  it("a request with restart data past maxPayload is refused; a response keeps its answer but not the data; a checkpoint is refused", () => {
    const { core } = setup();
    const fx = core.onRequest({ ...req(1), restart: { big: true }, restartSize: 101 }, 0, false);
    expect(of(fx, "storeError")[0]?.error).toMatchObject({ code: "TANDEM_PAYLOAD_TOO_LARGE", message: expect.stringMatching(/restart data of request 1 is 101 bytes/) });
    expect(of(fx, "putRestart")).toEqual([]);
    core.onRequest(req(2), 0, false);
    const r = core.onResponse({ ...resp(2), restart: { big: true }, restartSize: 101 }, 0, false);
    expect(of(r, "putRestart")).toEqual([]);
    expect(of(r, "dlq")[0]).toMatchObject({ code: "TANDEM_PAYLOAD_TOO_LARGE", context: { n: 2, size: 101, limit: 100 } });
    expect(core.sessions.get("A")!.responses.has(2)).toBe(true);
    core.onRequest(req(3), 0, false);
    const c = core.onCheckpoint({ seq: ++seq, client: "c", session: "A", n: 3, server: "s1", restart: { big: true }, restartSize: 101 }, false);
    expect(c).toEqual([expect.objectContaining({ type: "dlq", code: "TANDEM_PAYLOAD_TOO_LARGE" })]);
    expect(core.sessions.get("A")!.serverRestart).toBeNull();
  });
});

describe("manager core - a server restarted under the same id (issue 15, item 7)", () => {
  it("a new incarnation's registration moves the old one's work at once; the same incarnation again changes nothing", () => {
    const core = new ManagerCore(LIMITS, 1);
    core.registerServer("s1", "svc", 4, 0, "inc-a");
    core.open({ session: "A", client: "c", service: "svc", maxPending: 5 }, 0);
    expect(of(core.onRequest(req(1), 0, false), "dispatch")).toHaveLength(1);
    core.dispatchAcked("A", 1);
    // The same process registering again (after a manager restart, say): nothing moves.
    expect(of(core.registerServer("s1", "svc", 4, 10, "inc-a"), "report")).toEqual([]);
    // A new process under the same id: the old one's work is gone with it.
    const fx = core.registerServer("s1", "svc", 4, 20, "inc-b");
    expect(of(fx, "report")[0]?.message).toMatch(/new incarnation/);
    expect(of(fx, "restartServer").map((e) => e.server)).toEqual(["s1"]);
    expect(core.servers.get("s1")?.incarnation).toBe("inc-b");
  });
});

describe("manager core - sessions waiting for a server after a takeover", () => {
  it("a session replayed from its open record while every server is presumed gets the server that acknowledges the restart, without a registration", () => {
    const core = new ManagerCore(LIMITS, 2);
    core.restore([], new Map(), { v: 1, epoch: 1, reqSeq: 0, respSeq: 0, reqFrom: 1, respFrom: 1, services: ["svc"], servers: [{ id: "s1", service: "svc", capacity: 4 }] }, 0);
    // Opened after the last cut: only its open record says so, and s1 is still presumed.
    core.onOpenRecord({ seq: 1, client: "c", session: "late", service: "svc", maxPending: 5 }, 0, true);
    expect(core.sessions.get("late")!.server).toBeNull();
    core.startEpoch(2, 0);
    core.serverRestartAcked({ server: "s1", working: [] }, 10); // live now, and it never registers again
    const fx = core.tick(20);
    expect(core.sessions.get("late")!.server).toBe("s1");
    expect(of(fx, "restartServer")).toEqual([{ type: "restartServer", server: "s1", sessions: ["late"] }]);
  });
});
