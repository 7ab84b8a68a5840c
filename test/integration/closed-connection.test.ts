/**
 * An application that closes its NATS connection with requests and receipts in flight: every
 * send settles (queued, or TANDEM_CLOSED), nothing retries into a closed connection for ever
 * (a bench teardown once logged "queueing keeps failing" 26-83 times), and no promise rejects
 * unhandled (vitest fails a test file on one).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TandemClient } from "../../src/actors/client.js";
import { TandemServer } from "../../src/actors/server.js";
import type { ManagerNode } from "../../src/actors/manager.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { primaryManager, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";

let ns: NatsServer;
let rt: Runtime;
let mgr: ManagerNode;
let server: TandemServer;

beforeAll(async () => {
  ns = await startNats();
  rt = await runtimeFor(ns);
  mgr = await primaryManager(rt);
  server = await TandemServer.start(rt, { service: "slowish", handler: async (r) => (await new Promise((ok) => setTimeout(ok, 5)), r.payload) });
});

afterAll(async () => {
  await server?.stop();
  await mgr?.stop();
  await rt?.close();
  await ns?.cleanup();
});

describe("a client whose connection is closed under it", () => {
  it("settles every send, retries nothing for ever, and leaves no unhandled rejection", async () => {
    const crt = await runtimeFor(ns, {}, "closing-client");
    const client = await TandemClient.connect(crt, { id: "closer" });
    const sessions = await Promise.all([0, 1, 2, 3].map(() => client.open("slowish")));
    const sends = sessions.flatMap((s) => Array.from({ length: 10 }, (_, i) => s.send({ i }).then((x) => x.response.then(() => "answered" as const, () => "failed" as const), (e: { code?: string }) => e.code ?? "error")));
    await new Promise((r) => setTimeout(r, 20));
    await crt.nc.close();
    const outcomes = await Promise.race([Promise.all(sends.map((p) => Promise.race([p, new Promise((r) => setTimeout(() => r("pending"), 3000))]))), new Promise<never>((_, no) => setTimeout(() => no(new Error("sends did not settle")), 10_000))]);
    // Sends whose publish was under way settle; responses that can no longer arrive stay pending.
    for (const o of outcomes) expect(["answered", "pending", "TANDEM_CLOSED"]).toContain(o);
    expect(outcomes.some((o) => o === "TANDEM_CLOSED" || o === "pending")).toBe(true);
    // A send after the close, as a loop that does not know yet: refused, not retried for ever.
    const late = await Promise.race([sessions[0]!.send({ late: true }).then(() => "queued", (e: { code?: string }) => e.code), new Promise((r) => setTimeout(() => r("still retrying"), 5000))]);
    expect(late).toBe("TANDEM_CLOSED");
    await new Promise((r) => setTimeout(r, 2500));
    const keptTrying = crt.logs().filter((l) => String(l.msg).includes("keeps failing"));
    expect(keptTrying).toEqual([]);
    await client.close().catch(() => {});
  }, 30_000);
});

describe("a client that connects while NATS goes away", () => {
  it("rides out a flush cut off by the disconnect and connects once NATS is back", async () => {
    const own = await startNats();
    const crt = await runtimeFor(own, {}, "flush-client");
    try {
      // nats-server frozen: the client's flush waits for its PONG; then killed: the disconnect
      // rejects that flush ("connection disconnected"); then back on the same port.
      process.kill(own.pid!, "SIGSTOP");
      const connecting = TandemClient.connect(crt, { id: "flusher" }).then(
        (c) => ({ ok: true as const, c }),
        (err: Error) => ({ ok: false as const, err }),
      );
      await new Promise((r) => setTimeout(r, 300));
      await own.stop();
      await new Promise((r) => setTimeout(r, 500));
      await own.restart();
      const r = await Promise.race([connecting, new Promise<{ ok: false; err: Error }>((ok) => setTimeout(() => ok({ ok: false, err: new Error("still connecting after 20 s") }), 20_000))]);
      expect(r.ok ? "connected" : r.err.message).toBe("connected");
      if (r.ok) await r.c.close();
    } finally {
      await crt.close().catch(() => {});
      await own.cleanup();
    }
  }, 40_000);
});
