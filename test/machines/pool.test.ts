/**
 * Unordered pools (issue 17, item 2; docs/design.md §6, pools), on the manager core and the
 * client's PoolDeliveryCore with a simulated clock: requests of one session spread over the
 * service's servers by room, responses delivered as they complete, each taken once, across a
 * server's death, a takeover and a client that dies and resumes.
 */
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { ManagerCore, type Effect } from "../../src/machines/managerCore.js";
import { PoolDeliveryCore } from "../../src/machines/poolDelivery.js";
import { Marks } from "../../src/machines/marks.js";

const RUNS = process.env.TANDEM_DEEP === "1" ? 3000 : 300;
const LIMITS = { maxPending: 100, maxPayload: 1000, serverTimeoutMs: 1000, ackTimeoutMs: 200 };
const of = <T extends Effect["type"]>(fx: Effect[], type: T) => fx.filter((e): e is Extract<Effect, { type: T }> => e.type === type);

let seq = 0;
const req = (n: number, extra: Record<string, unknown> = {}) => ({ seq: ++seq, client: "c", session: "P", n, kind: "request" as const, payload: { n }, size: 10, ...extra });
const resp = (n: number, server: string) => ({ seq: ++seq, client: "c", session: "P", n, server, ok: n * 10, size: 10 });
const lost = (n: number, server: string) => ({ seq: ++seq, client: "c", session: "P", n, server, error: { code: "TANDEM_SERVER_LOST", message: "lost" }, at: 0 });

function setup(window: number, servers = ["s1", "s2", "s3"], capacity = 1) {
  const core = new ManagerCore(LIMITS, 1);
  for (const s of servers) core.registerServer(s, "svc", capacity, 0);
  const { entry } = core.open({ session: "P", client: "c", service: "svc", maxPending: 100, window, pool: true }, 0);
  return { core, entry };
}

describe("marks: a floor and the numbers above it", () => {
  it("collapses into the floor, merges, and counts so that a larger set has a larger count", () => {
    const m = new Marks();
    expect(m.add(2)).toBe(true);
    expect(m.add(2)).toBe(false);
    expect(m.toWire()).toEqual({ upTo: 0, also: [2] });
    m.add(1);
    expect(m.toWire()).toEqual({ upTo: 2 });
    expect(m.merge({ upTo: 1, also: [5, 4] })).toBe(true);
    expect(m.toWire()).toEqual({ upTo: 2, also: [4, 5] });
    expect(m.count).toBe(4);
    expect(m.merge({ upTo: 3 })).toBe(true);
    expect(m.toWire()).toEqual({ upTo: 5 });
    expect(m.merge({ upTo: 4, also: [5] })).toBe(false);
  });
});

