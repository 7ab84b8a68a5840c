/**
 * Access control (docs/design.md §2, §6): a nats-server with the per-role users `tandem auth`
 * writes. Client "alice" tries to read bob's responses, write into bob's queue, pass for a
 * server and for the manager; NATS refuses each, and bob's session goes on with nothing lost or
 * changed. Bad credentials fail at start with a clear error; the per-client session limit holds.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { ManagerNode } from "../../src/actors/manager.js";
import { TandemServer } from "../../src/actors/server.js";
import { TandemClient } from "../../src/actors/client.js";
import { buildAuth, type AuthUser } from "../../src/runtime/dev/auth.js";
import { resolveConfig } from "../../src/runtime/config.js";
import { memoryLogger } from "../../src/runtime/logger.js";
import { NatsServer } from "../../src/runtime/dev/nats-server.js";
import { startRuntime, type Runtime } from "../../src/runtime/runtime.js";
import { KvStore } from "../../src/runtime/stores/store-kv.js";
import { encode } from "../../src/runtime/wire.js";
import { FAST } from "../helpers/nats.js";

let dir: string;
let ns: NatsServer;
let users: AuthUser[];
const rts: Runtime[] = [];
let rtM: Runtime;
let mgr: ManagerNode;
let server: TandemServer;
let rtS1: Runtime;
let srv1Refused: string[];

async function as(user: string, over: Record<string, unknown> = {}): Promise<Runtime> {
  const u = users.find((x) => x.user === user)!;
  const config = resolveConfig(FAST as never, { natsUrls: [ns.url], natsUser: u.user, natsPass: u.password, ...over } as never);
  const rt = await startRuntime(config, { logger: memoryLogger("warn").logger, name: user, provision: u.role === "manager" });
  rts.push(rt);
  return rt;
}

/** Permission errors NATS reported to a connection. */
function violations(nc: NatsConnection): string[] {
  const seen: string[] = [];
  void (async () => {
    for await (const s of nc.status()) {
      const text = `${(s as { error?: Error }).error?.message ?? ""} ${JSON.stringify(s)}`;
      if (/permission/i.test(text)) seen.push(text);
    }
  })();
  return seen;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-auth-"));
  const built = buildAuth({ clients: ["alice", "bob"], servers: [{ id: "srv1", service: "svc" }, { id: "srv2", service: "other" }] });
  users = built.users;
  writeFileSync(join(dir, "nats.conf"), built.conf);
  ns = await NatsServer.start({ args: ["-c", join(dir, "nats.conf")] });
  rtM = await as("manager", { maxSessionsPerClient: 3 });
  mgr = new ManagerNode(rtM);
  mgr.start();
  await mgr.waitPrimary();
  rtS1 = await as("srv1");
  srv1Refused = violations(rtS1.nc);
  server = await TandemServer.start(rtS1, { service: "svc", id: "srv1", handler: (req) => ({ echo: req.payload, n: req.n }) });
}, 60_000);

