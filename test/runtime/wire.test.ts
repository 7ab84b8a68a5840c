import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { decode, encode, MAX_JSON_DEPTH, nestsDeeperThan } from "../../src/runtime/wire.js";

/** Nesting depth of a JSON value: objects and arrays count a level each. */
function depthOf(v: unknown): number {
  if (Array.isArray(v)) return 1 + Math.max(0, ...v.map(depthOf));
  if (v !== null && typeof v === "object") return 1 + Math.max(0, ...Object.values(v).map(depthOf));
  return 0;
}

describe("JSON depth limit (hostile-input issue: records thousands of levels deep crashed managers)", () => {
  it("the byte scan agrees with the value's depth, whatever brackets and escapes its strings hold", () => {
    const strings = fc.oneof(fc.string(), fc.constantFrom("[", "]", "{", "}", '\\"[', '"{"', "\\\\", "[[{{"));
    const value = fc.letrec((tie) => ({
      v: fc.oneof({ depthSize: "small" }, strings, fc.integer(), fc.boolean(), fc.constant(null), fc.array(tie("v"), { maxLength: 3 }), fc.dictionary(strings, tie("v"), { maxKeys: 3 })),
    })).v;
    fc.assert(
      fc.property(value, fc.integer({ min: 0, max: 8 }), (v, limit) => {
        expect(nestsDeeperThan(encode(v), limit)).toBe(depthOf(v) > limit);
      }),
      { numRuns: 500 },
    );
  });

  it("decode refuses what nests deeper than the limit with TANDEM_MALFORMED, and reads what does not", () => {
    const deep = new TextEncoder().encode("[".repeat(5000) + "]".repeat(5000));
    expect(() => decode(deep)).toThrow(expect.objectContaining({ code: "TANDEM_MALFORMED", message: expect.stringMatching(/deeper than 64/) }));
    const atLimit = "[".repeat(MAX_JSON_DEPTH) + "]".repeat(MAX_JSON_DEPTH);
    expect(depthOf(decode(new TextEncoder().encode(atLimit)))).toBe(MAX_JSON_DEPTH);
  });
});