describe("manager core - an unordered pool", () => {
  it("spreads requests over the servers by room, at most twice each one's capacity", () => {
    const { core, entry } = setup(16);
    const fx: Effect[] = [];
    for (let n = 1; n <= 10; n++) fx.push(...core.onRequest(req(n), 0, false));
    const sent = of(fx, "dispatch");
    expect(sent.map((d) => d.n)).toEqual([1, 2, 3, 4, 5, 6]);
    const per = new Map<string, number>();
    for (const d of sent) per.set(d.server, (per.get(d.server) ?? 0) + 1);
    expect([...per.values()]).toEqual([2, 2, 2]);
    expect(entry.server).toBeNull();
    // An answer frees room at its server: the next request goes there.
    const next = of(core.onResponse(resp(5, sent.find((d) => d.n === 5)!.server), 1, false), "dispatch");
    expect(next.map((d) => [d.n, d.server])).toEqual([[7, sent.find((d) => d.n === 5)!.server]]);
  });

  it("delivers responses as they complete; receipts above the floor drop them and move answered over them", () => {
    const { core, entry } = setup(8);
    const sent = new Map<number, string>();
    for (let n = 1; n <= 4; n++) for (const d of of(core.onRequest(req(n), 0, false), "dispatch")) sent.set(d.n, d.server);
    expect(of(core.onResponse(resp(3, sent.get(3)!), 1, false), "deliver").map((d) => d.n)).toEqual([3]);
    expect(of(core.onResponse(resp(2, sent.get(2)!), 1, false), "deliver").map((d) => d.n)).toEqual([2]);
    expect(entry.answered).toBe(0);
    core.deliverAcked("P", 3, 2);
    expect(entry.deliveredAlso).toEqual(new Set([3]));
    core.onTaken({ seq: ++seq, client: "c", session: "P", taken: 0, also: [2, 3] }, 3);
    expect(entry.takenAlso).toEqual(new Set([2, 3]));
    expect(entry.responses.size).toBe(0);
    expect(core.pendingCount(entry)).toBe(2);
    // 1 answers: answered moves over the taken 2 and 3; taking it collapses the set.
    core.onResponse(resp(1, sent.get(1)!), 4, false);
    expect(entry.answered).toBe(3);
    core.onTaken({ seq: ++seq, client: "c", session: "P", taken: 1, also: [2, 3] }, 5);
    expect([entry.taken, entry.takenAlso.size]).toEqual([3, 0]);
    // A forged receipt for numbers never sent is not kept.
    core.onTaken({ seq: ++seq, client: "c", session: "P", taken: 3, also: [99] }, 6);
    expect(entry.takenAlso.size).toBe(0);
  });

  it("a server's death costs only the requests it held an attempt; the rest go on at the others", () => {
    const { core, entry } = setup(6);
    const sent = new Map<number, string>();
    for (let n = 1; n <= 6; n++) for (const d of of(core.onRequest(req(n), 0, false), "dispatch")) sent.set(d.n, d.server);
    for (const s of ["s1", "s3"]) core.heartbeat(s, 1500);
    const fx = core.tick(1500); // s2 timed out
    const recorded = of(fx, "recordAttempt").map((e) => e.n);
    const onS2 = [...sent].filter(([, s]) => s === "s2").map(([n]) => n);
    expect(recorded).toEqual(onS2);
    expect(entry.synced.has("s2")).toBe(false);
    expect([...entry.inFlight.values()].every((d) => d.server !== "s2")).toBe(true);
    // Their attempts on record, they go to the live servers, one at a time (they were together).
    const again: Effect[] = [];
    for (const n of onS2) again.push(...core.onAttemptRecord(lost(n, "s2"), 1501));
    const redo = of(again, "dispatch");
    expect(redo.every((d) => d.server !== "s2")).toBe(true);
    expect(redo.map((d) => d.work.attempt)).toEqual(redo.map(() => 2));
  });

  it("a delayed request does not hold back the ones after it", () => {
    const { core } = setup(4);
    const fx = [...core.onRequest(req(1, { notBefore: 100 }), 0, false), ...core.onRequest(req(2), 0, false)];
    expect(of(fx, "dispatch").map((d) => d.n)).toEqual([2]);
    expect(of(core.tick(99), "dispatch")).toEqual([]);
    expect(of(core.tick(100), "dispatch").map((d) => d.n)).toEqual([1]);
  });

  it("after a takeover every server of the service is restarted with the pool, and work still running is not sent twice", () => {
    const { core, entry } = setup(6, ["s1", "s2"], 2);
    for (let n = 1; n <= 5; n++) core.onRequest(req(n), 0, false);
    core.onTaken({ seq: ++seq, client: "c", session: "P", taken: 0 }, 0);
    const { records, cursor } = core.snapshot();
    const next = new ManagerCore(LIMITS, 2);
    next.restore(records, new Map(), cursor, 0);
    for (let n = 1; n <= 5; n++) next.onRequest(req(n), 0, true);
    const fx = next.startEpoch(2, 10);
    const restarts = of(fx, "restartServer");
    expect(restarts.map((r) => [r.server, r.sessions])).toEqual([["s1", ["P"]], ["s2", ["P"]]]);
    expect(of(fx, "dispatch")).toEqual([]);
    // s1 says it runs 1 and 3: the others go, none twice; s2 has not answered: nothing there.
    const after = of(next.serverRestartAcked({ server: "s1", working: [{ session: "P", n: 1 }, { session: "P", n: 3 }], sessions: ["P"] }, 20), "dispatch");
    expect(after.map((d) => [d.n, d.server])).toEqual([[2, "s1"], [4, "s1"]]);
    const p = next.sessions.get("P")!;
    expect([...p.inFlight.keys()].sort()).toEqual([1, 2, 3, 4]);
    // A restart that did not name the pool syncs nothing of it.
    next.serverRestartAcked({ server: "s2", working: [], sessions: [] }, 21);
    expect(p.synced.has("s2")).toBe(false);
    expect(entry.ordered).toBe(false);
  });

  it("receipts above the floor survive a takeover: a taken request read again is not run again", () => {
    const { core } = setup(4);
    const sent = new Map<number, string>();
    for (let n = 1; n <= 3; n++) for (const d of of(core.onRequest(req(n), 0, false), "dispatch")) sent.set(d.n, d.server);
    core.onResponse(resp(2, sent.get(2)!), 1, false);
    core.onTaken({ seq: ++seq, client: "c", session: "P", taken: 0, also: [2] }, 2);
    const { records, cursor } = core.snapshot();
    expect(records[0]).toMatchObject({ pool: true, takenAlso: [2] });
    const next = new ManagerCore(LIMITS, 2);
    next.restore(records, new Map(), cursor, 0);
    for (let n = 1; n <= 3; n++) next.onRequest(req(n), 0, true);
    next.startEpoch(2, 10);
    const fx = [...next.serverRestartAcked({ server: "s1", working: [], sessions: ["P"] }, 20), ...next.serverRestartAcked({ server: "s2", working: [], sessions: ["P"] }, 20)];
    expect(of(fx, "dispatch").map((d) => d.n).sort()).toEqual([1, 3]);
    expect(next.restartInfo("P")!.requests).toEqual([1, 3]);
  });
});

