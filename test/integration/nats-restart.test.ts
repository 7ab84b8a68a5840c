/**
 * The manager's cursors survive a nats-server restart (issue 14): nats-server SIGKILLed under
 * load and started again on its store. The manager's consumers are file-backed, so they are
 * there when it comes back: no "consumer not found", no step-down, no takeover, and the session
 * is served again within 0.5 s of nats-server accepting connections (measured against the clock
 * of the restart; it once took 1.7 s and a step-down).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ManagerNode } from "../../src/actors/manager.js";
import { TandemServer } from "../../src/actors/server.js";
import { TandemClient } from "../../src/actors/client.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { primaryManager, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";

let ns: NatsServer;
let rtM: Runtime & { logs: () => Array<Record<string, unknown>> };
let rtS: Runtime;
let rtC: Runtime;
let mgr: ManagerNode;
let server: TandemServer;

beforeAll(async () => {
  ns = await startNats();
  rtM = await runtimeFor(ns, {}, "manager");
  rtS = await runtimeFor(ns, {}, "server");
  rtC = await runtimeFor(ns, {}, "client");
  mgr = await primaryManager(rtM);
  server = await TandemServer.start(rtS, { service: "svc", handler: (r) => r.payload });
}, 60_000);

afterAll(async () => {
  await server?.stop();
  await mgr?.stop();
  for (const rt of [rtC, rtS, rtM]) await rt?.close().catch(() => {});
  await ns?.cleanup();
});

describe("nats-server restart (issue 14)", () => {
  it("the manager keeps its cursors and its lease: serving again within 0.5 s of nats-server being back, no step-down", async () => {
    const client = await TandemClient.connect(rtC);
    const s = await client.open("svc");
    const answers: Array<{ i: number; at: number }> = [];
    let stop = false;
    const load = (async () => {
      for (let i = 0; !stop; i++) {
        expect(await s.request(i)).toBe(i);
        answers.push({ i, at: performance.now() });
      }
    })();
    while (answers.length < 50) await new Promise((r) => setTimeout(r, 20));
    const epoch = mgr.status().epoch;
    await ns.stop(); // SIGKILL
    await new Promise((r) => setTimeout(r, 500));
    await ns.restart(); // resolves once it accepts connections
    const back = performance.now();
    let jsReady = 0;
    void (async () => {
      for (;;) {
        const ok = await rtC.jsm.streams.info(rtC.names.streamReq).then(() => true, () => false);
        if (ok) return void (jsReady = performance.now() - back);
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const seen = answers.length;
    while (answers.length < seen + 20) await new Promise((r) => setTimeout(r, 20));
    stop = true;
    await load;
    const first = answers.find((a) => a.at > back)!;
    const ms = first.at - back;
    console.log(`nats-server restart: first answer ${ms.toFixed(0)} ms after it accepted connections (JetStream answered after ${jsReady.toFixed(0)} ms)`);
    expect(ms).toBeLessThanOrEqual(500);
    expect(mgr.isPrimary()).toBe(true);
    expect(mgr.status().epoch).toBe(epoch);
    const msgs = rtM.logs().map((l) => String(l.msg));
    expect(msgs.some((m) => /stepping down/.test(m))).toBe(false);
    // In order, once.
    expect(answers.map((a) => a.i)).toEqual(answers.map((_, k) => k));
    await client.close();
  }, 60_000);
});