afterAll(async () => {
  await server?.stop();
  await mgr?.stop();
  for (const rt of rts.reverse()) await rt.close().catch(() => {});
  await ns?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

describe("per-role NATS users", () => {
  it("a client cannot read or write another client's subjects, nor pass for a server or the manager; the other client loses nothing", async () => {
    const rtA = await as("alice");
    const rtB = await as("bob");
    const refused = violations(rtA.nc);
    const bob = await TandemClient.connect(rtB, { id: "bob" });
    const alice = await TandemClient.connect(rtA, { id: "alice" });
    const bs = await bob.open("svc");
    const as_ = await alice.open("svc");

    // Alice listens where bob's deliveries go, where servers get work, and where the manager listens.
    const stolen: string[] = [];
    const spies = [`tandem.deliver.bob.*`, `tandem.cli.bob.>`, `tandem.work.srv1.*`, `tandem.srv.srv1.>`, `tandem.mgr.open`, `tandem.resp.>`].map((subject) =>
      // The callback hears of the refusal as an error; a message would be a leak.
      rtA.nc.subscribe(subject, { callback: (e, m) => void (!e && m && stolen.push(m.subject)) }),
    );
    const reqBefore = (await rtM.jsm.streams.info(rtM.names.streamReq, { subjects_filter: rtM.names.req("bob", bs.id) })).state.subjects?.[rtM.names.req("bob", bs.id)] ?? 0;
    // Alice writes into bob's queue, passes for a server, and for the manager.
    rtA.nc.publish(rtM.names.req("bob", bs.id), encode({ n: 99, kind: "request", payload: "forged" }));
    rtA.nc.publish(rtM.names.register("evil", "svc"), encode({ capacity: 1 }));
    rtA.nc.publish(rtM.names.resp("srv1", bs.id), encode({ n: 1, ok: "forged" }));
    rtA.nc.publish(rtM.names.deliver("bob", bs.id), encode({ epoch: 99, session: bs.id, n: 1, ok: "forged", server: "evil" }));
    await rtA.js.publish(rtM.names.req("bob", bs.id), encode({ n: 98, kind: "request", payload: "forged" })).catch(() => {});

    // Bob's session goes on as if nothing happened.
    const got: unknown[] = [];
    for (let i = 1; i <= 20; i++) got.push(await bs.request({ i }));
    expect(got).toEqual(Array.from({ length: 20 }, (_, k) => ({ echo: { i: k + 1 }, n: k + 1 })));
    // And alice's own session works: she is held to her subjects, not locked out.
    expect(await as_.request("mine")).toEqual({ echo: "mine", n: 1 });

    await rtA.nc.flush().catch(() => {});
    expect(stolen).toEqual([]);
    for (const s of spies) expect(await s.closed).toBeInstanceOf(Error); // NATS closed each one
    const reqAfter = (await rtM.jsm.streams.info(rtM.names.streamReq, { subjects_filter: rtM.names.req("bob", bs.id) })).state.subjects?.[rtM.names.req("bob", bs.id)] ?? 0;
    // Bob's queue holds exactly his own 20 requests and receipts, nothing of alice's.
    expect(reqAfter - reqBefore).toBeGreaterThanOrEqual(20);
    expect(reqAfter - reqBefore).toBeLessThanOrEqual(40);
    expect(mgr.status().servers.map((s) => s.id)).not.toContain("evil");
    expect(refused.length).toBeGreaterThanOrEqual(4);
    await bs.close();
    await as_.close();
    await bob.close();
    await alice.close();
  });

  it("identity comes from the subject: a client cannot open, resume or close as another by naming it in the body (issue 13)", async () => {
    const rtA = await as("alice");
    const rtB = await as("bob");
    const refused = violations(rtA.nc);
    const bob = await TandemClient.connect(rtB, { id: "bob" });
    const bs = await bob.open("svc", { restart: { secret: "bob's" } });
    await bs.request("before");
    const call = async (subject: string, body: unknown) => {
      const r = await rtA.nc.request(subject, encode(body), { timeout: 2000 }).then((m) => m.json<{ ok: boolean; error?: { code: string; message: string } }>(), (e: Error) => ({ ok: false, error: { code: "NO_REPLY", message: e.message } }));
      return r;
    };
    // On her own subjects, naming bob in the body: refused before anything acts.
    for (const [op, body] of [
      ["open", { client: "bob", service: "svc" }],
      ["resume", { client: "bob", session: bs.id }],
      ["close", { client: "bob", session: bs.id }],
    ] as const) {
      const r = await call(rtA.names.clientCall(op, "alice"), body);
      expect(r.ok).toBe(false);
      expect(r.error?.code).toBe("TANDEM_MALFORMED");
      expect(r.error?.message).toMatch(/names client "bob" but the call comes from alice/);
    }
    // Bob's session id on her own subjects: not hers.
    expect((await call(rtA.names.clientCall("resume", "alice"), { session: bs.id })).error?.code).toBe("TANDEM_UNKNOWN_SESSION");
    expect((await call(rtA.names.clientCall("close", "alice"), { session: bs.id })).error?.code).toBe("TANDEM_UNKNOWN_SESSION");
    // On bob's subjects: NATS refuses the publish, so no manager ever hears it.
    rtA.nc.publish(rtA.names.clientCall("close", "bob"), encode({ client: "bob", session: bs.id }));
    await rtA.nc.flush().catch(() => {});
    await new Promise((r) => setTimeout(r, 300));
    expect(refused.some((t) => t.includes(rtA.names.clientCall("close", "bob")))).toBe(true);
    // Bob's session is untouched: still open, still his restart data.
    expect(await bs.request("after")).toEqual({ echo: "after", n: 2 });
    expect(bs.restart).toEqual({ secret: "bob's" });
    expect(mgr.status().sessions).toBeGreaterThanOrEqual(1);
    await bs.close();
    await bob.close();
  });

  it("a server acts only as itself: no registering as another or for another service, no answering for work it was not given, no stream that captures others' subjects (issue 13)", async () => {
    const rtS = await as("srv2"); // granted service "other" only
    const refused = violations(rtS.nc);
    const rtB = await as("bob");
    const bob = await TandemClient.connect(rtB, { id: "bob" });
    const bs = await bob.open("svc");
    expect(await bs.request("before")).toEqual({ echo: "before", n: 1 });
    const names = rtS.names;
    // NATS refuses these publishes: the id and the service are subject tokens.
    rtS.nc.publish(names.register("srv1", "svc"), encode({ capacity: 100_000 }));
    rtS.nc.publish(names.register("srv2", "svc"), encode({ capacity: 100_000 }));
    rtS.nc.publish(names.heartbeat("srv1"), encode({ epoch: 1 }));
    rtS.nc.publish(names.resp("srv1", bs.id), encode({ n: 2, k: "A".repeat(22), ok: "forged" }));
    await rtS.nc.flush().catch(() => {});
    // On its own subject, under the id a response once had: stored, but refused by the manager.
    await rtS.js.publish(names.resp("srv2", bs.id), encode({ n: 2, k: "A".repeat(22), ok: "forged" }), { msgID: `${bs.id}.2` });
    // A stream under the ledger bucket's name, capturing other users' subjects.
    const capture = { name: `KV_${names.bucketLedger}_x`, subjects: [`${names.prefix}.cli.>`, `${names.prefix}.mgr.>`, "_INBOX.>"] };
    await expect(rtS.jsm.streams.add(capture)).rejects.toThrow();
    // Refused by NATS for want of the permission, not for the name being taken.
    await expect(rtS.jsm.streams.add({ ...capture, name: `KV_${names.bucketLedger}` })).rejects.toThrow(/permission/i);

    // Bob's answer is the real server's; the forgery is in the DLQ with the writer it names.
    expect(await bs.request("after")).toEqual({ echo: "after", n: 2 });
    const forged = await rtM.jsm.streams.getMessage(rtM.names.streamDlq, { last_by_subj: rtM.names.dlq("forged", "manager") });
    expect(forged?.json()).toMatchObject({ code: "TANDEM_FORGED", subject: names.resp("srv2", bs.id), from: { server: "srv2" } });
    await new Promise((r) => setTimeout(r, 300));
    for (const subject of [names.register("srv1", "svc"), names.register("srv2", "svc"), names.heartbeat("srv1"), names.resp("srv1", bs.id)]) {
      expect(refused.some((t) => t.includes(subject)), subject).toBe(true);
    }
    expect(mgr.status().servers.map((x) => `${x.id}/${x.service}`)).toEqual(["srv1/svc"]);
    expect((await rtM.jsm.streams.names().next()).some((n) => n.startsWith(`KV_${names.bucketLedger}_`))).toBe(false);
    // The server may still use the ledger the manager provisioned: bind and write its keys.
    const ledger = await KvStore.open(rtS.nc, { bucket: names.bucketLedger, fence: rtS.kv.fence });
    await ledger.seed("probe", 1);
    expect(await ledger.read("probe")).toBe(1);
    await bs.close();
    await bob.close();
  });

  it("acknowledgements travel in batches, each responder's only on its own batch subject: NATS refuses one under another's name", async () => {
    const batches: string[] = [];
    const spy = rtM.nc.subscribe("_INBOX_manager.*.B.*", { callback: (e, m) => void (!e && batches.push(m.subject.split(".").pop()!)) });
    const rtA = await as("alice");
    const rtB = await as("bob");
    const rtS2 = await as("srv2");
    const refused = violations(rtS2.nc);
    const alice = await TandemClient.connect(rtA, { id: "alice" });
    const bob = await TandemClient.connect(rtB, { id: "bob" });
    const sessions = [...(await Promise.all([1, 2, 3].map(() => alice.open("svc")))), ...(await Promise.all([1, 2, 3].map(() => bob.open("svc"))))];
    // Six sessions at once: work for srv1 and deliveries for each client come several to a turn.
    const got = await Promise.all(sessions.map(async (s, k) => {
      const out: unknown[] = [];
      for (let i = 1; i <= 40; i++) out.push(await s.request({ k, i }));
      return out;
    }));
    got.forEach((out, k) => expect(out).toEqual(Array.from({ length: 40 }, (_, i) => ({ echo: { k, i: i + 1 }, n: i + 1 }))));
    expect(batches.filter((b) => b === "srv1").length).toBeGreaterThan(0);
    for (const b of batches) expect(["srv1", "alice", "bob"]).toContain(b);
    expect(srv1Refused.filter((t) => t.includes(".B."))).toEqual([]);
    // srv2 writes on srv1's batch subject: refused by NATS, nobody hears it.
    const forged = `_INBOX_manager.${"x".repeat(22)}.B.srv1`;
    const heard: string[] = [];
    const ear = rtM.nc.subscribe(forged, { callback: (e, m) => void (!e && heard.push(m.subject)) });
    await rtM.nc.flush();
    rtS2.nc.publish(forged, new TextEncoder().encode("1 2\n{}"));
    await rtS2.nc.flush().catch(() => {});
    await new Promise((r) => setTimeout(r, 300));
    expect(refused.some((t) => t.includes(forged))).toBe(true);
    expect(heard).toEqual([]);
    ear.unsubscribe();
    spy.unsubscribe();
    for (const s of sessions) await s.close();
    await alice.close();
    await bob.close();
  });

  it("dead letters carry their reporter in the subject: a client cannot write one as the manager or another user (issue 13)", async () => {
    const rtA = await as("alice");
    const refused = violations(rtA.nc);
    const forged = encode({ code: "TANDEM_MALFORMED", message: "from bob, honestly", from: { client: "bob" } });
    rtA.nc.publish(rtA.names.dlq("malformed", "manager"), forged);
    rtA.nc.publish(rtA.names.dlq("malformed", "bob"), forged);
    await rtA.nc.flush().catch(() => {});
    // Under her own name it is stored: the reader sees alice wrote it.
    await rtA.js.publish(rtA.names.dlq("malformed", "alice"), forged);
    await new Promise((r) => setTimeout(r, 300));
    expect(refused.some((t) => t.includes(rtA.names.dlq("malformed", "manager")))).toBe(true);
    expect(refused.some((t) => t.includes(rtA.names.dlq("malformed", "bob")))).toBe(true);
    const info = await rtM.jsm.streams.info(rtM.names.streamDlq, { subjects_filter: rtM.names.dlqOf("malformed") });
    expect(Object.keys(info.state.subjects ?? {})).not.toContain(rtM.names.dlq("malformed", "bob"));
    expect(Object.keys(info.state.subjects ?? {})).toContain(rtM.names.dlq("malformed", "alice"));
  });

  it("a client over its session limit gets TANDEM_SESSION_LIMIT", async () => {
    const rtA = await as("alice");
    const alice = await TandemClient.connect(rtA, { id: "alice" });
    for (let i = 0; i < 3; i++) await alice.open("svc");
    await expect(alice.open("svc")).rejects.toMatchObject({ code: "TANDEM_SESSION_LIMIT" });
    await alice.close();
  });

  it("bad credentials fail at start with TANDEM_AUTH and say what to check", async () => {
    const config = resolveConfig(FAST as never, { natsUrls: [ns.url], natsUser: "alice", natsPass: "wrong" } as never);
    const t0 = Date.now();
    await expect(startRuntime(config, { logger: memoryLogger("warn").logger, name: "bad", provision: false })).rejects.toMatchObject({
      code: "TANDEM_AUTH",
      message: expect.stringContaining("NATS_PASSWORD"),
    });
    expect(Date.now() - t0).toBeLessThan(15_000);
  });
});
