import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { byEpoch, FencedError, FencedKv } from "../../src/runtime/fenced-kv.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";

let ns: NatsServer;
let rt: Runtime;
beforeAll(async () => {
  ns = await startNats();
  rt = await runtimeFor(ns);
});
afterAll(async () => {
  await rt.close();
  await ns.cleanup();
});

describe("fenced writes (I5)", () => {
  it("an old primary cannot write over a record a newer epoch wrote, and learns it is fenced", async () => {
    const old = new FencedKv(rt.kv.sessions);
    const young = new FencedKv(rt.kv.sessions);
    await old.write("s1", { epoch: 1, taken: 1 }, byEpoch(1));
    await young.write("s1", { epoch: 2, taken: 5 }, byEpoch(2)); // unknown revision: reads, overwrites epoch 1
    await expect(old.write("s1", { epoch: 1, taken: 2 }, byEpoch(1))).rejects.toBeInstanceOf(FencedError);
    expect((await rt.kv.sessions.get("s1"))!.json<{ taken: number }>().taken).toBe(5);
  });

  it("a newer epoch overwrites what an older one wrote after it (a paused primary's late write)", async () => {
    const young = new FencedKv(rt.kv.sessions);
    await young.write("s2", { epoch: 3, taken: 1 }, byEpoch(3));
    await rt.kv.sessions.put("s2", new TextEncoder().encode(JSON.stringify({ epoch: 2, taken: 0 })));
    await young.write("s2", { epoch: 3, taken: 2 }, byEpoch(3));
    expect((await rt.kv.sessions.get("s2"))!.json<{ epoch: number; taken: number }>()).toEqual({ epoch: 3, taken: 2 });
  });

  it("restart data never goes back: an older record is skipped, not written", async () => {
    const a = new FencedKv(rt.kv.restart);
    const b = new FencedKv(rt.kv.restart);
    const newer = (mine: { n: number }) => (stored: unknown) => (!stored || mine.n >= (stored as { n: number }).n ? "overwrite" : "skip");
    await a.write("x.client", { n: 5, data: "five" }, newer({ n: 5 }));
    expect(await b.write("x.client", { n: 3, data: "three" }, newer({ n: 3 }))).toBe("skipped");
    expect((await rt.kv.restart.get("x.client"))!.json<{ data: string }>().data).toBe("five");
  });
});
