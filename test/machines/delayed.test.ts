/**
 * Delayed requests (issue 17, item 3) on the pure core and a simulated clock: stored at once,
 * dispatched no earlier than asked, holding their place in the session's order, and a new
 * primary replaying the same queue waits the same (the time travels in the request).
 */
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { ManagerCore, type Effect } from "../../src/machines/managerCore.js";

const LIMITS = { maxPending: 50, maxPayload: 1000, serverTimeoutMs: 10_000, ackTimeoutMs: 200 };
const dispatches = (fx: Effect[]) => fx.filter((e) => e.type === "dispatch").map((e) => (e as { n: number }).n);

let seq = 0;
const req = (n: number, extra: Record<string, unknown> = {}) => ({ seq: ++seq, client: "c", session: "A", n, kind: "request" as const, payload: { n }, size: 10, ...extra });
const answer = (core: ManagerCore, n: number, now: number) => {
  const k = "k";
  return core.onResponse({ seq: ++seq, client: "c", session: "A", n, server: "s1", k, ok: n, size: 10 } as never, now, false);
};

function setup() {
  const core = new ManagerCore(LIMITS, 1);
  core.registerServer("s1", "svc", 4, 0);
  core.open({ session: "A", client: "c", service: "svc", maxPending: 50 }, 0);
  return core;
}

describe("delayed requests", () => {
  it("are stored at once and dispatched at their time, not before", () => {
    const core = setup();
    expect(dispatches(core.onRequest(req(1, { notBefore: 1000 }), 0, false))).toEqual([]);
    expect(core.sessions.get("A")!.requests.has(1)).toBe(true);
    expect(dispatches(core.tick(999))).toEqual([]);
    expect(dispatches(core.tick(1000))).toEqual([1]);
  });

  it("hold their place: a request sent after a delayed one waits for it", () => {
    const core = setup();
    core.onRequest(req(1, { notBefore: 500 }), 0, false);
    expect(dispatches(core.onRequest(req(2), 10, false))).toEqual([]);
    expect(dispatches(core.tick(400))).toEqual([]);
    expect(dispatches(core.tick(500))).toEqual([1]);
  });

  it("property: whatever the delays and the clock's steps, no request is dispatched before its time or out of order, and each is dispatched", () => {
    fc.assert(
      fc.property(fc.array(fc.option(fc.integer({ min: 0, max: 5000 }), { nil: undefined }), { minLength: 1, maxLength: 8 }), fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 60 }), (delays, steps) => {
        const core = setup();
        const notBefore = new Map<number, number>();
        let t = 0;
        const sent: Array<[number, number]> = [];
        const step = (fx: Effect[]): void => {
          for (const n of dispatches(fx)) {
            sent.push([n, t]);
            expect(t).toBeGreaterThanOrEqual(notBefore.get(n) ?? 0);
            core.dispatchAcked("A", n);
            step(answer(core, n, t));
          }
        };
        delays.forEach((d, i) => {
          if (d !== undefined) notBefore.set(i + 1, d);
          step(core.onRequest(req(i + 1, d !== undefined ? { notBefore: d } : {}), 0, false));
        });
        for (const dt of [...steps, 6000]) {
          t += dt;
          core.heartbeat("s1", t);
          step(core.tick(t));
        }
        expect(sent.map(([n]) => n)).toEqual(delays.map((_, i) => i + 1));
      }),
      { numRuns: 200 },
    );
  });
});
