/**
 * The hedging budget and the learned delay survive a manager failover: they travel in the
 * cursor of every backup, so the standby that takes over hedges as the old primary would.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManagerNode } from "../../src/actors/manager.js";
import { TandemServer, type Handler } from "../../src/actors/server.js";
import { TandemClient } from "../../src/actors/client.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { eventually, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";

let ns: NatsServer;
let rtA: Runtime;
let rtB: Runtime;
let a: ManagerNode;
let b: ManagerNode;
const servers: TandemServer[] = [];

beforeAll(async () => {
  ns = await startNats();
  rtA = await runtimeFor(ns, { node: "mA" }, "a");
  rtB = await runtimeFor(ns, { node: "mB" }, "b");
  a = new ManagerNode(rtA);
  a.start();
  await a.waitPrimary();
  b = new ManagerNode(rtB);
  b.start();
});

afterAll(async () => {
  for (const s of servers) await s.stop();
  await b.stop();
  await a.stop();
  await rtA.close();
  await rtB.close();
  await ns.cleanup();
});

describe("hedging across a failover", () => {
  it("the standby takes over the service's hedging budget and learned p95", async () => {
    let i = 0;
    const handler: Handler = async (req) => {
      await new Promise((r) => setTimeout(r, ++i % 10 === 0 ? 60 : 2));
      return req.n;
    };
    for (let k = 0; k < 2; k++) servers.push(await TandemServer.start(rtA, { service: "hf", handler }));
    const client = await TandemClient.connect(rtA);
    const s = await client.open("hf", { hedge: { copies: 2, after: "p95" } });
    for (let n = 0; n < 60; n++) await s.request(n);
    const before = a.status().services.find((x) => x.service === "hf")!.hedging!;
    expect(before.samples).toBeGreaterThanOrEqual(60);
    // The standby holds it from the backups ...
    await eventually(() => (b.backup.cursor?.hedging?.hf?.requests ?? 0) >= before.requests, "the standby's backup to carry the hedging state");
    // ... and has it as its own once it takes over.
    await a.stop();
    await b.waitPrimary();
    const after = b.status().services.find((x) => x.service === "hf")!.hedging!;
    expect(after.requests).toBeGreaterThanOrEqual(before.requests);
    expect(after.samples).toBe(before.samples);
    expect(after.p95Ms).toBe(before.p95Ms);
    expect(after.extra).toBe(before.extra);
    // And the session still hedges under the new primary.
    for (let n = 0; n < 5; n++) await s.request(n);
    await client.close();
  });
});
