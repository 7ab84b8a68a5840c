/**
 * A takeover that replays more than its byte bounds hold (docs/design.md §8): the requests past
 * the bounds stay in the table without their payload, and the manager reads each back from the
 * request queue by sequence when it dispatches it. Real managers on one nats-server: the first
 * holds 12 requests of 1 kB, its successor only 4 kB a session; every request is answered with
 * its own payload, and the handler runs each once.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManagerNode } from "../../src/actors/manager.js";
import { TandemServer } from "../../src/actors/server.js";
import { TandemClient } from "../../src/actors/client.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { eventually, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";

let ns: NatsServer;
const cleanups: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  ns = await startNats();
}, 60_000);

afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
  await ns?.cleanup();
});

const runtime = async (node: string, over: Record<string, unknown> = {}): Promise<Runtime> => {
  const r = await runtimeFor(ns, { node, ...over }, node);
  cleanups.push(() => r.close());
  return r;
};

describe("replay past the byte bounds", () => {
  it("requests kept without their payload are read back from the queue and dispatched, each answered once with its own payload", async () => {
    const rt1 = await runtime("m1");
    const m1 = new ManagerNode(rt1);
    m1.start();
    await m1.waitPrimary();
    // The successor holds at most 4 kB of one session: on replay, about four of the twelve.
    const rt2 = await runtime("m2", { maxSessionBytes: 4096 });
    const m2 = new ManagerNode(rt2);
    m2.start();
    cleanups.push(() => m2.stop());

    // The server holds the window's four until the takeover is done; the other eight wait in the table.
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const seen: number[] = [];
    const server = await TandemServer.start(await runtime("s"), {
      service: "evict",
      handler: async (req) => {
        await gate;
        const p = req.payload as { i: number; pad: string };
        seen.push(p.i);
        return { i: p.i, padLength: p.pad.length };
      },
    });
    cleanups.push(() => server.stop());
    const client = await TandemClient.connect(await runtime("c"));
    cleanups.push(() => client.close());
    const s = await client.open("evict", { window: 4, maxPending: 100 });
    const answers = Array.from({ length: 12 }, (_, i) => s.request({ i, pad: "x".repeat(1000) }));
    const pending = (m: ManagerNode) => m.status().services.find((x) => x.service === "evict")?.pending ?? 0;
    await eventually(() => pending(m1) >= 12 || null, "the primary holds the twelve requests");
    expect(m1.status().heldBytes).toBeGreaterThan(12_000);

    await m1.stop();
    await m2.waitPrimary();
    await eventually(() => pending(m2) >= 12 || null, "the successor replayed the twelve requests");
    // It holds the payloads of no more than its bound: the others it must read back.
    expect(m2.status().heldBytes).toBeLessThanOrEqual(4096);
    open();
    const got = await Promise.all(answers);
    expect(got).toEqual(Array.from({ length: 12 }, (_, i) => ({ i, padLength: 1000 })));
    expect([...seen].sort((a, b) => a - b)).toEqual(Array.from({ length: 12 }, (_, i) => i));
  }, 60_000);
});