/**
 * The property: a pool session with up to 3 servers, a client that takes responses as they come
 * and may die and resume, servers that answer in any order or die, deliveries that are lost. Each
 * request reaches the application once unless its receipt was not committed when its client died
 * (then again, and only in a new incarnation: I2 as the history checker reads it); at most
 * `window` at servers; at most twice a server's capacity there; in the end all are taken.
 */
describe("pool property", () => {
  type Op =
    | { t: "send" }
    | { t: "answer"; pick: number }
    | { t: "deliver"; lose: boolean }
    | { t: "commit" }
    | { t: "kill"; server: number }
    | { t: "crash" }
    | { t: "tick"; ms: number };
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 4, arbitrary: fc.constant<Op>({ t: "send" }) },
    { weight: 5, arbitrary: fc.nat(50).map((pick): Op => ({ t: "answer", pick })) },
    { weight: 4, arbitrary: fc.boolean().map((lose): Op => ({ t: "deliver", lose })) },
    { weight: 2, arbitrary: fc.constant<Op>({ t: "commit" }) },
    { weight: 1, arbitrary: fc.nat(2).map((server): Op => ({ t: "kill", server })) },
    { weight: 1, arbitrary: fc.constant<Op>({ t: "crash" }) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 600 }).map((ms): Op => ({ t: "tick", ms })) },
  );

  it("each response is taken once per commit, the window holds, and everything is taken in the end", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.array(op, { minLength: 10, maxLength: 120, size: "max" }), (window, ops) => {
        const core = new ManagerCore(LIMITS, 1);
        let now = 0;
        let serial = 0;
        const live = new Set<string>();
        const register = (): Effect[] => {
          const id = `s${++serial}`;
          live.add(id);
          return core.registerServer(id, "svc", 1, now);
        };
        for (let i = 0; i < 3; i++) register();
        core.open({ session: "P", client: "c", service: "svc", maxPending: 100, window, pool: true }, now);
        const s = core.sessions.get("P")!;
        let client = new PoolDeliveryCore<number>(now);
        let incarnation = 0;
        const handedIn = new Map<number, number[]>(); // n -> incarnations that were handed it
        const committedAt = new Map<number, number>(); // n -> incarnation whose receipt committed it
        const running = new Map<string, { n: number; server: string }>(); // dispatched, not answered
        const outbox: Array<{ n: number }> = [];
        let lastReq = 0;
        let msgSeq = 1000;
        const apply = (fx: Effect[]) => {
          for (const e of fx) {
            if (e.type === "dispatch") {
              expect(live.has(e.server)).toBe(true);
              expect(s.takenAlso.has(e.n) || e.n <= s.taken).toBe(false);
              running.set(`${e.server}.${e.n}`, { n: e.n, server: e.server });
              core.dispatchAcked("P", e.n);
            } else if (e.type === "deliver") outbox.push({ n: e.n });
            else if (e.type === "recordAttempt") apply(core.onAttemptRecord({ seq: ++msgSeq, client: "c", session: "P", n: e.n, server: e.server, error: e.error, at: e.at }, now));
            else if (e.type === "restartServer") apply(core.serverRestartAcked({ server: e.server, working: [...running.values()].filter((r) => r.server === e.server).map((r) => ({ session: "P", n: r.n })), sessions: e.sessions }, now));
            else if (e.type === "storeError") apply(core.onResponse({ seq: ++msgSeq, client: "c", session: "P", n: e.n, server: "manager", error: e.error, size: 10 }, now, false));
          }
          expect(s.inFlight.size).toBeLessThanOrEqual(window);
          const per = new Map<string, number>();
          for (const d of s.inFlight.values()) per.set(d.server, (per.get(d.server) ?? 0) + 1);
          for (const v of per.values()) expect(v).toBeLessThanOrEqual(2);
        };
        const hand = () => {
          for (const h of client.handOvers()) {
            const seen = handedIn.get(h.n) ?? [];
            // Once committed, never handed again; before that, at most once per incarnation.
            expect(committedAt.has(h.n)).toBe(false);
            expect(seen.includes(incarnation)).toBe(false);
            seen.push(incarnation);
            handedIn.set(h.n, seen);
          }
        };
        const commit = () => {
          const token = client.receiptDue();
          if (token === null) return;
          const body = client.receipt(token);
          client.committed(token);
          for (const n of Marks.of({ upTo: body.taken, ...(body.takenAlso ? { also: body.takenAlso } : {}) }).extra().concat(Array.from({ length: body.taken }, (_, i) => i + 1)))
            if (!committedAt.has(n)) committedAt.set(n, incarnation);
          apply(core.onTaken({ seq: ++msgSeq, client: "c", session: "P", taken: body.taken, ...(body.takenAlso ? { also: body.takenAlso } : {}) }, now));
        };
        const step = (o: Op) => {
          switch (o.t) {
            case "send": {
              if (lastReq - client.taken >= 100) return;
              const n = ++lastReq;
              client.sent(n, now);
              apply(core.onRequest({ seq: ++msgSeq, client: "c", session: "P", n, kind: "request", payload: n, size: 10 }, now, false));
              return;
            }
            case "answer": {
              const all = [...running.values()];
              if (all.length === 0) return;
              const r = all[o.pick % all.length]!;
              running.delete(`${r.server}.${r.n}`);
              if (!live.has(r.server)) return;
              apply(core.onResponse({ seq: ++msgSeq, client: "c", session: "P", n: r.n, server: r.server, ok: r.n, size: 10 }, now, false));
              return;
            }
            case "deliver": {
              const d = outbox.shift();
              if (!d) return;
              if (o.lose) apply(core.deliverFailed("P", d.n, now));
              else {
                client.accept(d.n, d.n, now);
                hand();
                apply(core.deliverAcked("P", d.n, now));
              }
              return;
            }
            case "commit":
              commit();
              return;
            case "kill": {
              const id = [...live][o.server % live.size];
              if (!id || live.size === 1) return;
              live.delete(id);
              for (const [k, r] of running) if (r.server === id) running.delete(k);
              now += LIMITS.serverTimeoutMs + 1;
              for (const v of live) core.heartbeat(v, now);
              apply(core.tick(now));
              apply(register());
              apply(core.tick(now));
              return;
            }
            case "crash": {
              // The client process dies: what it handed but did not commit comes again.
              incarnation++;
              outbox.length = 0;
              client = new PoolDeliveryCore<number>(now);
              for (let n = 1; n <= lastReq; n++) client.sent(n, now);
              const { entry, effects } = core.resume("c", "P", now);
              client.resumed({ lastReq: entry!.lastReq, taken: entry!.taken, takenAlso: [...entry!.takenAlso] });
              apply(effects);
              return;
            }
            case "tick":
              now += o.ms;
              for (const v of live) core.heartbeat(v, now);
              apply(core.tick(now));
              return;
          }
        };
        for (const o of ops) step(o);
        // Drain: every request answered, delivered, handed and committed.
        for (let i = 0; i < 2000 && (committedAt.size < lastReq || outbox.length > 0 || running.size > 0); i++) {
          now += 250;
          for (const v of live) core.heartbeat(v, now);
          apply(core.tick(now));
          step({ t: "answer", pick: 0 });
          step({ t: "deliver", lose: false });
          commit();
        }
        for (let n = 1; n <= lastReq; n++) expect(committedAt.has(n), `request ${n} taken`).toBe(true);
        expect(s.taken).toBe(lastReq);
      }),
      { numRuns: RUNS },
    );
  });
});
