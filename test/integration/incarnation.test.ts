/**
 * A server restarted under the same id is a new incarnation (issue 15, item 7): a server whose
 * process dies holding work and comes back with the same --id well inside the heartbeat timeout
 * (as a supervisor or a container with a fixed id does) was taken for the same live server, and
 * the lost work waited for the client's stall watchdog. Now its registration says it is a new
 * process, and the work moves to it at once.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ManagerNode } from "../../src/actors/manager.js";
import { TandemServer } from "../../src/actors/server.js";
import { TandemClient } from "../../src/actors/client.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { decode, encode } from "../../src/runtime/wire.js";
import { primaryManager, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";

let ns: NatsServer;
let rt: Runtime;
let mgr: ManagerNode;

beforeAll(async () => {
  ns = await startNats();
  // A heartbeat timeout far longer than the test: only the incarnation can move the work.
  rt = await runtimeFor(ns, { serverTimeoutMs: 30_000 });
  mgr = await primaryManager(rt);
}, 60_000);

afterAll(async () => {
  await mgr?.stop();
  await rt?.close();
  await ns?.cleanup();
});

describe("server incarnations", () => {
  it("work held by a server that died is redone at once by the process that comes back under its id", async () => {
    const rtOld = await runtimeFor(ns, { serverTimeoutMs: 30_000 }, "old");
    await TandemServer.start(rtOld, { service: "svc", id: "fixed", handler: () => new Promise(() => {}) }); // holds everything
    const c = await TandemClient.connect(rt);
    const s = await c.open("svc");
    const answer = s.request("lost with the old process");
    await new Promise((r) => setTimeout(r, 300));
    await rtOld.nc.close(); // the old process is gone, without a word
    const t0 = performance.now();
    const rtNew = await runtimeFor(ns, { serverTimeoutMs: 30_000 }, "new");
    const again = await TandemServer.start(rtNew, { service: "svc", id: "fixed", handler: (r) => ({ by: "new", payload: r.payload }) });
    expect(await answer).toEqual({ by: "new", payload: "lost with the old process" });
    const ms = performance.now() - t0;
    console.log(`new incarnation: the lost request answered ${ms.toFixed(0)} ms after the old process died`);
    expect(ms).toBeLessThan(3000); // the stall watchdog would act after 5 s, the heartbeat timeout after 30 s
    await s.close();
    await c.close();
    await again.stop();
    await rtNew.close();
  }, 60_000);

  it("a process takes no work before the manager has seen it register: its death could not cost that work an attempt", async () => {
    // A prefix no manager serves: the server stays registering.
    const rtX = await runtimeFor(ns, { prefix: "lonely" }, "lonely");
    let ran = 0;
    const srv = new TandemServer(rtX, { service: "svc", id: "fresh", handler: () => ++ran });
    const started = srv.start().catch(() => {});
    await new Promise((r) => setTimeout(r, 300));
    expect(srv.state).toBe("registering");
    const work = { epoch: 1, session: "s1", client: "c", service: "svc", n: 1, kind: "request", k: "k".repeat(22), payload: 1, restart: null };
    for (const body of [work, { batch: [work] }]) {
      const r = decode((await rtX.nc.request(rtX.names.work("fresh", "s1"), encode(body), { timeout: 3000 })).data) as { ok: boolean; error?: { code: string; message: string }; value?: { results: Array<{ error?: { code: string; message: string } }> } };
      const error = r.ok ? r.value!.results[0]!.error : r.error;
      expect(error).toMatchObject({ code: "TANDEM_UNAVAILABLE", message: expect.stringMatching(/not registered with the manager yet/) });
    }
    await new Promise((r) => setTimeout(r, 100));
    expect(ran).toBe(0);
    await srv.stop();
    await started;
    await rtX.close();
  }, 30_000);
});
