/**
 * Queues that neither skip nor grow (issue 14), against a real nats-server:
 *  - a cursor made to skip stored entries (paused, moved past them with the consumer reset of
 *    nats-server 2.14, resumed) finds them in the stream and applies them: the session is served
 *    well inside the client's stall watchdog, each answer once;
 *  - a long session's queues are trimmed behind what was taken (3,000 requests leave a bounded
 *    number of messages, not 6,000);
 *  - a churn of sessions leaves neither queue entries nor KV delete markers behind.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ManagerNode } from "../../src/actors/manager.js";
import { TandemServer } from "../../src/actors/server.js";
import { TandemClient } from "../../src/actors/client.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { eventually, primaryManager, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";

let ns: NatsServer;
let rt: Runtime;
let mgr: ManagerNode;
let server: TandemServer;

beforeAll(async () => {
  process.env.TANDEM_TRIM_LAG_MS = "300"; // trim behind a cut 0.3 s old (10 s by default)
  ns = await startNats();
  rt = await runtimeFor(ns);
  mgr = await primaryManager(rt);
  server = await TandemServer.start(rt, { service: "svc", handler: (r) => r.payload, capacity: 64 });
}, 60_000);

afterAll(async () => {
  delete process.env.TANDEM_TRIM_LAG_MS;
  await server?.stop();
  await mgr?.stop();
  await rt?.close();
  await ns?.cleanup();
});

const streamState = async (name: string) => (await rt.jsm.streams.info(name)).state;

describe("queues (issue 14)", () => {
  it("a cursor that skips stored entries reads them back from the stream and applies them: no stall, no duplicate", async () => {
    const c = await TandemClient.connect(rt);
    const s = await c.open("svc");
    await s.request(0);
    const cursor = (await rt.jsm.consumers.list(rt.names.streamReq).next()).find((ci) => ci.name.startsWith(`${rt.names.prefix}_mgr_req`))!;
    // Hold the manager's request cursor, let three requests be stored, move the cursor past them.
    await rt.jsm.consumers.pause(rt.names.streamReq, cursor.name, new Date(Date.now() + 60_000));
    const from = (await streamState(rt.names.streamReq)).last_seq + 1;
    // One per turn of the event loop: requests sent in the same turn share one record (a batch).
    const answers: Array<Promise<unknown>> = [];
    for (const i of [1, 2, 3]) {
      answers.push(s.request(i));
      await new Promise((r) => setImmediate(r));
    }
    await eventually(async () => (await streamState(rt.names.streamReq)).last_seq >= from + 2 || null, "three requests stored");
    await rt.jsm.consumers.reset(rt.names.streamReq, cursor.name, from + 3);
    const t0 = performance.now();
    await rt.jsm.consumers.resume(rt.names.streamReq, cursor.name);
    // Something must follow the hole for the cursor to see it: one more request.
    const fourth = s.request(4);
    expect(await Promise.all([...answers, fourth])).toEqual([1, 2, 3, 4]);
    const ms = performance.now() - t0;
    console.log(`skipped entries healed: answered ${ms.toFixed(0)} ms after the cursor resumed`);
    expect(ms).toBeLessThan(3000); // the client's stall watchdog would re-sync after 5 s
    expect(mgr.status().healed.req).toBeGreaterThanOrEqual(3);
    expect(await s.request(5)).toBe(5);
    await s.close();
    await c.close();
  });

  it("a long session's queues are trimmed behind what it took", async () => {
    const c = await TandemClient.connect(rt);
    const s = await c.open("svc");
    for (let i = 0; i < 3000; i++) await s.request(i);
    const bound = 200; // entries of the last ~cut, not one per request and response ever made
    await eventually(async () => {
      const [req, resp] = await Promise.all([streamState(rt.names.streamReq), streamState(rt.names.streamResp)]);
      return req.messages < bound && resp.messages < bound ? { req, resp } : null;
    }, "the queues trimmed", 20_000);
    const [req, resp] = await Promise.all([streamState(rt.names.streamReq), streamState(rt.names.streamResp)]);
    console.log(`after 3,000 requests on one live session: TANDEM_REQ ${req.messages} messages (${req.bytes} B), TANDEM_RESP ${resp.messages} (${resp.bytes} B)`);
    expect(await s.request("still")).toBe("still"); // trimming took nothing it needs
    await s.close();
    await c.close();
  }, 120_000);

  it("a churn of sessions leaves no queue entries and no KV delete markers behind", async () => {
    const c = await TandemClient.connect(rt);
    for (let round = 0; round < 10; round++) {
      const sessions = await Promise.all(Array.from({ length: 30 }, () => c.open("svc")));
      await Promise.all(sessions.map((s) => s.request(round)));
      await Promise.all(sessions.map((s) => s.close()));
    }
    await c.close();
    await eventually(async () => {
      const [req, resp] = await Promise.all([streamState(rt.names.streamReq), streamState(rt.names.streamResp)]);
      return req.messages === 0 && resp.messages === 0 || null;
    }, "both queues empty", 20_000);
    const sessionsKv = await streamState(`KV_${rt.names.bucketSessions}`);
    const restartKv = await streamState(`KV_${rt.names.bucketRestart}`);
    console.log(`after 300 sessions opened, used and closed: KV_${rt.names.bucketSessions} ${sessionsKv.messages} messages, KV_${rt.names.bucketRestart} ${restartKv.messages}`);
    expect(sessionsKv.messages).toBe(0);
    expect(restartKv.messages).toBe(0);
    expect(mgr.status().sessions).toBe(0);
  }, 120_000);
});
