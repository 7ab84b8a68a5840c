/**
 * Delayed requests (issue 17, item 3) against real processes: stored at once, dispatched no
 * earlier than asked, in their place in the session's order, and across a SIGKILL of the primary
 * manager dispatched once and not early (the time travels in the request, on the queue).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TandemClient } from "../../src/actors/client.js";
import type { ManagerStatus } from "../../src/actors/manager.js";
import { unwrap } from "../../src/actors/protocol.js";
import { TandemServer } from "../../src/actors/server.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { encode } from "../../src/runtime/wire.js";
import { eventually, fastEnv, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";
import { killAll, tandem, type TandemProc } from "../helpers/procs.js";

let ns: NatsServer;
let rt: Runtime;
let server: TandemServer;
let client: TandemClient;
let m1: TandemProc;
/** When each request's handler started, by the payload's id (more than one start: a duplicate). */
const started = new Map<string, number[]>();

const primary = async () => {
  const r = await rt.nc.request(rt.names.mgr("status"), encode({}), { timeout: 500 }).catch(() => null);
  return r ? unwrap<ManagerStatus>(r.data) : null;
};

beforeAll(async () => {
  ns = await startNats();
  const env = fastEnv(ns.url);
  m1 = tandem("m1", ["manager", "--node", "m1"], env);
  rt = await runtimeFor(ns);
  await eventually(async () => (await primary())?.node === "m1" || undefined, "m1 is primary", 30_000, 100);
  tandem("m2", ["manager", "--node", "m2"], env);
  server = await TandemServer.start(rt, {
    service: "later",
    handler: async (req) => {
      const id = (req.payload as { id: string }).id;
      started.set(id, [...(started.get(id) ?? []), Date.now()]);
      return id;
    },
  });
  client = await TandemClient.connect(rt, { id: "delayer" });
}, 60_000);

afterAll(async () => {
  await client?.close();
  await server?.stop();
  await rt?.close();
  await killAll();
  await ns?.cleanup();
});

describe("delayed requests", () => {
  it("run no earlier than asked, and the requests sent after them wait their turn", async () => {
    const s = await client.open("later");
    const t0 = Date.now();
    const first = await s.send({ id: "a" }, { delayMs: 700 });
    const second = await s.send({ id: "b" });
    const queuedMs = Date.now() - t0;
    expect(queuedMs).toBeLessThan(500); // stored at once, not held back by the client
    expect((await first.response).value).toBe("a");
    expect((await second.response).value).toBe("b");
    expect(started.get("a")![0]! - t0).toBeGreaterThanOrEqual(700);
    expect(started.get("b")![0]!).toBeGreaterThanOrEqual(started.get("a")![0]!);
    const at = new Date(Date.now() + 300);
    expect(await s.request({ id: "c" }, { notBefore: at })).toBe("c");
    expect(started.get("c")![0]!).toBeGreaterThanOrEqual(at.getTime());
    await expect(s.request({ id: "x" }, { delayMs: -1 })).rejects.toMatchObject({ code: "TANDEM_CONFIG" });
    await s.close();
  });

  it("survive a SIGKILL of the primary: the new primary dispatches them once, not early", async () => {
    const s = await client.open("later");
    const t0 = Date.now();
    const delayed = await s.send({ id: "d" }, { delayMs: 2500 });
    const after = await s.send({ id: "e" });
    await new Promise((r) => setTimeout(r, 300));
    await m1.kill("SIGKILL");
    await eventually(async () => (await primary())?.node === "m2" || undefined, "m2 took over", 20_000, 100);
    expect(started.has("d")).toBe(false); // not dispatched early by the takeover
    expect((await delayed.response).value).toBe("d");
    expect((await after.response).value).toBe("e");
    expect(started.get("d")).toHaveLength(1);
    expect(started.get("d")![0]! - t0).toBeGreaterThanOrEqual(2500);
    expect(started.get("e")).toHaveLength(1);
    expect(started.get("e")![0]!).toBeGreaterThanOrEqual(started.get("d")![0]!);
    await s.close();
  }, 30_000);
});
