/**
 * The turn batcher (src/actors/batches.ts) without NATS: what a session publishes in one turn of
 * the event loop goes as batches, the first at once; bounded in count and bytes; per session.
 */
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { batchRecord, chunks, TurnBatcher } from "../../src/actors/batches.js";
import { MAX_BATCH } from "../../src/actors/schemas.js";

const turn = () => new Promise((r) => setImmediate(r));

function recorder(fail?: (items: number[]) => boolean) {
  const sent: Array<{ key: string; items: number[] }> = [];
  const send = (items: Array<{ key: string; n: number; bytes: number }>) => {
    const ns = items.map((i) => i.n);
    sent.push({ key: items[0]!.key, items: ns });
    return fail?.(ns) ? Promise.reject(new Error(`refused ${ns.join(",")}`)) : Promise.resolve();
  };
  const b = new TurnBatcher<{ key: string; n: number; bytes: number }>(
    (i) => send([i]),
    (is) => send(is),
    (i) => i.bytes,
    () => 1000,
    (i) => i.key,
  );
  return { b, sent };
}

describe("TurnBatcher", () => {
  it("the first of a session's turn goes at once, alone; the rest of the turn as one batch; a later turn starts alone again", async () => {
    const { b, sent } = recorder();
    const done = [1, 2, 3, 4].map((n) => b.push({ key: "s", n, bytes: 10 }));
    expect(sent).toEqual([{ key: "s", items: [1] }]); // nothing waited for the turn to end
    await Promise.all(done);
    expect(sent).toEqual([{ key: "s", items: [1] }, { key: "s", items: [2, 3, 4] }]);
    await turn();
    await b.push({ key: "s", n: 5, bytes: 10 });
    expect(sent.at(-1)).toEqual({ key: "s", items: [5] });
  });

  it("a push that is not alone (its session has others in flight) waits for the turn's end even when it is the first", async () => {
    const { b, sent } = recorder();
    const done = [b.push({ key: "s", n: 1, bytes: 1 }, false), b.push({ key: "s", n: 2, bytes: 1 }, false), b.push({ key: "t", n: 1, bytes: 1 })];
    expect(sent).toEqual([{ key: "t", items: [1] }]); // t's only one went at once
    await Promise.all(done);
    expect(sent).toEqual([{ key: "t", items: [1] }, { key: "s", items: [1, 2] }]);
  });

  it("sessions are batched apart; a failed batch fails each of its pushes, and only those", async () => {
    const { b, sent } = recorder((ns) => ns.includes(3));
    const outcomes = [
      ["a", 1],
      ["b", 1],
      ["a", 2],
      ["a", 3],
      ["b", 2],
      ["b", 3],
    ].map(([key, n]) => b.push({ key: key as string, n: n as number, bytes: 1 }).then(() => "ok", (e: Error) => e.message));
    // b's 3 is in a batch with b's 2, and a's 3 with a's 2: both batches fail, the firsts do not.
    expect(await Promise.all(outcomes)).toEqual(["ok", "ok", "refused 2,3", "refused 2,3", "refused 2,3", "refused 2,3"]);
    expect(sent.map((s) => `${s.key}:${s.items.join(",")}`).sort()).toEqual(["a:1", "a:2,3", "b:1", "b:2,3"]);
  });

  it("property: each push is sent once, in order per session, in batches of at most 64 and about the byte bound", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.record({ key: fc.constantFrom("a", "b", "c"), bytes: fc.integer({ min: 1, max: 600 }), later: fc.boolean() }), { maxLength: 300 }), async (pushes) => {
        const { b, sent } = recorder();
        const all: Array<Promise<void>> = [];
        for (const [n, p] of pushes.entries()) {
          if (p.later) await turn();
          all.push(b.push({ key: p.key, n, bytes: p.bytes }));
        }
        await Promise.all(all);
        const byKey = (k: string) => sent.filter((s) => s.key === k).flatMap((s) => s.items);
        for (const k of ["a", "b", "c"]) expect(byKey(k)).toEqual([...pushes.entries()].filter(([, p]) => p.key === k).map(([n]) => n));
        for (const s of sent) {
          expect(s.items.length).toBeLessThanOrEqual(MAX_BATCH);
          // Over the bound only by its last item (an item is never split or left behind).
          const bytes = s.items.map((n) => pushes[n]!.bytes);
          if (s.items.length > 1) expect(bytes.slice(0, -1).reduce((x, y) => x + y, 0)).toBeLessThanOrEqual(1000);
        }
      }),
      { numRuns: process.env.TANDEM_DEEP === "1" ? 500 : 60 },
    );
  });

  it("a batch record is the bodies as a JSON array, without decoding them", () => {
    const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
    const rec = batchRecord([enc({ n: 1, payload: "a" }), enc({ n: 2, payload: [1, 2] })]);
    expect(JSON.parse(new TextDecoder().decode(rec))).toEqual({ batch: [{ n: 1, payload: "a" }, { n: 2, payload: [1, 2] }] });
    expect(chunks([1, 2, 3], () => 600, 1000)).toEqual([[1], [2], [3]]);
  });
});
