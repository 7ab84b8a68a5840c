/**
 * A window per session (issue 17, item 1; docs/design.md §6): up to `window` requests of a
 * session at its server at once, on the core and a simulated clock. Responses still reach the
 * client in request order, each once (I3); a server's death costs each request it held one
 * attempt; a restart does not send work twice that is still running.
 */
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { ManagerCore, type Effect } from "../../src/machines/managerCore.js";

/** Runs of the property: the deep campaign (TANDEM_DEEP=1) runs ten times as many. */
const RUNS = process.env.TANDEM_DEEP === "1" ? 3000 : 300;

const LIMITS = { maxPending: 100, maxPayload: 1000, serverTimeoutMs: 1000, ackTimeoutMs: 200 };
const of = <T extends Effect["type"]>(fx: Effect[], type: T) => fx.filter((e): e is Extract<Effect, { type: T }> => e.type === type);

let seq = 0;
const req = (n: number, extra: Record<string, unknown> = {}) => ({ seq: ++seq, client: "c", session: "A", n, kind: "request" as const, payload: { n }, size: 10, ...extra });
const resp = (n: number, server: string) => ({ seq: ++seq, client: "c", session: "A", n, server, ok: n * 10, size: 10 });

function setup(window: number, opts: { hedge?: boolean } = {}) {
  const core = new ManagerCore(LIMITS, 1);
  core.registerServer("s1", "svc", 4, 0);
  const { entry } = core.open({ session: "A", client: "c", service: "svc", maxPending: 100, window, ...(opts.hedge ? { hedge: { copies: 2, after: 10 } } : {}) }, 0);
  return { core, entry };
}

