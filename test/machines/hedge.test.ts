import { describe, expect, it } from "vitest";
import { createActor, SimulatedClock } from "xstate";
import fc from "fast-check";
import { DEFAULT_HEDGE_BUDGET, HedgeBudget } from "../../src/machines/hedgeBudget.js";
import { CANCEL_ATTEMPTS, CANCEL_RETRY_MS, hedgeProxyMachine, type HedgeProxyInput } from "../../src/machines/hedgeProxyMachine.js";

function proxy(input: Partial<HedgeProxyInput> = {}, others = ["s2", "s3"]) {
  const clock = new SimulatedClock();
  const log = { sent: [] as Array<[string, number]>, cancels: [] as string[], records: [] as unknown[], reports: [] as string[], hedges: 0 };
  const ref: { self?: ReturnType<typeof createActor<typeof hedgeProxyMachine>> } = {};
  const machine = hedgeProxyMachine.provide({
    actions: {
      sendCopy: (_, p) => void log.sent.push([p.server, p.copy]),
      hedge: (_, p) => {
        log.hedges++;
        const picked = others.filter((s) => !p.exclude.includes(s)).slice(0, p.want);
        for (const s of picked) log.sent.push([s, 0]);
        queueMicrotask(() => ref.self!.send({ type: "HEDGE_SENT", servers: picked }));
      },
      cancel: (_, p) => void log.cancels.push(p.server),
      record: (_, p) => void log.records.push(p),
      report: (_, p) => void log.reports.push(p.server),
    },
  });
  const self = createActor(machine, { clock, input: { session: "S", n: 1, copies: 3, delayMs: 100, first: "s1", at: 0, ...input } });
  ref.self = self;
  self.start();
  return { actor: self, clock, log };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe("hedge proxy machine", () => {
  it("sends the first copy, and only after the delay the other copies, once", async () => {
    const { actor, clock, log } = proxy();
    expect(log.sent).toEqual([["s1", 1]]);
    expect(actor.getSnapshot().value).toEqual({ open: "dispatching" });
    actor.send({ type: "ACKED", server: "s1" });
    expect(actor.getSnapshot().value).toEqual({ open: "awaitingFirst" });
    clock.increment(99);
    expect(log.hedges).toBe(0);
    clock.increment(1);
    expect(log.hedges).toBe(1);
    await tick();
    expect(actor.getSnapshot().context.sent).toEqual(["s1", "s2", "s3"]);
    clock.increment(1000);
    expect(log.hedges).toBe(1);
  });

  it("settles on the first response, records the winner and cancels every other copy", async () => {
    const { actor, clock, log } = proxy();
    clock.increment(100);
    await tick();
    actor.send({ type: "RESPONSE", server: "s2" });
    expect(actor.getSnapshot().value).toBe("settled");
    expect(log.cancels.sort()).toEqual(["s1", "s3"]);
    expect(log.records).toEqual([{ winner: "s2", sent: ["s1", "s2", "s3"], cancelled: ["s1", "s3"], at: 0 }]);
    actor.send({ type: "CANCEL_ACKED", server: "s1" });
    actor.send({ type: "CANCEL_ACKED", server: "s3" });
    expect(actor.getSnapshot().status).toBe("done");
  });

  it("a response before the delay means no hedge at all", () => {
    const { actor, clock, log } = proxy();
    actor.send({ type: "RESPONSE", server: "s1" });
    clock.increment(1000);
    expect(log.hedges).toBe(0);
    expect(log.cancels).toEqual([]);
    expect(actor.getSnapshot().status).toBe("done");
  });

  it("after: 0 duplicates at once", async () => {
    const { log, clock } = proxy({ delayMs: 0 });
    clock.increment(0);
    expect(log.hedges).toBe(1);
  });

  it("an unacknowledged cancel is retried and reported after the last attempt", async () => {
    const { actor, clock, log } = proxy({ copies: 2 }, ["s2"]);
    clock.increment(100);
    await tick();
    actor.send({ type: "RESPONSE", server: "s1" });
    expect(log.cancels).toEqual(["s2"]);
    for (let i = 1; i < CANCEL_ATTEMPTS; i++) {
      actor.send({ type: "CANCEL_FAILED", server: "s2" });
      clock.increment(CANCEL_RETRY_MS);
      expect(log.cancels).toHaveLength(i + 1);
    }
    actor.send({ type: "CANCEL_FAILED", server: "s2" });
    expect(log.reports).toEqual(["s2"]);
    expect(actor.getSnapshot().status).toBe("done");
    expect(actor.getSnapshot().context.unacknowledged).toEqual(["s2"]);
  });

  it("a close cancels every copy, the first included", () => {
    const { actor, log } = proxy();
    actor.send({ type: "CLOSE" });
    expect(log.cancels).toEqual(["s1"]);
    expect(log.records).toMatchObject([{ winner: null }]);
  });

  it("a re-dispatch to a new server (the first one died) adds a copy and keeps the timer", () => {
    const { actor, log, clock } = proxy({ copies: 2 }, ["s9"]);
    actor.send({ type: "DISPATCH", server: "s4" });
    expect(log.sent).toEqual([["s1", 1], ["s4", 2]]);
    clock.increment(100);
    expect(log.hedges).toBe(1);
  });

  it("its snapshot round-trips through JSON and continues identically", async () => {
    const a = proxy();
    a.clock.increment(100);
    await tick();
    const persisted = JSON.parse(JSON.stringify(a.actor.getPersistedSnapshot()));
    const b = createActor(hedgeProxyMachine.provide({ actions: { cancel: () => {}, record: () => {} } }), { snapshot: persisted, input: undefined as never });
    b.start();
    expect(b.getSnapshot().context).toEqual(a.actor.getSnapshot().context);
    b.send({ type: "RESPONSE", server: "s3" });
    a.actor.send({ type: "RESPONSE", server: "s3" });
    expect(b.getSnapshot().value).toEqual(a.actor.getSnapshot().value);
    expect(b.getSnapshot().context.cancelling).toEqual(a.actor.getSnapshot().context.cancelling);
  });
});

describe("hedge budget", () => {
  it("bounds extra copies to ratio x requests + reserve, whatever the order (property)", () => {
    fc.assert(
      fc.property(fc.array(fc.boolean(), { maxLength: 2000 }), (ops) => {
        const b = new HedgeBudget();
        let reqs = 0;
        let extra = 0;
        for (const op of ops) {
          if (op) {
            b.deposit();
            reqs++;
          } else if (b.tryWithdraw()) extra++;
        }
        return extra <= DEFAULT_HEDGE_BUDGET.ratio * reqs + DEFAULT_HEDGE_BUDGET.reserve + 1e-9;
      }),
      { numRuns: 200 },
    );
  });

  it("learns the 95th percentile, uses a fallback before enough samples, and survives JSON", () => {
    const b = new HedgeBudget();
    expect(b.delay("p95")).toBe(DEFAULT_HEDGE_BUDGET.fallbackMs);
    for (let i = 1; i <= 100; i++) b.observe(i);
    expect(b.delay("p95")).toBe(95);
    expect(b.delay(7)).toBe(7);
    const c = HedgeBudget.fromJSON(JSON.parse(JSON.stringify(b.toJSON())));
    expect(c.p95()).toBe(95);
    expect(c.tokens).toBe(b.tokens);
    // The ring keeps the latest `window` samples, in order, across a round trip.
    for (let i = 0; i < 300; i++) b.observe(1000);
    expect(HedgeBudget.fromJSON(b.toJSON()).p95()).toBe(1000);
  });
});
