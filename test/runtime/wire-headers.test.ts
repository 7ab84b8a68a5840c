/**
 * Tandem's outgoing headers write the bytes nats.js's own would, and read back the same: checked
 * against nats.js's `headers()` on generated header sets (fast-check), repeated keys included.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { headers as natsHeaders, Match, MsgHdrsImpl, type MsgHdrs } from "@nats-io/transport-node";
import { WireHeaders } from "../../src/runtime/wire-headers.js";
import { Header, makeHeaders } from "../../src/runtime/wire.js";

const td = new TextDecoder();
const key = fc.constantFrom<string>(...Object.values(Header), "Nats-Msg-Id", "Nats-Trace-Dest");
const value = fc.string({ maxLength: 40 }).filter((v) => !/[\r\n]/.test(v));

describe("WireHeaders", () => {
  it("encode the same bytes as nats.js's headers for any sequence of appends and sets", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom("append", "set"), key, value), { maxLength: 30 }), (ops) => {
        const ours = new WireHeaders();
        const theirs = natsHeaders();
        for (const [op, k, v] of ops) {
          ours[op](k, v);
          theirs[op](k, v);
        }
        expect(td.decode(ours.encode())).toBe(td.decode((theirs as MsgHdrsImpl).encode()));
        for (const k of theirs.keys()) {
          expect(ours.get(k)).toBe(theirs.get(k));
          expect(ours.values(k)).toEqual(theirs.values(k));
          expect(ours.last(k)).toBe(theirs.last(k));
        }
        expect(ours.keys()).toEqual(theirs.keys());
      }),
      { numRuns: 300 },
    );
  });

  it("read back through nats.js's decoder to what was written; a batch's request numbers in order", () => {
    const h = makeHeaders({ session: "s1", request: 7, epoch: 3, kind: "response", traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" });
    for (const n of [8, 9, 10]) h.append(Header.Request, String(n));
    h.set("Nats-Msg-Id", "s1.7+4");
    const back: MsgHdrs = MsgHdrsImpl.decode((h as WireHeaders).encode());
    expect(back.values(Header.Request)).toEqual(["7", "8", "9", "10"]);
    expect(back.get(Header.Session)).toBe("s1");
    expect(back.get("nats-msg-id", Match.IgnoreCase)).toBe("s1.7+4");
    expect(h.get("tandem-kind", Match.IgnoreCase)).toBe("response");
  });

  it("refuse a value with a line break, as nats.js does (a header cannot smuggle another)", () => {
    expect(() => makeHeaders({ session: "s\r\nTandem-Kind: forged" })).toThrow(/cannot contain/);
    expect(() => new WireHeaders().append("Bad Key", "v")).toThrow(/not a header name/);
  });
});
