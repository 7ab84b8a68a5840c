/**
 * The manager's cursors keep pulling whatever the queue records weigh. nats.js 3.4's consume()
 * with a byte budget asks for 100 messages too; a pull that ends by count leaves its unused
 * bytes counted until it expires, so its refills asked for a few kB, and a batch record larger
 * than that was refused (409, message size exceeds max bytes). consume() then waits for two
 * missed heartbeats (2 s) before it pulls again: when every open pull had been refused, every
 * request of a busy windowed session stalled for 2 to 3 s (one bench run in three). The cursors
 * now pull by count (pullMessages), which nats-server never refuses for size.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TandemClient } from "../../src/actors/client.js";
import type { ManagerNode } from "../../src/actors/manager.js";
import { pullMessages } from "../../src/actors/manager/term.js";
import { TandemServer } from "../../src/actors/server.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { primaryManager, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";

let ns: NatsServer;
let rt: Runtime;
let mgr: ManagerNode;
let server: TandemServer;
let client: TandemClient;

beforeAll(async () => {
  ns = await startNats();
  rt = await runtimeFor(ns);
  mgr = await primaryManager(rt);
  server = await TandemServer.start(rt, { service: "echo", capacity: 256, handler: async (req) => ({ size: JSON.stringify(req.payload).length }) });
  client = await TandemClient.connect(rt);
}, 60_000);

afterAll(async () => {
  await client?.close();
  await server?.stop();
  await mgr?.stop();
  await rt?.close();
  await ns?.cleanup();
});

describe("the manager's cursors", () => {
  it("pull as many messages as the largest would fit in 32 MiB, 16 to 128", () => {
    expect(pullMessages(1024 * 1024)).toBe(32);
    expect(pullMessages(256 * 1024)).toBe(128);
    expect(pullMessages(8 * 1024 * 1024)).toBe(16);
    expect(pullMessages(undefined)).toBe(32);
  });

  it("are never refused a pull by windowed sessions whose records grow and shrink, and no round trip waits a second", async () => {
    const took: number[] = [];
    // Windows of 4 to 64, one after another: the batch records a turn stores grow and shrink
    // with the window and the request sizes (300 B to 12 kB).
    for (const window of [4, 64, 16, 32, 8, 64]) {
      const s = await client.open("echo", { window, maxPending: 1000 });
      const until = performance.now() + 700;
      await Promise.all(
        Array.from({ length: window }, async (_, k) => {
          for (let i = 0; performance.now() < until; i++) {
            const t = performance.now();
            await s.request({ k, pad: "x".repeat((i + k) % 5 === 0 ? 12_000 : 300) });
            took.push(performance.now() - t);
          }
        }),
      );
      await s.close();
    }
    took.sort((a, b) => a - b);
    const longest = took[took.length - 1]!;
    const refused = mgr.status().refusedPulls;
    console.log(`${took.length} round trips at windows 4-64: p50 ${took[took.length >> 1]!.toFixed(1)} ms, longest ${longest.toFixed(0)} ms; pulls refused: ${refused.req} req, ${refused.resp} resp`);
    expect(took.length).toBeGreaterThan(2000);
    expect(refused).toEqual({ req: 0, resp: 0 });
    expect(longest).toBeLessThan(1000);
  });
});
