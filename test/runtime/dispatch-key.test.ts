/** The manager's remembered dispatch keys answer exactly as computing the HMAC does. */
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { dispatchKey, DispatchKeys } from "../../src/runtime/dispatch-key.js";

const secret = Buffer.alloc(32, 7);

describe("DispatchKeys", () => {
  it("a key given is the HMAC; its check passes once from memory and again by computing", () => {
    const keys = new DispatchKeys(secret);
    const k = keys.give("s1", 4, "srv");
    expect(k).toBe(dispatchKey(secret, "s1", 4, "srv"));
    expect(keys.check(k, "s1", 4, "srv")).toBe(true);
    expect(keys.check(k, "s1", 4, "srv")).toBe(true); // forgotten after its check: computed
    expect(new DispatchKeys(secret).check(k, "s1", 4, "srv")).toBe(true); // a new term computes it
  });

  it("property: check(k) is true exactly when k is the HMAC, whatever was given and however small the bound", () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ session: fc.constantFrom("a", "b"), n: fc.integer({ min: 1, max: 5 }), server: fc.constantFrom("x", "y"), give: fc.boolean(), forged: fc.boolean() }), { maxLength: 60 }),
        fc.integer({ min: 1, max: 8 }),
        (steps, bound) => {
          const keys = new DispatchKeys(secret, bound);
          for (const st of steps) {
            const real = dispatchKey(secret, st.session, st.n, st.server);
            if (st.give) expect(keys.give(st.session, st.n, st.server)).toBe(real);
            else expect(keys.check(st.forged ? `${real.slice(0, 21)}${real.endsWith("A") ? "B" : "A"}` : real, st.session, st.n, st.server)).toBe(!st.forged);
          }
        },
      ),
      { numRuns: process.env.TANDEM_DEEP === "1" ? 2000 : 200 },
    );
  });
});
