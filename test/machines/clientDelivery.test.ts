/**
 * The client's delivery rules (machines/clientDelivery.ts), without NATS: examples of each rule,
 * and a property that runs random schedules of sends, deliveries (in order, repeated, out of
 * order), callers giving up, readers, receipts committed or failing, and resumes against a model
 * manager, checking I2 and I3 after every step and that nothing deliverable is left waiting.
 */
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { DeliveryCore, type HandOver } from "../../src/machines/clientDelivery.js";

/** Runs of the property: more with TANDEM_DEEP=1. */
const RUNS = process.env.TANDEM_DEEP === "1" ? 30_000 : 3000;

const d = (n: number) => ({ n });

describe("the client's delivery rules", () => {
  it("hands responses to their requests in order, and commits the receipt once handed", () => {
    const c = new DeliveryCore<{ n: number }>(0);
    c.sent(1, 0);
    c.sent(2, 0);
    expect(c.accept(2, d(2), 1)).toEqual({ accepted: false, duplicate: false, expected: 1 });
    expect(c.accept(1, d(1), 1)).toEqual({ accepted: true });
    expect(c.accept(1, d(1), 1)).toEqual({ accepted: false, duplicate: true });
    expect(c.handOvers().map((h) => [h.n, h.to])).toEqual([[1, "waiter"]]);
    expect(c.receiptDue()).toBe(1);
    expect(c.receiptDue()).toBeNull(); // being carried
    expect(c.committed(1)).toBe(true);
    expect(c.accept(2, d(2), 2)).toEqual({ accepted: true });
    // The next request carries the receipt instead of a TAKEN record of its own.
    expect(c.handOvers().map((h) => h.n)).toEqual([2]);
    expect(c.carryable()).toBe(2);
    c.carry(2);
    expect(c.receiptDue()).toBeNull();
  });

  it("holds a response nobody waits for until a reader asks, and never lets a later one overtake it", () => {
    const c = new DeliveryCore<{ n: number }>(0);
    c.resumed({ lastReq: 2, taken: 0 }); // two requests of an earlier process
    c.sent(3, 0);
    for (const n of [1, 2, 3]) c.accept(n, d(n), 0);
    expect(c.handOvers()).toEqual([]); // 3 is waited for, but 1 comes first
    expect(c.unclaimed()).toBe(2);
    c.wantRead();
    expect(c.handOvers().map((h) => [h.n, h.to])).toEqual([[1, "reader"]]);
    c.wantRead();
    expect(c.handOvers().map((h) => [h.n, h.to])).toEqual([
      [2, "reader"],
      [3, "waiter"],
    ]);
  });

  it("takes the response of a caller who gave up for nobody, and still commits it", () => {
    const c = new DeliveryCore<{ n: number }>(0);
    c.sent(1, 0);
    expect(c.abandon(1)).toBe(true);
    expect(c.abandon(1)).toBe(false);
    c.accept(1, d(1), 0);
    expect(c.handOvers().map((h) => h.to)).toEqual(["nobody"]);
    expect(c.receiptDue()).toBe(1);
  });

  it("a failed receipt is not carried any more, so the next pump tries it again", () => {
    const c = new DeliveryCore<{ n: number }>(0);
    c.sent(1, 0);
    c.accept(1, d(1), 0);
    c.handOvers();
    expect(c.receiptDue()).toBe(1);
    c.receiptFailed();
    expect(c.receiptDue()).toBe(1);
  });

  it("a live session keeps what it handed across a resume; a new one starts from the committed receipts", () => {
    const live = new DeliveryCore<{ n: number }>(0);
    live.sent(1, 0);
    live.sent(2, 0);
    live.accept(1, d(1), 0);
    live.accept(2, d(2), 0);
    live.handOvers();
    live.resumed({ lastReq: 2, taken: 0 });
    expect([live.handed, live.accepted, live.taken]).toEqual([2, 2, 0]);
    expect(live.accept(1, d(1), 0)).toMatchObject({ duplicate: true }); // delivered again: dropped
    const fresh = new DeliveryCore<{ n: number }>(0);
    fresh.resumed({ lastReq: 5, taken: 3 });
    expect([fresh.handed, fresh.accepted, fresh.lastReq]).toEqual([3, 3, 5]);
    expect(fresh.unclaimed()).toBe(2);
  });

  it("stalls only while something is awaited, measured from the last delivery or the start of waiting", () => {
    const c = new DeliveryCore<{ n: number }>(0);
    expect(c.stalled(100_000, 5000)).toBe(false); // idle
    c.sent(1, 50_000); // idle until now: waiting starts now
    expect(c.stalled(54_000, 5000)).toBe(false);
    expect(c.stalled(55_000, 5000)).toBe(true);
    c.accept(1, d(1), 56_000);
    c.handOvers();
    expect(c.stalled(90_000, 5000)).toBe(false);
  });

  type Op =
    | { op: "send" }
    | { op: "answer" }
    | { op: "deliver"; again: number }
    | { op: "deliverAhead" }
    | { op: "abandon"; pick: number }
    | { op: "read" }
    | { op: "pump"; fail: boolean }
    | { op: "carry" }
    | { op: "resume" };

  const opArb: fc.Arbitrary<Op> = fc.oneof(
    { weight: 4, arbitrary: fc.constant<Op>({ op: "send" }) },
    { weight: 4, arbitrary: fc.constant<Op>({ op: "answer" }) },
    { weight: 5, arbitrary: fc.nat({ max: 3 }).map<Op>((again) => ({ op: "deliver", again })) },
    { weight: 1, arbitrary: fc.constant<Op>({ op: "deliverAhead" }) },
    { weight: 1, arbitrary: fc.nat({ max: 20 }).map<Op>((pick) => ({ op: "abandon", pick })) },
    { weight: 2, arbitrary: fc.constant<Op>({ op: "read" }) },
    { weight: 4, arbitrary: fc.integer({ min: 0, max: 9 }).map<Op>((x) => ({ op: "pump", fail: x < 3 })) },
    { weight: 1, arbitrary: fc.constant<Op>({ op: "carry" }) },
    { weight: 2, arbitrary: fc.constant<Op>({ op: "resume" }) },
  );

  it("property: each response is handed once, in order, to whoever waits for it; receipts only grow; nothing deliverable is left waiting (I2, I3)", () => {
    fc.assert(
      fc.property(fc.nat({ max: 5 }), fc.array(opArb, { minLength: 1, maxLength: 60 }), (earlier, ops) => {
        // The model manager: requests it holds, those answered, and the committed receipts.
        const m = { lastReq: earlier, answered: 0, taken: 0, delivered: 0 };
        const c = new DeliveryCore<{ n: number }>(0);
        if (earlier > 0) c.resumed({ lastReq: earlier, taken: 0 });
        const handed: Array<HandOver<{ n: number }>> = [];
        const waitedBy = new Set<number>();
        const gaveUp = new Set<number>();
        let lastCommitted = 0;
        const check = () => {
          expect(c.taken).toBeLessThanOrEqual(c.handed);
          expect(c.handed).toBeLessThanOrEqual(c.accepted);
          expect(c.taken).toBeLessThanOrEqual(Math.max(c.carrying, c.taken));
          expect(c.taken).toBeGreaterThanOrEqual(lastCommitted);
          lastCommitted = c.taken;
          for (let i = 0; i < handed.length; i++) expect(handed[i]!.n).toBe(i + 1); // once each, in order, no gaps (I2, I3)
          for (const h of handed) {
            if (h.to === "waiter") expect(waitedBy.has(h.n) && !gaveUp.has(h.n)).toBe(true);
            if (h.to === "nobody") expect(gaveUp.has(h.n)).toBe(true);
            if (h.to === "reader") expect(waitedBy.has(h.n)).toBe(false);
          }
        };
        const pump = (fail: boolean) => {
          for (let guard = 0; guard < 1000; guard++) {
            handed.push(...c.handOvers());
            const r = c.receiptDue();
            if (r === null) {
              if (c.handable()) continue;
              return;
            }
            if (fail) {
              c.receiptFailed();
              return;
            }
            c.committed(r);
            m.taken = Math.max(m.taken, r);
          }
          throw new Error("the pump did not settle");
        };
        for (const o of ops) {
          switch (o.op) {
            case "send": {
              const n = c.lastReq + 1;
              c.sent(n, 0);
              waitedBy.add(n);
              m.lastReq = Math.max(m.lastReq, n);
              break;
            }
            case "answer":
              if (m.answered < m.lastReq) m.answered++;
              break;
            case "deliver": {
              // The manager delivers the next one after what it saw acknowledged, or repeats one.
              const n = Math.max(m.taken, m.delivered - o.again) + 1;
              if (n <= m.answered) {
                const r = c.accept(n, d(n), 0);
                if (r.accepted || ("duplicate" in r && r.duplicate)) m.delivered = Math.max(m.delivered, n);
              }
              break;
            }
            case "deliverAhead": {
              const n = c.accepted + 2;
              if (n <= m.answered) expect(c.accept(n, d(n), 0)).toMatchObject({ accepted: false, duplicate: false });
              break;
            }
            case "abandon": {
              const waiting = [...waitedBy].filter((n) => c.isWaiting(n));
              const n = waiting[o.pick % Math.max(1, waiting.length)];
              if (n !== undefined && c.abandon(n)) gaveUp.add(n);
              break;
            }
            case "read":
              c.wantRead();
              break;
            case "pump":
              pump(o.fail);
              break;
            case "carry": {
              // A request sent now carries the receipt; the publish succeeds.
              const carry = c.carryable();
              const n = c.lastReq + 1;
              c.sent(n, 0);
              waitedBy.add(n);
              m.lastReq = Math.max(m.lastReq, n);
              if (carry) {
                c.carry(carry);
                c.committed(carry);
                m.taken = Math.max(m.taken, carry);
              }
              break;
            }
            case "resume":
              // The manager redelivers from its committed receipts.
              c.resumed({ lastReq: m.lastReq, taken: m.taken });
              m.delivered = m.taken;
              break;
          }
          check();
        }
        // Liveness: everything answered is delivered, readers ask for the earlier process's
        // responses, and the pump settles with every waiting request answered.
        for (let i = 0; i < earlier + ops.length + 1; i++) c.wantRead();
        m.answered = m.lastReq;
        for (let n = c.accepted + 1; n <= m.answered; n++) c.accept(n, d(n), 0);
        pump(false);
        check();
        expect(c.handable()).toBe(false);
        expect(c.handed).toBe(m.answered);
        for (const n of waitedBy) if (!gaveUp.has(n)) expect(handed.some((h) => h.n === n && h.to === "waiter")).toBe(true);
        expect(c.taken).toBe(c.handed);
      }),
      { numRuns: RUNS },
    );
  });
});
