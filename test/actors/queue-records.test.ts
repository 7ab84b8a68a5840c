/**
 * Queue records as the manager reads them (src/actors/protocol.ts), without NATS: a batch record
 * of requests or responses is checked element by element (I7), and a request is found inside
 * its batch when the manager reads it back by stream sequence (a payload evicted past the byte
 * bounds, a dead-letter copy).
 */
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { parseRequestMsg, parseResponseMsg, requestIn } from "../../src/actors/protocol.js";
import { DispatchKeys } from "../../src/runtime/dispatch-key.js";
import { encode, Names } from "../../src/runtime/wire.js";

const names = new Names("tandem");
const reqSubject = names.req("c1", "s1");
const msg = (subject: string, body: unknown) => ({ subject, data: typeof body === "string" ? new TextEncoder().encode(body) : encode(body) });

describe("request batch records", () => {
  it("each element is a request of its own; a bad one is refused alone, with its number when it has one", () => {
    const p = parseRequestMsg(names, msg(reqSubject, { batch: [{ n: 3, payload: "a", taken: 2 }, { n: "four", payload: 1 }, { payload: "no n" }, { n: 5, payload: { x: 1 }, kind: "update" }] }));
    expect("type" in p && p.type).toBe("batch");
    if (!("type" in p) || p.type !== "batch") return;
    expect(p.items.map((i) => ("error" in i ? `refused ${i.error.code} ${i.n ?? "-"}` : `${i.request.n} ${i.request.kind} taken ${i.taken ?? "-"}`))).toEqual([
      "3 request taken 2",
      "refused TANDEM_MALFORMED -",
      "refused TANDEM_MALFORMED -",
      "5 update taken -",
    ]);
    // A small record gives each element an equal share of its bytes: they add up to the record.
    const sizes = p.items.flatMap((i) => ("type" in i ? [i.size] : []));
    expect(sizes.every((x) => x === sizes[0])).toBe(true);
  });

  it("a large record measures each element's payload: a big one cannot hide behind small ones", () => {
    const big = "x".repeat(9000);
    const p = parseRequestMsg(names, msg(reqSubject, { batch: [{ n: 1, payload: big }, { n: 2, payload: "s" }] }));
    if (!("type" in p) || p.type !== "batch") throw new Error("not a batch");
    expect(p.items.map((i) => ("type" in i ? i.size : -1))).toEqual([encode(big).length, encode("s").length]);
  });

  it("an envelope that does not fit is refused whole", () => {
    for (const body of [{ batch: [] }, { batch: "x" }, { batch: Array.from({ length: 65 }, (_, i) => ({ n: i + 1, payload: i })) }]) {
      const p = parseRequestMsg(names, msg(reqSubject, body));
      expect("error" in p && p.error.code, JSON.stringify(body).slice(0, 40)).toBe("TANDEM_MALFORMED");
    }
  });

  it("property: requestIn finds request n in a batch record with its own bytes, and nothing for a number it does not hold", () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: 200 }), { minLength: 1, maxLength: 64 }), fc.jsonValue({ maxDepth: 2 }), fc.integer({ min: 1, max: 200 }), (ns, payload, probe) => {
        const elements = ns.map((n) => ({ n, payload: [n, payload] }));
        const record = msg(reqSubject, { batch: elements });
        for (const e of elements) {
          const found = requestIn(names, record, e.n);
          expect(found && "type" in found.parsed && found.parsed.type === "request" ? found.parsed.request.n : null).toBe(e.n);
          expect(JSON.parse(new TextDecoder().decode(found!.data))).toEqual(JSON.parse(JSON.stringify(e)));
        }
        if (!ns.includes(probe)) expect(requestIn(names, record, probe)).toBeNull();
        // A record of one request stands for itself.
        const single = msg(reqSubject, elements[0]);
        expect(requestIn(names, single, elements[0]!.n)?.data).toEqual(single.data);
      }),
      { numRuns: process.env.TANDEM_DEEP === "1" ? 1000 : 100 },
    );
  });
});

describe("response batch records", () => {
  const secret = Buffer.alloc(32, 3);
  it("each element's dispatch key is checked for the server whose subject it came on", () => {
    const keys = new DispatchKeys(secret);
    const k1 = keys.give("s1", 1, "srvA");
    const k2 = keys.give("s1", 2, "srvA");
    const kB = keys.give("s1", 3, "srvB"); // given to another server
    const p = parseResponseMsg(names, msg(names.resp("srvA", "s1"), { batch: [{ n: 1, k: k1, ok: "one" }, { n: 3, k: kB, ok: "not yours" }, { n: 2, k: k2, restart: { at: 2 } }, { n: -1 }] }), keys);
    if (!("type" in p) || p.type !== "batch") throw new Error("not a batch");
    expect(p.items.map((i) => ("error" in i ? i.error.code : `${i.type} ${i.body.n}`))).toEqual(["response 1", "TANDEM_FORGED", "checkpoint 2", "TANDEM_MALFORMED"]);
  });
});
