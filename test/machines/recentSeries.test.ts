import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { RecentSeries } from "../../src/machines/recentSeries.js";

describe("the recent series (the dashboard's charts)", () => {
  it("counts per second, with errors and quantiles, and zero seconds between", () => {
    const s = new RecentSeries(5);
    for (let i = 1; i <= 100; i++) s.add(10_000 + i, i, i % 10 !== 0);
    s.add(12_500, 7, true);
    const v = s.view(12_900);
    expect(v.map((x) => x.at)).toEqual([8000, 9000, 10_000, 11_000, 12_000]);
    expect(v[2]).toEqual({ at: 10_000, served: 100, errors: 10, p50Ms: 51, p99Ms: 100 });
    expect(v[3]).toEqual({ at: 11_000, served: 0, errors: 0, p50Ms: null, p99Ms: null });
    expect(v[4]).toMatchObject({ served: 1, p50Ms: 7 });
  });

  it("forgets what is older than its window", () => {
    const s = new RecentSeries(3);
    s.add(1000, 1, true);
    s.add(5000, 2, true);
    expect(s.view(5000).reduce((a, x) => a + x.served, 0)).toBe(1);
  });

  it("property: served adds up to what was added inside the window, samples stay bounded", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 20_000 }), fc.float({ min: 0, max: 1000, noNaN: true }), fc.boolean()), { maxLength: 300 }), (adds) => {
        const s = new RecentSeries(10, 8);
        adds.sort((a, b) => a[0] - b[0]);
        for (const [t, ms, ok] of adds) s.add(t, ms, ok);
        const now = adds.length ? adds[adds.length - 1]![0] : 0;
        const v = s.view(now);
        const inWindow = adds.filter(([t]) => Math.floor(t / 1000) > Math.floor(now / 1000) - 10);
        expect(v.reduce((a, x) => a + x.served, 0)).toBe(inWindow.length);
        expect(v.reduce((a, x) => a + x.errors, 0)).toBe(inWindow.filter(([, , ok]) => !ok).length);
        for (const x of v) if (x.p50Ms !== null) expect(x.p99Ms!).toBeGreaterThanOrEqual(x.p50Ms);
      }),
      { numRuns: 200 },
    );
  });
});
