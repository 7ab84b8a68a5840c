/**
 * A delivery accepted while the client's hand-over pump is busy must be handed at once (a bench
 * run stalled six of 128 sessions 5.5 s on it: the pump returned without looking at its buffer
 * again, and the delivery waited for the stall watchdog). White-box: the second delivery is
 * handed to the client in the window the race needs, through its own accept().
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ManagerNode } from "../../src/actors/manager.js";
import { TandemServer } from "../../src/actors/server.js";
import { TandemClient } from "../../src/actors/client.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { primaryManager, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";

let ns: NatsServer;
let rt: Runtime;
let mgr: ManagerNode;
let server: TandemServer;

beforeAll(async () => {
  ns = await startNats();
  rt = await runtimeFor(ns, { stallMs: 60_000 }); // the watchdog must not be what hands it over
  mgr = await primaryManager(rt);
  // Request 2's real answer comes late, so only the delivery the test hands in can answer it.
  server = await TandemServer.start(rt, { service: "svc", handler: async (r) => (r.n === 2 ? new Promise((res) => setTimeout(() => res("real"), 3000)) : r.payload) });
}, 60_000);

afterAll(async () => {
  await server?.stop();
  await mgr?.stop();
  await rt?.close();
  await ns?.cleanup();
});

describe("the client's hand-over pump", () => {
  it("hands a delivery that arrives while it is busy handing the one before", async () => {
    const c = await TandemClient.connect(rt);
    const s = await c.open("svc");
    let second: Promise<unknown> | null = null;
    const t0 = performance.now();
    await s.request("first").then(() => {
      // Still inside the pump's turn: the next request carries the first receipt, and its
      // delivery is accepted before the pump looks again.
      second = s.send("second").then(({ response }) => response);
      s.accept({ epoch: s.epoch, session: s.id, n: 2, server: "test", ok: "handed at once" });
    });
    const r = (await second!) as { ok: boolean; value: unknown };
    expect(r.value).toBe("handed at once");
    expect(performance.now() - t0).toBeLessThan(2000); // not the late real answer, not the watchdog
    await c.close();
  });
});
