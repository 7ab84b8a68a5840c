/**
 * The batch body of acknowledgements (runtime/reply-batch.ts): what a responder packs, the requester
 * reads back byte for byte, and hostile bodies (cut, corrupted, random) never throw and never
 * yield an entry that was not whole in the body.
 */
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { batchSubject, coalescable, decodeReplyBatch, encodeReplyBatch, entryBytes } from "../../src/runtime/reply-batch.js";

const id = fc.stringMatching(/^[0-9a-z]{1,13}$/);
const entry = fc.record({ id, data: fc.uint8Array({ maxLength: 300 }) });
const entries = fc.array(entry, { minLength: 1, maxLength: 40 });
const plain = (es: Array<{ id: string; data: Uint8Array }>) => es.map((e) => ({ id: e.id, data: Array.from(e.data) }));

describe("batches of acknowledgements", () => {
  it("decode(encode(entries)) gives the entries back, each reply's bytes exactly, with no problem", () => {
    fc.assert(
      fc.property(entries, (es) => {
        const body = encodeReplyBatch(es);
        expect(body.length).toBe(es.reduce((s, e) => s + entryBytes(e.id, e.data), 0));
        const d = decodeReplyBatch(body);
        expect(d.problem).toBeNull();
        expect(plain(d.entries)).toEqual(plain(es));
      }),
      { numRuns: 300 },
    );
  });

  it("a body cut anywhere yields only whole entries from its start, and says why it stopped unless the cut fell between entries", () => {
    fc.assert(
      fc.property(entries, fc.nat(), (es, at) => {
        const body = encodeReplyBatch(es);
        const cut = at % body.length;
        const d = decodeReplyBatch(body.subarray(0, cut));
        const ends: number[] = [];
        let sum = 0;
        for (const e of es) ends.push((sum += entryBytes(e.id, e.data)));
        const whole = ends.filter((end) => end <= cut).length;
        expect(plain(d.entries)).toEqual(plain(es.slice(0, whole)));
        expect(d.problem === null).toBe(cut > 0 && ends.includes(cut));
      }),
      { numRuns: 300 },
    );
  });

  it("random or corrupted bodies never throw, and every entry read lies inside the body", () => {
    const corrupted = fc.tuple(entries, fc.nat(), fc.integer({ min: 0, max: 255 })).map(([es, at, byte]) => {
      const body = encodeReplyBatch(es).slice();
      body[at % body.length] = byte;
      return body;
    });
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 200 }), corrupted), (body) => {
        const d = decodeReplyBatch(body);
        const total = d.entries.reduce((s, e) => s + entryBytes(e.id, e.data), 0);
        expect(total).toBeLessThanOrEqual(body.length);
        if (d.problem === null) expect(total).toBe(body.length);
        for (const e of d.entries) expect(e.id).toMatch(/^[0-9a-z]{1,13}$/);
      }),
      { numRuns: 500 },
    );
  });

  it("the empty body and oversized lengths are problems, not entries", () => {
    expect(decodeReplyBatch(new Uint8Array(0))).toEqual({ entries: [], problem: "the batch is empty" });
    const huge = new TextEncoder().encode("a 999999999\n{}");
    expect(decodeReplyBatch(huge).entries).toEqual([]);
    expect(decodeReplyBatch(huge).problem).toMatch(/999999999 bytes announced, 2 left/);
    expect(decodeReplyBatch(new TextEncoder().encode("a 1x\n{")).problem).toMatch(/not a number/);
    expect(decodeReplyBatch(new TextEncoder().encode("A.b 1\n{")).problem).toMatch(/not a request id/);
  });

  it("coalescable reply subjects carry the requester's inbox and the request id; others are not", () => {
    expect(coalescable("_INBOX_manager.ABC123.T.1z")).toEqual({ inbox: "_INBOX_manager.ABC123", id: "1z" });
    expect(batchSubject("_INBOX_manager.ABC123", "srv1")).toBe("_INBOX_manager.ABC123.B.srv1");
    for (const s of ["_INBOX.ABC.DEF", "_INBOX.ABC.1z", "T.1z", "_INBOX.ABC.T.", "_INBOX.ABC.T.A-b", "_INBOX.ABC.T.1.2"]) expect(coalescable(s), s).toBeNull();
  });
});
