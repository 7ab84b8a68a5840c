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

describe("hedged copies across a failover", () => {
  it("the new primary cancels the copies still running from before the takeover once one answers (issue 15, item 6)", async () => {
    const rtC = await runtimeFor(ns, { node: "mC" }, "c");
    const c = new ManagerNode(rtC);
    c.start(); // the standby of b, the primary now
    await eventually(() => b.status().standbys.some((x) => x.node === "mC"), "mC to stand by");
    const runs = new Map<string, { started: number; finished: number; aborted: number }>();
    // hc1 answers after 1.5 s; hc2 would take 6 s.
    const slow = (id: string, ms: number): Handler => async (_req, ctx) => {
      const r = runs.get(id) ?? { started: 0, finished: 0, aborted: 0 };
      runs.set(id, r);
      r.started++;
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(resolve, ms);
        ctx.signal.addEventListener("abort", () => {
          clearTimeout(t);
          r.aborted++;
          reject(ctx.signal.reason);
        });
      });
      r.finished++;
      return id;
    };
    const hc = [await TandemServer.start(rtC, { service: "hc", id: "hc1", handler: slow("hc1", 1500) }), await TandemServer.start(rtC, { service: "hc", id: "hc2", handler: slow("hc2", 6000) })];
    servers.push(...hc);
    const client = await TandemClient.connect(rtC);
    const s = await client.open("hc", { hedge: { copies: 2, after: 0 } });
    const answer = s.request("both copies at once");
    await eventually(() => runs.get("hc1")?.started === 1 && runs.get("hc2")?.started === 1, "both copies running");
    await b.stop(); // its proxies die with it: nothing of it cancels the loser
    await c.waitPrimary();
    const winner = await answer;
    expect(winner).toBe("hc1");
    await eventually(() => runs.get("hc2")!.aborted === 1, "the copy on hc2 cancelled", 3000);
    expect(runs.get("hc1")).toEqual({ started: 1, finished: 1, aborted: 0 });
    expect(runs.get("hc2")).toEqual({ started: 1, finished: 0, aborted: 1 });
    await client.close();
    await c.stop();
    await rtC.close();
  }, 60_000);
});

