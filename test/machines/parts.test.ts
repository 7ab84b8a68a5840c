import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { splitToFit } from "../../src/machines/parts.js";

describe("splitToFit", () => {
  it("keeps every item that fits, in order, in parts within the room; the rest are oversized", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 500 }), { maxLength: 200 }), fc.integer({ min: 1, max: 2000 }), (sizes, room) => {
        const items = sizes.map((size, i) => ({ i, size }));
        const { parts, oversized } = splitToFit(items, (x) => x.size, room);
        expect(parts.length).toBeGreaterThanOrEqual(1);
        for (const p of parts) expect(p.reduce((t, x) => t + x.size + 1, 0) - 1).toBeLessThanOrEqual(room);
        expect(parts.flat().map((x) => x.i)).toEqual(items.filter((x) => x.size <= room).map((x) => x.i));
        expect(oversized.map((x) => x.i)).toEqual(items.filter((x) => x.size > room).map((x) => x.i));
        // No part could have taken the next part's first item (parts are as full as they may be).
        for (let k = 0; k + 1 < parts.length; k++) {
          const used = parts[k]!.reduce((t, x) => t + x.size + 1, 0);
          expect(used + parts[k + 1]![0]!.size + 1).toBeGreaterThan(room);
        }
      }),
      { numRuns: 300 },
    );
  });

  it("an empty list is one empty part (an empty backup or restart is still sent)", () => {
    expect(splitToFit([], () => 1, 10)).toEqual({ parts: [[]], oversized: [] });
  });
});
