/**
 * The one retry helper (src/runtime/backoff.ts): the first attempt runs directly, then waits grow
 * by the factor up to the cap; `while`, `forMs` and `fatal` end it with the last error.
 */
import { describe, expect, it } from "vitest";
import { pollUntil, withBackoff } from "../../src/runtime/backoff.js";

describe("withBackoff", () => {
  it("tries until it succeeds, waiting longer each time up to the cap", async () => {
    const at: number[] = [];
    const t0 = performance.now();
    const v = await withBackoff(
      async (attempt) => {
        at.push(performance.now() - t0);
        if (attempt < 5) throw new Error(`no ${attempt}`);
        return attempt;
      },
      { initialMs: 20, factor: 2, maxMs: 60 },
    );
    expect(v).toBe(5);
    const gaps = at.slice(1).map((t, i) => t - at[i]!);
    // 20, 40, 60 (capped), 60 ms: never shorter; later only by the timers' own lateness.
    [20, 40, 60, 60].forEach((want, i) => {
      expect(gaps[i]).toBeGreaterThanOrEqual(want - 2);
      expect(gaps[i]).toBeLessThan(want + 40);
    });
  });

  it("a success at once costs no wait, and the failures are told with their attempt numbers", async () => {
    const seen: number[] = [];
    expect(await withBackoff(async () => "at once", { onFailure: (_e, a) => seen.push(a) })).toBe("at once");
    let k = 0;
    await withBackoff(async () => (++k < 3 ? Promise.reject(new Error("x")) : "third"), { initialMs: 1, onFailure: (_e, a) => seen.push(a) });
    expect(seen).toEqual([1, 2]);
  });

  it("stops with the last error when `while` no longer holds, `forMs` passed, or the error is fatal", async () => {
    let go = true;
    let n = 0;
    const stopped = withBackoff(
      async () => {
        n++;
        if (n === 3) go = false;
        throw new Error(`fail ${n}`);
      },
      { initialMs: 1, while: () => go },
    );
    await expect(stopped).rejects.toThrow("fail 3");
    const t0 = performance.now();
    await expect(withBackoff(() => Promise.reject(new Error("late")), { initialMs: 10, maxMs: 10, forMs: 100 })).rejects.toThrow("late");
    expect(performance.now() - t0).toBeLessThan(400);
    let calls = 0;
    await expect(withBackoff(() => (calls++, Promise.reject(new Error("refused"))), { fatal: () => true })).rejects.toThrow("refused");
    expect(calls).toBe(1);
  });
});

describe("pollUntil", () => {
  it("resolves once the condition holds, and names what it waited for when it times out", async () => {
    let k = 0;
    await pollUntil(() => ++k >= 3, "three looks", 1000, 5);
    expect(k).toBe(3);
    await expect(pollUntil(() => false, "nothing", 50, 10)).rejects.toThrow("waiting for nothing");
  });
});