describe("manager core - a window of requests at the server", () => {
  it("dispatches up to the window at once, the next as each is answered; delivers in request order", () => {
    const { core, entry } = setup(3);
    const sent: number[] = [];
    for (let n = 1; n <= 6; n++) sent.push(...of(core.onRequest(req(n), 0, false), "dispatch").map((d) => d.n));
    expect(sent).toEqual([1, 2, 3]);
    // 3 answers first: nothing is delivered (1 is not answered), and the window does not move.
    let fx = core.onResponse(resp(3, "s1"), 1, false);
    expect(of(fx, "deliver")).toEqual([]);
    expect(of(fx, "dispatch")).toEqual([]);
    expect(entry.answered).toBe(0);
    // 1 answers: delivered; the window moves by one (2 is still out): 4 goes.
    fx = core.onResponse(resp(1, "s1"), 2, false);
    expect(of(fx, "deliver").map((d) => d.n)).toEqual([1]);
    expect(of(fx, "dispatch").map((d) => d.n)).toEqual([4]);
    // 2 answers: 2 and 3 are answered, 5 and 6 go; 2 and 3 are delivered behind 1 (up to the
    // window in flight, in order).
    fx = core.onResponse(resp(2, "s1"), 3, false);
    expect(of(fx, "dispatch").map((d) => d.n)).toEqual([5, 6]);
    expect(of(fx, "deliver").map((d) => d.n)).toEqual([2, 3]);
    expect(entry.answered).toBe(3);
    // One acknowledgement covers what the client accepted before it; a lost one (2) is sent again
    // with everything after it.
    expect(core.deliverAcked("A", 1, 4)).toEqual([]);
    expect(core.deliverFailed("A", 2, 5)).toEqual([]);
    expect(core.deliverFailed("A", 3, 5)).toEqual([]); // (refused: out of order)
    expect(of(core.tick(500), "deliver").map((d) => d.n)).toEqual([2, 3]);
    core.deliverAcked("A", 3, 501);
    expect(entry.delivered).toBe(3);
    expect([...entry.inFlight.keys()].sort()).toEqual([4, 5, 6]);
  });

  it("a batch answered in part: what the client took in order counts, the first it refused goes again with all after it", () => {
    const { core, entry } = setup(4);
    for (let n = 1; n <= 4; n++) core.onRequest(req(n), 0, false);
    let fx: Effect[] = [];
    for (const n of [2, 3, 4, 1]) fx = core.onResponse(resp(n, "s1"), 1, false);
    expect(of(fx, "deliver").map((d) => d.n)).toEqual([1, 2, 3, 4]); // one batch on the wire
    expect(core.deliverPartly("A", 2, 3, 2)).toEqual([]);
    expect(entry.delivered).toBe(2);
    expect(of(core.tick(3), "deliver")).toEqual([]); // backing off
    expect(of(core.tick(500), "deliver").map((d) => d.n)).toEqual([3, 4]);
    core.deliverAcked("A", 4, 501);
    expect(entry.delivered).toBe(4);
    // Nothing accepted at all: from the first again.
    const b = setup(2);
    for (let n = 1; n <= 2; n++) b.core.onRequest(req(n), 0, false);
    b.core.onResponse(resp(2, "s1"), 1, false);
    expect(of(b.core.onResponse(resp(1, "s1"), 1, false), "deliver").map((d) => d.n)).toEqual([1, 2]);
    b.core.deliverPartly("A", 0, 1, 2);
    expect(b.entry.delivered).toBe(0);
    expect(of(b.core.tick(500), "deliver").map((d) => d.n)).toEqual([1, 2]);
  });

  it("window 1 is one at a time; a hedged session has window 1 whatever it asked", () => {
    const one = setup(1).core;
    expect(of(one.onRequest(req(1), 0, false), "dispatch")).toHaveLength(1);
    expect(of(one.onRequest(req(2), 0, false), "dispatch")).toHaveLength(0);
    const { entry } = setup(8, { hedge: true });
    expect(entry.window).toBe(1);
  });

  it("a server's death costs every request it held one attempt, each sent again once its attempt is on record", () => {
    const { core, entry } = setup(4);
    core.registerServer("s2", "svc", 4, 0);
    for (let n = 1; n <= 4; n++) core.onRequest(req(n), 0, false);
    const first = entry.server!;
    const other = first === "s1" ? "s2" : "s1";
    core.onResponse(resp(2, first), 10, false);
    core.heartbeat(other, 1500);
    const fx = core.tick(1500);
    expect(of(fx, "recordAttempt").map((r) => r.n)).toEqual([1, 3, 4]);
    expect(entry.server).toBe(other);
    // The new server restarts the session; nothing goes before the attempts are on record.
    const restarted = core.serverRestartAcked({ server: other, working: [] }, 1501);
    expect(of(restarted, "dispatch")).toEqual([]);
    const again: number[] = [];
    const lostAt = of(fx, "recordAttempt")[0]!.at;
    for (const n of [1, 3, 4]) again.push(...of(core.onAttemptRecord({ seq: ++seq, client: "c", session: "A", n, server: first, error: { code: "TANDEM_SERVER_LOST", message: "lost" }, at: lostAt }, 1502), "dispatch").map((d) => d.n));
    // (After its retry back-off, counted from when the server was last heard of; one at a
    // time, as they were at the server together when it died: below.)
    again.push(...of(core.tick(2000), "dispatch").map((d) => d.n));
    expect(again).toEqual([1]);
    expect(of(core.onResponse(resp(1, other), 2001, false), "dispatch").map((d) => d.n)).toEqual([3]);
  });

  it("after a server died holding several requests, they run one at a time until each is answered: a poison one takes only itself down again", () => {
    const { core, entry } = setup(4);
    core.registerServer("s2", "svc", 4, 0);
    for (let n = 1; n <= 6; n++) core.onRequest(req(n), 0, false);
    const first = entry.server!;
    const other = first === "s1" ? "s2" : "s1";
    core.heartbeat(other, 1500);
    const fx = core.tick(1500);
    expect(of(fx, "recordAttempt").map((r) => r.n)).toEqual([1, 2, 3, 4]);
    core.serverRestartAcked({ server: other, working: [] }, 1501);
    const at = of(fx, "recordAttempt")[0]!.at;
    const sent: number[] = [];
    for (const n of [1, 2, 3, 4]) sent.push(...of(core.onAttemptRecord({ seq: ++seq, client: "c", session: "A", n, server: first, error: { code: "TANDEM_SERVER_LOST", message: "lost" }, at }, 1502), "dispatch").map((d) => d.n));
    core.heartbeat(other, 2900);
    sent.push(...of(core.tick(3000), "dispatch").map((d) => d.n));
    expect(sent).toEqual([1]); // one at a time
    expect(of(core.onResponse(resp(1, other), 3001, false), "dispatch").map((d) => d.n)).toEqual([2]);
    expect(of(core.onResponse(resp(2, other), 3002, false), "dispatch").map((d) => d.n)).toEqual([3]);
    expect(of(core.onResponse(resp(3, other), 3003, false), "dispatch").map((d) => d.n)).toEqual([4]);
    // The last suspect answered: the window opens again.
    expect(of(core.onResponse(resp(4, other), 3004, false), "dispatch").map((d) => d.n)).toEqual([5, 6]);
  });

  it("a restart does not send again what the server says it still runs", () => {
    const { core, entry } = setup(4);
    for (let n = 1; n <= 4; n++) core.onRequest(req(n), 0, false);
    core.startEpoch(2, 100);
    core.registerServer("s1", "svc", 4, 100);
    const fx = core.serverRestartAcked({ server: "s1", working: [{ session: "A", n: 2 }, { session: "A", n: 4 }] }, 110);
    expect(of(fx, "dispatch").map((d) => d.n)).toEqual([1, 3]);
    expect([...entry.inFlight.keys()].sort()).toEqual([1, 2, 3, 4]);
  });

  it("a delayed request holds its place: nothing after it goes before its time", () => {
    const { core } = setup(4);
    expect(of(core.onRequest(req(1), 0, false), "dispatch").map((d) => d.n)).toEqual([1]);
    expect(of(core.onRequest(req(2, { notBefore: 500 }), 0, false), "dispatch")).toEqual([]);
    expect(of(core.onRequest(req(3), 0, false), "dispatch")).toEqual([]);
    expect(of(core.tick(500), "dispatch").map((d) => d.n)).toEqual([2, 3]);
  });

  it("a deadline anywhere in the window answers that request so and cancels it where it runs", () => {
    const { core } = setup(3);
    core.onRequest(req(1), 0, false);
    core.onRequest(req(2, { deadline: 100 }), 0, false);
    core.onRequest(req(3), 0, false);
    const fx = core.tick(150);
    expect(of(fx, "cancel").map((c) => c.n)).toEqual([2]);
    expect(of(fx, "storeError").map((e) => [e.n, e.error.code])).toEqual([[2, "TANDEM_DEADLINE"]]);
  });

  it("closing a session cancels every request it has at its server", () => {
    const { core } = setup(3);
    for (let n = 1; n <= 3; n++) core.onRequest(req(n), 0, false);
    expect(of(core.close("c", "A").effects, "cancel").map((c) => c.n)).toEqual([1, 2, 3]);
  });

  it("the window is kept in the session's record and survives a rebuild", () => {
    const { core } = setup(5);
    const { records, cursor } = core.snapshot();
    expect(records[0]!.window).toBe(5);
    const next = new ManagerCore(LIMITS, 2);
    next.restore(records, new Map(), cursor, 0);
    expect(next.sessions.get("A")!.window).toBe(5);
  });

  it("property: under any schedule of answers, losses, restarts and failed sends, at most `window` are out, all within the window, and every response reaches the client once, in order (deliveries batched per turn)", () => {
    const step = fc.oneof(
      { weight: 4, arbitrary: fc.record({ t: fc.constant("request" as const) }) },
      { weight: 6, arbitrary: fc.record({ t: fc.constant("answer" as const), pick: fc.nat() }) },
      { weight: 1, arbitrary: fc.record({ t: fc.constant("sendFails" as const), pick: fc.nat() }) },
      { weight: 1, arbitrary: fc.record({ t: fc.constant("serverDies" as const) }) },
      { weight: 1, arbitrary: fc.record({ t: fc.constant("takeover" as const), keep: fc.boolean() }) },
      { weight: 2, arbitrary: fc.record({ t: fc.constant("wait" as const), ms: fc.integer({ min: 1, max: 2000 }) }) },
      { weight: 1, arbitrary: fc.record({ t: fc.constant("loseDelivery" as const) }) },
      { weight: 1, arbitrary: fc.record({ t: fc.constant("spoilElement" as const), at: fc.nat() }) },
    );
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.array(step, { maxLength: 80 }), (window, steps) => {
        let t = 0;
        let epoch = 1;
        let core = new ManagerCore(LIMITS, epoch);
        core.registerServer("s1", "svc", 4, 0);
        core.registerServer("s2", "svc", 4, 0);
        core.open({ session: "A", client: "c", service: "svc", maxPending: 100, window, retry: { maxAttempts: 1000, initialMs: 1, jitter: 0 } }, 0);
        /** What each server holds (it runs work until it answers or dies). */
        const held = new Map<string, Set<number>>([["s1", new Set()], ["s2", new Set()]]);
        const delivered: number[] = [];
        /** The client's in-order acceptance (what it has), and whether the next delivery is lost. */
        let accepted = 0;
        let lose = false;
        /** The next batch's element at this index arrives spoilt: refused (malformed), as is all after it. */
        let spoil: number | null = null;
        let lastReq = 0;
        const stream: Array<() => void> = []; // queue records not yet applied (read in order)
        const run = (fx: Effect[]) => {
          // The deliveries of one turn travel as one batch, answered per element as the client
          // does and read back as the effect executor does (manager/effects.ts, deliverBatch).
          const batch = of(fx, "deliver").map((e) => e.n);
          if (batch.length > 0) {
            if (lose) {
              lose = false;
              stream.push(() => run(core.deliverFailed("A", batch[0]!, t)));
            } else {
              let upTo = 0;
              let refused: number | null = null;
              const spoilt = spoil === null ? -1 : spoil % batch.length;
              spoil = null;
              for (const [i, n] of batch.entries()) {
                if (i === spoilt) {
                  refused = n;
                  break;
                }
                if (n === accepted + 1) {
                  accepted = n;
                  delivered.push(n);
                } else if (n > accepted) {
                  refused = n; // out of order: refused, and so is everything after it
                  break;
                } // else a repeat: has it
                upTo = n;
              }
              stream.push(() => run(refused === null ? core.deliverAcked("A", upTo, t) : core.deliverPartly("A", upTo, refused, t)));
            }
          }
          for (const e of fx) {
            if (e.type === "dispatch") held.get(e.server)?.add(e.n);
            else if (e.type === "recordAttempt") {
              const { n, server, error, at } = e;
              stream.push(() => run(core.onAttemptRecord({ seq: ++seq, client: "c", session: "A", n, server, error, at }, t)));
            } else if (e.type === "restartServer") {
              // What the server runs when it answers the restart.
              const server = e.server;
              stream.push(() => run(core.serverRestartAcked({ server, working: [...(held.get(server) ?? [])].map((n) => ({ session: "A", n })) }, t)));
            } else if (e.type === "restartClient") {
              stream.push(() => run(core.clientRestartAcked({ client: "c", sessions: [{ session: "A", taken: core.sessions.get("A")!.taken }] }, t)));
            } else if (e.type === "storeError") {
              const { n, error } = e;
              stream.push(() => run(core.onResponse({ seq: ++seq, client: "c", session: "A", n, server: "manager", error, size: 10 }, t, false)));
            }
          }
        };
        const check = () => {
          const s = core.sessions.get("A")!;
          expect(s.inFlight.size).toBeLessThanOrEqual(window);
          for (const n of s.inFlight.keys()) {
            expect(n).toBeGreaterThan(s.answered);
            expect(n).toBeLessThanOrEqual(s.answered + window);
            expect(s.responses.has(n)).toBe(false);
          }
        };
        for (const st of steps) {
          while (stream.length) stream.shift()!();
          if (st.t === "request" && lastReq < 100) run(core.onRequest(req(++lastReq), t, false));
          else if (st.t === "answer" || st.t === "sendFails") {
            const all = [...held].flatMap(([srv, ns]) => [...ns].map((n) => [srv, n] as const));
            if (all.length === 0) continue;
            const [srv, n] = all[st.pick % all.length]!;
            held.get(srv)!.delete(n);
            if (st.t === "answer") run(core.onResponse(resp(n, srv), t, false));
            else run(core.dispatchFailed("A", n, t));
          } else if (st.t === "serverDies") {
            const s = core.sessions.get("A")!;
            const victim = s.server;
            if (!victim) continue;
            held.get(victim)!.clear();
            // Its heartbeats stop; the other's go on; it comes back (a new process) later.
            t += 1500;
            for (const other of ["s1", "s2"]) if (other !== victim) core.heartbeat(other, t);
            run(core.tick(t));
            run(core.registerServer(victim, "svc", 4, t));
          } else if (st.t === "takeover") {
            // A new primary from this one's snapshot (the queues hold nothing unapplied here).
            const { cursor } = core.snapshot();
            const records = core.allRecords();
            const s = core.sessions.get("A")!;
            const fresh = new ManagerCore(LIMITS, ++epoch);
            fresh.restore(records, new Map(), cursor, t);
            const F = fresh.sessions.get("A")!;
            for (const [n, r] of s.requests) F.requests.set(n, { ...r });
            for (const [n, r] of s.responses) F.responses.set(n, { ...r });
            F.lastReq = s.lastReq;
            F.answered = s.answered;
            F.taken = s.taken;
            F.delivered = s.delivered;
            for (const [n, a] of s.attempts) F.attempts.set(n, a);
            core = fresh;
            run(core.startEpoch(epoch, t));
            for (const srv of ["s1", "s2"]) run(core.registerServer(srv, "svc", 4, t));
            if (!st.keep) for (const ns of held.values()) ns.clear(); // the servers restarted too
          } else if (st.t === "loseDelivery") {
            lose = true;
          } else if (st.t === "spoilElement") {
            spoil = st.at;
          } else if (st.t === "wait") {
            t += st.ms;
            for (const srv of ["s1", "s2"]) core.heartbeat(srv, t, [...held.get(srv)!].map((n) => ["A", n] as const));
            run(core.tick(t));
          }
          check();
        }
        // Then everything is answered: every request reaches the client once, in order.
        for (let round = 0; round < 500 && (core.sessions.get("A")!.answered < lastReq || accepted < lastReq); round++) {
          while (stream.length) stream.shift()!();
          t += 50;
          for (const srv of ["s1", "s2"]) core.heartbeat(srv, t);
          run(core.tick(t));
          for (const [srv, ns] of held) for (const n of [...ns]) {
            ns.delete(n);
            run(core.onResponse(resp(n, srv), t, false));
          }
          check();
        }
        while (stream.length) stream.shift()!();
        run(core.tick(t + 1));
        expect(core.sessions.get("A")!.answered).toBe(lastReq);
        // Every response reached the client once, in order.
        expect(delivered).toEqual([...Array(lastReq).keys()].map((k) => k + 1));
      }),
      { numRuns: RUNS },
    );
  });
});
