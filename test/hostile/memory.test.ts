/**
 * Memory is bounded by configuration, not by what others send (issue 13, README: Limits and
 * hostile input). A real manager process with a small heap (--max-old-space-size=96) takes
 * requests sent with a gap in their numbers (n = 2..40 of 200 kB each, n = 1 never sent) from
 * 16 sessions of 4 clients: 125 MB that, before the byte bounds, it held in memory until its heap
 * gave out. Now it holds at most its bounds, answers the rest TANDEM_BACKPRESSURE with a DLQ copy,
 * and a legitimate client is served throughout.
 */
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ManagerStatus } from "../../src/actors/manager.js";
import { TandemClient } from "../../src/actors/client.js";
import { TandemServer } from "../../src/actors/server.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { decode, encode } from "../../src/runtime/wire.js";
import { eventually, fastEnv, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";
import { tandem, type TandemProc } from "../helpers/procs.js";

const MiB = 1024 * 1024;
const BOUNDS = { session: 2 * MiB, client: 8 * MiB, held: 24 * MiB };
const PAYLOAD = 200 * 1024;

let ns: NatsServer;
let rt: Runtime;
let mgr: TandemProc;
let server: TandemServer;

async function status(): Promise<ManagerStatus> {
  const r = await rt.nc.request(rt.names.mgr("status"), encode({}), { timeout: 2000 });
  return (decode(r.data) as { value: ManagerStatus }).value;
}

const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;

beforeAll(async () => {
  ns = await startNats();
  mgr = tandem("manager", ["manager", "--node", "m1", "--max-payload", String(256 * 1024)], {
    ...fastEnv(ns.url),
    NODE_OPTIONS: "--max-old-space-size=96",
    TANDEM_MAX_SESSION_BYTES: String(BOUNDS.session),
    TANDEM_MAX_CLIENT_BYTES: String(BOUNDS.client),
    TANDEM_MAX_HELD_BYTES: String(BOUNDS.held),
  });
  rt = await runtimeFor(ns, { maxPayload: 256 * 1024 });
  await eventually(async () => (await status().catch(() => null))?.state.includes("primary") || null, "the manager to be primary", 30_000);
  server = await TandemServer.start(rt, { service: "svc", handler: (r) => r.payload });
}, 60_000);

afterAll(async () => {
  await server?.stop();
  await mgr?.kill("SIGTERM");
  await rt?.close();
  await ns?.cleanup();
});

describe("memory under hostile load (issue 13)", () => {
  it("requests held behind gaps stop at the configured bytes; the manager lives and everyone else is served", async () => {
    const legit = await TandemClient.connect(rt);
    const ls = await legit.open("svc");
    const before = rssMiB(mgr.pid);

    const attackers = await Promise.all([0, 1, 2, 3].map((i) => TandemClient.connect(rt, { id: `hog${i}` })));
    const sessions = (await Promise.all(attackers.map((c) => Promise.all([0, 1, 2, 3].map(async () => ({ client: c.id, id: (await c.open("svc")).id })))))).flat();
    const blob = "x".repeat(PAYLOAD);
    const writes: Array<() => Promise<unknown>> = [];
    for (const s of sessions) {
      for (let n = 2; n <= 40; n++) writes.push(() => rt.js.publish(rt.names.req(s.client, s.id), encode({ n, kind: "request", payload: blob }), { msgID: `hog.${s.id}.${n}` }));
    }
    // The legitimate client keeps asking while the hogs write.
    let answered = 0;
    let stop = false;
    const load = (async () => {
      while (!stop) {
        await expect(ls.request({ i: answered })).resolves.toEqual({ i: answered });
        answered++;
      }
    })();
    let peak = before;
    for (let i = 0; i < writes.length && mgr.running(); i += 16) {
      await Promise.all(writes.slice(i, i + 16).map((w) => w()));
      if (mgr.running()) peak = Math.max(peak, rssMiB(mgr.pid));
    }
    // Until the manager has read every hog request.
    const last = (await rt.jsm.streams.info(rt.names.streamReq)).state.last_seq;
    await eventually(async () => {
      if (!mgr.running()) throw new Error(`the manager exited:\n${mgr.stderr().slice(-1500)}`);
      peak = Math.max(peak, rssMiB(mgr.pid));
      const st = await status().catch(() => null); // (a primary that stepped down under the flood takes over again)
      return st && st.applied.req >= last ? st : null;
    }, "the manager to read every hog request", 60_000);
    stop = true;
    await load;

    const st = await status();
    expect(mgr.running()).toBe(true);
    // Each session may always take one request beyond the bounds (so none is starved).
    expect(st.heldBytes).toBeLessThanOrEqual(BOUNDS.held + sessions.length * (PAYLOAD + 1024));
    expect(st.heldBytes).toBeGreaterThan(BOUNDS.held / 2); // the hogs did fill it
    // 125 MB were sent; the process grew by what its configuration allows: its old space (96),
    // its held bytes (24) and what lives outside the old space (the young generation, up to
    // 48 MiB on Node 20, and message buffers: 16 more). Measured: +130 to +153 MiB, once +161.
    expect(peak - before).toBeLessThan(96 + BOUNDS.held / MiB + 48 + 16);
    expect(answered).toBeGreaterThanOrEqual(3);
    // What was refused is dead-lettered (the live primary's refusals; a takeover during the flood
    // keeps what it replays without its bytes instead).
    const refused = async () => Object.values((await rt.jsm.streams.info(rt.names.streamDlq, { subjects_filter: rt.names.dlqOf("backpressure") })).state.subjects ?? {}).reduce((a, b) => a + b, 0);
    const dead = await eventually(async () => ((await refused()) >= 300 ? refused() : null), "the refusals dead-lettered", 30_000);
    await expect(ls.request("after")).resolves.toBe("after");
    console.log(`manager RSS ${before.toFixed(0)} -> peak ${peak.toFixed(0)} MiB; held ${(st.heldBytes / MiB).toFixed(1)} MiB; legit answered ${answered}; ${dead} refused`);
    for (const c of attackers) await c.close();
    await legit.close();
  }, 120_000);
});
