import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ManagerNode } from "../../src/actors/manager.js";
import { TandemServer } from "../../src/actors/server.js";
import { TandemClient } from "../../src/actors/client.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { decode, encode, makeHeaders } from "../../src/runtime/wire.js";
import { eventually, primaryManager, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";

let ns: NatsServer;
let rt: Runtime;
let mgr: ManagerNode;
let server: TandemServer;

beforeAll(async () => {
  ns = await startNats();
  rt = await runtimeFor(ns, { maxPayload: 512 });
  mgr = await primaryManager(rt);
  server = await TandemServer.start(rt, { service: "svc", handler: (r) => r.payload });
});

afterAll(async () => {
  await server.stop();
  await mgr.stop();
  await rt.close();
  await ns.cleanup();
});

type Reply = { ok: boolean; error?: { code: string; message: string } };

async function ask(subject: string, data: Uint8Array | string): Promise<Reply> {
  const r = await rt.nc.request(subject, typeof data === "string" ? new TextEncoder().encode(data) : data, { timeout: 3000 });
  return decode(r.data) as Reply;
}

/** The newest DLQ entry for a reason, once it is there. */
async function dlq(reason: string, match: (b: Record<string, unknown>) => boolean = () => true): Promise<Record<string, unknown>> {
  return eventually(async () => {
    const m = await rt.jsm.streams.getMessage(rt.names.streamDlq, { last_by_subj: rt.names.dlq(reason, "unsecured") });
    if (!m) return null;
    const b = m.json<Record<string, unknown>>();
    return match(b) ? b : null;
  }, `a DLQ entry for ${reason}`);
}

/** The runtime still serves everyone else after each rejection. */
async function stillServing(): Promise<void> {
  const c = await TandemClient.connect(rt);
  const s = await c.open("svc");
  await expect(s.request({ still: "alive" })).resolves.toEqual({ still: "alive" });
  await c.close();
}

describe("bad input is rejected, not lost (I7)", () => {
  it("malformed envelope - open with a body that is not JSON gets TANDEM_MALFORMED and a DLQ copy", async () => {
    const r = await ask(rt.names.clientCall("open", "x"), "{not json");
    expect(r.ok).toBe(false);
    expect(r.error?.code).toBe("TANDEM_MALFORMED");
    const d = await dlq("malformed", (b) => b.subject === rt.names.clientCall("open", "x"));
    expect(Buffer.from(d.data as string, "base64").toString()).toBe("{not json");
    await stillServing();
  });

  it("malformed envelope - open without a service names the field", async () => {
    const r = await ask(rt.names.clientCall("open", "x"), encode({ client: "x" }));
    expect(r.error?.code).toBe("TANDEM_MALFORMED");
    expect(r.error?.message).toMatch(/service/);
  });

  it("unknown service - open gets TANDEM_UNKNOWN_SERVICE and a DLQ copy", async () => {
    // A manager that just became primary answers "retry" while servers register again.
    await new Promise((r) => setTimeout(r, rt.config.serverTimeoutMs));
    const r = await ask(rt.names.clientCall("open", "x"), encode({ client: "x", service: "ghost" }));
    expect(r.error?.code).toBe("TANDEM_UNKNOWN_SERVICE");
    await dlq("unknown_service");
  });

  it("unknown session - resume gets TANDEM_UNKNOWN_SESSION and a DLQ copy", async () => {
    const r = await ask(rt.names.clientCall("resume", "x"), encode({ client: "x", session: "never-opened" }));
    expect(r.error?.code).toBe("TANDEM_UNKNOWN_SESSION");
    await dlq("unknown_session", (b) => b.subject === rt.names.clientCall("resume", "x"));
    await stillServing();
  });

  it("unknown session - a request queued for a session nobody opened is reported to its client and dead-lettered", async () => {
    const notices: Array<{ error?: { code: string } }> = [];
    const sub = rt.nc.subscribe(rt.names.hopAll("deliver", "lost-client"), { callback: (_e, m) => void notices.push(decode(m.data) as never) });
    await rt.js.publish(rt.names.req("lost-client", "nosuch"), encode({ n: 1, kind: "request", payload: 1 }), {
      msgID: "nosuch.1",
      headers: makeHeaders({ session: "nosuch", request: 1, kind: "request" }),
    });
    await eventually(() => notices.length > 0, "notice to the client");
    expect(notices[0]?.error?.code).toBe("TANDEM_UNKNOWN_SESSION");
    const entry = await dlq("unknown_session", (b) => (b.context as Record<string, unknown>)?.session === "nosuch");
    // With the message as it came: its subject and bytes (issue 15: entries without them).
    expect(entry.subject).toBe(rt.names.req("lost-client", "nosuch"));
    expect(JSON.parse(Buffer.from(String(entry.data), "base64").toString())).toEqual({ n: 1, kind: "request", payload: 1 });
    sub.unsubscribe();
    await stillServing();
  });

  it("malformed request in a session's queue is dead-lettered and the session goes on", async () => {
    const c = await TandemClient.connect(rt);
    const s = await c.open("svc");
    await rt.js.publish(rt.names.req(c.id, s.id), new TextEncoder().encode("garbage"), { headers: makeHeaders({ kind: "request" }) });
    await dlq("malformed", (b) => b.subject === rt.names.req(c.id, s.id));
    await expect(s.request("fine")).resolves.toBe("fine");
    await c.close();
  });

  it("malformed response - a response queue entry that is neither a response nor a checkpoint is dead-lettered, the session goes on", async () => {
    const c = await TandemClient.connect(rt);
    const s = await c.open("svc");
    // Whatever its Tandem-Kind header claims, a body without "ok", "error" or "restart" is neither.
    await rt.js.publish(rt.names.resp("nobody", s.id), encode({ n: 1 }), { headers: makeHeaders({ kind: "response" }) });
    const entry = await dlq("malformed", (b) => b.subject === rt.names.resp("nobody", s.id));
    expect(entry).toMatchObject({ code: "TANDEM_MALFORMED", message: expect.stringMatching(/a response needs "ok" or "error"/) });
    await expect(s.request("after")).resolves.toBe("after");
    await c.close();
  });

  it("oversized payload queued past the client's check gets an error response the client receives, and a DLQ copy", async () => {
    const open = await ask(rt.names.clientCall("open", "raw"), encode({ client: "raw", service: "svc" }));
    const session = (open as unknown as { value: { session: string } }).value.session;
    const delivered: Array<{ n: number; error?: { code: string } }> = [];
    const sub = rt.nc.subscribe(rt.names.hopAll("deliver", "raw"), {
      callback: (_e, m) => {
        delivered.push(decode(m.data) as never);
        m.respond(encode({ ok: true, value: {} }));
      },
    });
    await rt.js.publish(rt.names.req("raw", session), encode({ n: 1, kind: "request", payload: "x".repeat(4000) }), {
      msgID: `${session}.1`,
      headers: makeHeaders({ session, request: 1, kind: "request" }),
    });
    await eventually(() => delivered.length > 0, "the error response");
    expect(delivered[0]).toMatchObject({ n: 1, error: { code: "TANDEM_PAYLOAD_TOO_LARGE" } });
    await dlq("payload_too_large");
    sub.unsubscribe();
    await stillServing();
  });

  it("stale epoch - a delivery from an older manager epoch is refused by the client with TANDEM_STALE_EPOCH", async () => {
    const c = await TandemClient.connect(rt);
    const s = await c.open("svc");
    await s.request(1);
    const r = await ask(rt.names.deliver(c.id, s.id), encode({ epoch: s.epoch - 1, session: s.id, n: 2, ok: "forged", server: "old" }));
    expect(r.error?.code).toBe("TANDEM_STALE_EPOCH");
    await dlq("stale_epoch", (b) => b.subject === rt.names.deliver(c.id, s.id));
    await expect(s.request(2)).resolves.toBe(2); // the forged response was not taken
    await c.close();
  });

  it("stale epoch - work from an older manager epoch is refused by the server", async () => {
    const r = await ask(rt.names.work(server.id, "s"), encode({ epoch: 0, session: "s", client: "c", service: "svc", n: 1, kind: "request", k: "k".repeat(22), payload: 1, restart: null }));
    expect(r.error?.code).toBe("TANDEM_STALE_EPOCH");
    await dlq("stale_epoch", (b) => b.subject === rt.names.work(server.id, "s"));
    await stillServing();
  });

  it("forged epoch - heartbeats claiming a newer epoch than the lease's are refused and dead-lettered, and the primary stays primary (issue 13)", async () => {
    const before = mgr.status().epoch;
    for (let i = 0; i < 6; i++) {
      const r = await ask(rt.names.heartbeat(server.id), encode({ epoch: before + 1000, working: 0 }));
      expect(r.error?.code).toBe("TANDEM_STALE_EPOCH");
      await new Promise((res) => setTimeout(res, 250));
    }
    await dlq("stale_epoch", (b) => b.subject === rt.names.heartbeat(server.id) && (b.context as Record<string, unknown>)?.claimed === before + 1000);
    expect(mgr.isPrimary()).toBe(true);
    expect(mgr.status().epoch).toBe(before);
    await stillServing();
  });

  it("dead-letter flood - writes straight into the DLQ are bounded by its byte limit, the oldest going first (issue 13)", async () => {
    const small = await runtimeFor(ns, { dlqMaxBytes: 256 * 1024 }, "dlq-bound");
    try {
      const info = await small.jsm.streams.info(small.names.streamDlq);
      expect(info.config.max_bytes).toBe(256 * 1024);
      const junk = new Uint8Array(16 * 1024);
      for (let i = 0; i < 64; i++) await small.js.publish(small.names.dlq("flood", "unsecured"), junk); // 1 MiB in all
      const after = await small.jsm.streams.info(small.names.streamDlq);
      expect(after.state.bytes).toBeLessThanOrEqual(256 * 1024);
      expect(after.state.last_seq).toBeGreaterThanOrEqual(64); // every write was accepted
    } finally {
      // Back to the suite's own bound for the tests after this one.
      await small.jsm.streams.update(small.names.streamDlq, { max_bytes: rt.config.dlqMaxBytes });
      await small.close();
    }
    await stillServing();
  });

  it("phantom server - a registration nothing answers on its own subject is refused and gets no sessions (issue 13)", async () => {
    for (let i = 0; i < 3; i++) {
      const r = await ask(rt.names.register(`ghost-${i}`, "svc"), encode({ capacity: 100_000 }));
      expect(r.error?.code).toBe("TANDEM_SERVER_UNVERIFIED");
      expect(r.error?.message).toMatch(/nothing answered on its own subject/);
    }
    // Heartbeats of the phantoms change nothing either: they are unknown, told to register.
    await ask(rt.names.heartbeat("ghost-0"), encode({ epoch: mgr.status().epoch, working: 0 }));
    expect(mgr.status().servers.map((x) => x.id).filter((id) => id.startsWith("ghost-"))).toEqual([]);
    await dlq("server_unverified", (b) => b.subject === rt.names.register("ghost-2", "svc"));
    // New sessions still go to the real server (a phantom with capacity 1e9 would have drawn them all).
    for (let i = 0; i < 3; i++) await stillServing();
  });

  it("server id taken over - a registration under a live server's id for another service is refused (issue 13)", async () => {
    const r = await ask(rt.names.register(server.id, "other"), encode({ capacity: 1 }));
    expect(r.error?.code).toBe("TANDEM_SERVER_UNVERIFIED");
    expect(r.error?.message).toMatch(/answered for "svc"/);
    expect(mgr.status().servers.find((x) => x.id === server.id)?.service).toBe("svc");
    await stillServing();
  });

  it("forged open records - written straight into a client's own queue, they open nothing and are dead-lettered (issue 13)", async () => {
    const before = mgr.status().sessions;
    const forge = (session: string, service: string) =>
      rt.js.publish(rt.names.req("mallory", session), encode({ open: { service, ordered: true, maxPending: 1_000_000 } }), { msgID: `${session}.open` });
    // (The helper reads the newest entry of a reason: check each forgery before the next.)
    await forge("forged1", "madeup");
    const first = await dlq("malformed", (b) => (b.context as Record<string, unknown>)?.session === "forged1");
    expect(first.subject).toBe(rt.names.req("mallory", "forged1"));
    expect(first.data).toBeTruthy();
    await forge("forged2", "svc");
    await dlq("malformed", (b) => (b.context as Record<string, unknown>)?.session === "forged2");
    await forge("forged3", "x".repeat(200)); // longer than any token can be
    await dlq("malformed", (b) => b.subject === rt.names.req("mallory", "forged3"));
    expect(mgr.status().sessions).toBe(before);
    // The made-up service is still unknown to the open call.
    const r = await ask(rt.names.clientCall("open", "mallory"), encode({ service: "madeup" }));
    expect(r.error?.code).toBe("TANDEM_UNKNOWN_SERVICE");
    await stillServing();
  });

  it("response past the last request - one with n = 2^53 is refused, and the session goes on (issue 13)", async () => {
    const c = await TandemClient.connect(rt);
    const s = await c.open("svc");
    await s.request(1);
    const big = 2 ** 53;
    await rt.js.publish(rt.names.resp(server.id, s.id), encode({ n: big, k: "x".repeat(22), ok: "forged" }), { msgID: `${s.id}.${big}` });
    const entry = await dlq("malformed", (b) => b.subject === rt.names.resp(server.id, s.id));
    expect(entry.message).toMatch(/^response: \/n expected integer to be less or equal to 9007199254740991/);
    // Not TANDEM_BACKPRESSURE forever: the next requests are answered as usual.
    for (let i = 2; i <= 4; i++) await expect(s.request(i)).resolves.toBe(i);
    await c.close();
  });

  it("restart data past maxPayload - refused at the client, and by the manager when written past the client; the session goes on (issue 13)", async () => {
    const c = await TandemClient.connect(rt);
    const s = await c.open("svc");
    const big = { blob: "r".repeat(600) }; // this suite's maxPayload is 512
    await expect(s.request("small", { restart: big })).rejects.toMatchObject({ code: "TANDEM_PAYLOAD_TOO_LARGE", context: { field: "restart" } });
    // Written straight into the queue: answered with the error in its place, and dead-lettered.
    await rt.js.publish(rt.names.req(c.id, s.id), encode({ n: 1, kind: "request", payload: "p", restart: big }), { msgID: `${s.id}.big-restart` });
    await dlq("payload_too_large", (b) => (b.context as Record<string, unknown>)?.session === s.id);
    // The client's own next request (n = 1) is the one the queue already answered.
    await expect(s.request("next")).rejects.toMatchObject({ code: "TANDEM_PAYLOAD_TOO_LARGE" });
    await expect(s.request("after")).resolves.toBe("after");
    expect(s.restart).toBeUndefined();
    await c.close();
  });

  it("a manager whose --max-payload could make work messages larger than NATS carries refuses to start, and says what fits (issue 13)", async () => {
    const big = await runtimeFor(ns, { maxPayload: 600_000 }, "too-big");
    try {
      const { ManagerNode } = await import("../../src/actors/manager.js");
      expect(() => new ManagerNode(big).start()).toThrow(expect.objectContaining({ code: "TANDEM_CONFIG", message: expect.stringMatching(/use --max-payload 523264 or less/) }));
    } finally {
      await big.close();
    }
  });

  it("sessions across client ids - past TANDEM_MAX_SESSIONS an open gets TANDEM_SESSION_LIMIT, whatever client id it names (issue 13)", async () => {
    const ns2 = await startNats();
    const rt2 = await runtimeFor(ns2, { maxSessions: 3 }, "few-sessions");
    const mgr2 = await primaryManager(rt2);
    const srv2 = await TandemServer.start(rt2, { service: "svc", handler: (r) => r.payload });
    const clients: TandemClient[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const c = await TandemClient.connect(rt2, { id: `made-up-${i}` });
        clients.push(c);
        await c.open("svc");
      }
      const c = await TandemClient.connect(rt2, { id: "made-up-3" });
      clients.push(c);
      await expect(c.open("svc")).rejects.toMatchObject({ code: "TANDEM_SESSION_LIMIT", context: { scope: "manager", limit: 3 } });
    } finally {
      for (const c of clients) await c.close();
      await srv2.stop();
      await mgr2.stop();
      await rt2.close();
      await ns2.cleanup();
    }
  });

  it("forged response - an answer from a server that was not given the request, even under the old real message id, is refused and does not take the real answer's place (issue 13)", async () => {
    const c = await TandemClient.connect(rt);
    const s = await c.open("svc");
    await s.request(1);
    // Before request 2 exists, a forger writes its "answer" under the id responses once had,
    // from its own subject and from the real server's (unsecured: anyone may write either).
    for (const [writer, msgID] of [["evil", `${s.id}.2`], [server.id, `${s.id}.2.${"A".repeat(22)}`]] as const) {
      await rt.js.publish(rt.names.resp(writer, s.id), encode({ n: 2, k: "A".repeat(22), ok: "forged" }), { msgID });
      const entry = await dlq("forged", (b) => b.subject === rt.names.resp(writer, s.id));
      expect(entry).toMatchObject({ code: "TANDEM_FORGED", from: { server: writer }, context: { server: writer, session: s.id, n: 2 } });
      expect(Buffer.from(entry.data as string, "base64").toString()).toContain('"forged"');
    }
    // The real answer is stored and delivered.
    await expect(s.request(2)).resolves.toBe(2);
    await expect(s.request(3)).resolves.toBe(3);
    await c.close();
  });

  it("deep nesting - a request, an open call and a checkpoint nested past 64 levels are refused; nothing crashes, the session goes on (issue 13)", async () => {
    const c = await TandemClient.connect(rt);
    const s = await c.open("svc");
    const nested = (k: number): unknown => (k === 0 ? 1 : [nested(k - 1)]);
    // Through the API: the request gets an error response in its place, and the next one is served.
    await expect(s.request(nested(100))).rejects.toMatchObject({ code: "TANDEM_MALFORMED" });
    await dlq("malformed", (b) => b.subject === rt.names.req(c.id, s.id));
    await expect(s.request("next")).resolves.toBe("next");
    // An open call whose restart data nests thousands deep.
    const r = await ask(rt.names.clientCall("open", "deep"), `{"service":"svc","restart":${"[".repeat(3000)}${"]".repeat(3000)}}`);
    expect(r.error?.code).toBe("TANDEM_MALFORMED");
    // A checkpoint nested thousands deep, written as a server would.
    await rt.js.publish(rt.names.resp(server.id, s.id), `{"n":3,"restart":${"[".repeat(5000)}${"]".repeat(5000)}}`);
    await dlq("malformed", (b) => b.subject === rt.names.resp(server.id, s.id));
    expect(mgr.isPrimary()).toBe(true);
    await expect(s.request("still")).resolves.toBe("still");
    await c.close();
    await stillServing();
  });

  it("implausible epoch - work and deliveries claiming an epoch far past the lease's are refused, and the real manager is still obeyed (issue 13)", async () => {
    const c = await TandemClient.connect(rt);
    const s = await c.open("svc");
    await s.request(1);
    const epoch = mgr.status().epoch;
    const work = await ask(rt.names.work(server.id, s.id), encode({ epoch: 1e15, session: s.id, client: c.id, service: "svc", n: 2, kind: "request", k: "k".repeat(22), payload: "forged", restart: null }));
    expect(work.error?.code).toBe("TANDEM_STALE_EPOCH");
    expect(work.error?.message).toMatch(/more than one past/);
    const deliver = await ask(rt.names.deliver(c.id, s.id), encode({ epoch: 1e15, session: s.id, n: 2, ok: "forged", server: "x" }));
    expect(deliver.error?.code).toBe("TANDEM_STALE_EPOCH");
    // Neither took the forged epoch: the manager's work and deliveries still go through.
    for (let i = 2; i <= 4; i++) await expect(s.request(i)).resolves.toBe(i);
    expect(mgr.isPrimary()).toBe(true);
    expect(mgr.status().epoch).toBe(epoch);
    await c.close();
    await stillServing();
  });
});
