/**
 * Hedged requests end to end, against a real nats-server (and a real PostgreSQL for the
 * update test): first result wins, the other copies are cancelled and their handlers see the
 * abort, the session records name the winner, the budget bounds the extra work, and `update`
 * requests change the store exactly once (I4) with both stores.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI } from "../helpers/procs.js";
import type { ManagerNode } from "../../src/actors/manager.js";
import { TandemServer, type Handler } from "../../src/actors/server.js";
import { TandemClient } from "../../src/actors/client.js";
import { ledgerHandler, readLedger, seedLedger, pgDoubleApplied } from "../../src/apps/ledger.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import type { FencedStore } from "../../src/runtime/stores/store.js";
import { KvStore } from "../../src/runtime/stores/store-kv.js";
import { PgStore } from "../../src/runtime/stores/store-pg.js";
import { eventually, primaryManager, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";
import { PgServer } from "../helpers/postgres.js";

let ns: NatsServer;
let rt: Runtime;
let mgr: ManagerNode;
const servers: TandemServer[] = [];

/** Work that takes `ms` on this server, abortable; records what it saw. */
function timed(ms: number, seen: { started: number[]; aborted: number[]; finished: number[] }): Handler {
  return async (req, ctx) => {
    seen.started.push(req.n);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(resolve, ms);
      ctx.signal.addEventListener("abort", () => {
        clearTimeout(t);
        seen.aborted.push(req.n);
        reject(ctx.signal.reason);
      });
    });
    seen.finished.push(req.n);
    return { n: req.n, by: ms };
  };
}

beforeAll(async () => {
  ns = await startNats();
  rt = await runtimeFor(ns);
  mgr = await primaryManager(rt);
});

afterAll(async () => {
  for (const s of servers) await s.stop();
  await mgr.stop();
  await rt.close();
  await ns.cleanup();
});

describe("hedged requests", () => {
  it("a straggler's requests are answered by a hedge; the straggler's handlers see the abort and stop", async () => {
    const slowSeen = { started: [] as number[], aborted: [] as number[], finished: [] as number[] };
    const fastSeen = { started: [] as number[], aborted: [] as number[], finished: [] as number[] };
    // The session is assigned to the straggler: it is the only server when the session opens.
    const slow = await TandemServer.start(rt, { service: "strag", id: "strag-slow", handler: timed(3000, slowSeen) });
    servers.push(slow);
    const client = await TandemClient.connect(rt);
    const s = await client.open("strag", { hedge: { copies: 2, after: 30 } });
    servers.push(await TandemServer.start(rt, { service: "strag", id: "strag-fast", handler: timed(5, fastSeen) }));
    await eventually(() => mgr.status().services.find((x) => x.service === "strag")?.servers === 2, "second server registered");
    const got: unknown[] = [];
    for (let i = 1; i <= 5; i++) got.push(await s.request({ i }));
    expect(got).toEqual([1, 2, 3, 4, 5].map((n) => ({ n, by: 5 })));
    // Every straggler copy was cancelled, saw its abort, and never finished.
    await eventually(() => slowSeen.aborted.length === 5, "straggler copies aborted");
    expect(slowSeen.started).toEqual([1, 2, 3, 4, 5]);
    expect(slowSeen.finished).toEqual([]);
    expect(slow.stats.cancelled).toBe(5);
    expect(slow.stats.completed).toBe(0);
    // The session records name the winner of each request and who took which copy.
    const info = await eventually(async () => {
      const x = await client.sessionInfo(s.id);
      return x.hedges.length === 5 && x.took.length === 10 ? x : null;
    }, "hedge records");
    for (const h of info.hedges) expect(h).toMatchObject({ copies: ["strag-slow", "strag-fast"], winner: "strag-fast", cancelled: ["strag-slow"] });
    expect(info.took.filter((t) => t.server === "strag-slow").map((t) => t.copy)).toEqual([1, 1, 1, 1, 1]);
    expect(info.took.filter((t) => t.server === "strag-fast").map((t) => t.copy)).toEqual([2, 2, 2, 2, 2]);
    // The CLI shows the same.
    const { stdout } = await promisify(execFile)(process.execPath, [CLI, "status", "--session", s.id], { env: { ...process.env, NATS_URL: ns.url, TANDEM_LOG_LEVEL: "error" } });
    expect(stdout).toMatch(new RegExp(`${s.id}.*service strag`));
    expect(stdout.split("\n").filter((l) => /^\s+\d+\s+strag-fast\s+\(strag-slow\) strag-fast/.test(l))).toHaveLength(5);
    await s.close();
    // Closing purges the hedge records with the session.
    await eventually(async () => (await client.sessionInfo(s.id)).hedges.length === 0, "records purged");
    await client.close();
  });

  it("a fast first server is not hedged at all", async () => {
    const seen = { started: [] as number[], aborted: [] as number[], finished: [] as number[] };
    servers.push(await TandemServer.start(rt, { service: "quick", handler: timed(1, seen) }));
    servers.push(await TandemServer.start(rt, { service: "quick", handler: timed(1, seen) }));
    const client = await TandemClient.connect(rt);
    const s = await client.open("quick", { hedge: { copies: 2, after: 2000 } });
    for (let i = 0; i < 5; i++) await s.request(i);
    expect(seen.started).toHaveLength(5);
    expect(seen.aborted).toEqual([]);
    await client.close();
  });

  it("the hedging budget bounds extra copies even when every request would hedge", async () => {
    const seen = { started: [] as number[], aborted: [] as number[], finished: [] as number[] };
    for (let i = 0; i < 3; i++) servers.push(await TandemServer.start(rt, { service: "budget", handler: timed(2, seen) }));
    const client = await TandemClient.connect(rt);
    const s = await client.open("budget", { hedge: { copies: 3, after: 0 } });
    for (let i = 0; i < 150; i++) await s.request(i);
    const h = mgr.status().services.find((x) => x.service === "budget")!.hedging!;
    expect(h.requests).toBe(150);
    // ratio 0.1 x 150 requests + a reserve of 10 tokens.
    expect(h.extra).toBeLessThanOrEqual(0.1 * 150 + 10);
    expect(h.extra).toBeGreaterThanOrEqual(10); // it did hedge while tokens lasted
    expect(seen.started.length).toBe(150 + h.extra);
    await client.close();
  });

  it("invalid hedge options are refused with TANDEM_HEDGE", async () => {
    const client = await TandemClient.connect(rt);
    await expect(client.open("quick", { hedge: { copies: 1, after: 5 } })).rejects.toMatchObject({ code: "TANDEM_HEDGE" });
    await expect(client.open("quick", { hedge: { copies: 2, after: "p50" as never } })).rejects.toMatchObject({ code: "TANDEM_HEDGE" });
    // Straight to the manager, bypassing the client's check: refused, and a DLQ copy kept.
    const r = await rt.nc.request(rt.names.clientCall("open", "x"), new TextEncoder().encode(JSON.stringify({ client: "x", service: "quick", hedge: { copies: 99, after: 1 } })));
    expect(JSON.parse(new TextDecoder().decode(r.data))).toMatchObject({ ok: false, error: { code: "TANDEM_HEDGE" } });
    await eventually(() => rt.jsm.streams.getMessage(rt.names.streamDlq, { last_by_subj: rt.names.dlq("hedge", "unsecured") }), "DLQ copy");
    await client.close();
  });

  it("the learned delay: after \"p95\" hedges only the slow tail", async () => {
    let calls = 0;
    const handler: Handler = async (req, ctx) => {
      calls++;
      // Every 10th call of this server is slow.
      const ms = calls % 10 === 0 ? 400 : 2;
      await new Promise<void>((res, rej) => {
        const t = setTimeout(res, ms);
        ctx.signal.addEventListener("abort", () => (clearTimeout(t), rej(ctx.signal.reason)));
      });
      return req.n;
    };
    for (let i = 0; i < 2; i++) servers.push(await TandemServer.start(rt, { service: "tail", handler }));
    const client = await TandemClient.connect(rt);
    const s = await client.open("tail", { hedge: { copies: 2, after: "p95" } });
    for (let i = 0; i < 120; i++) await s.request(i);
    const h = mgr.status().services.find((x) => x.service === "tail")!.hedging!;
    expect(h.samples).toBeGreaterThan(100);
    expect(h.p95Ms).not.toBeNull();
    expect(h.p95Ms!).toBeLessThan(400); // learned from the fast majority and hedged tails
    expect(h.extra).toBeGreaterThan(0);
    expect(h.extra).toBeLessThanOrEqual(0.1 * h.requests + 10);
    await client.close();
  });
});

describe.each(["kv", "postgres"] as const)("hedged updates with the %s store (I4)", (kind) => {
  let pgs: PgServer | undefined;
  let stores: FencedStore[] = [];

  afterAll(async () => {
    for (const st of stores) await st.close();
    await pgs?.stop();
  });

  it("every transfer is applied exactly once with all copies racing, and the ledger total is conserved", async () => {
    const open = async (): Promise<FencedStore> => {
      if (kind === "kv") return KvStore.open(rt.nc, { bucket: "hedge_ledger", fence: rt.kv.fence });
      pgs ??= await PgServer.start();
      return PgStore.open({ url: pgs.url });
    };
    stores = [await open(), await open(), await open()];
    await seedLedger(stores[0]!, { A: 1000, B: 1000, C: 1000 });
    const service = `ledger-${kind}`;
    for (const store of stores) servers.push(await TandemServer.start(rt, { service, handler: ledgerHandler(), store }));
    await eventually(() => mgr.status().services.find((x) => x.service === service)?.servers === 3, "three ledger servers");
    const client = await TandemClient.connect(rt);
    // after: 0 sends every copy at once: the copies really race for the fence.
    const s = await client.open(service, { hedge: { copies: 3, after: 0 } });
    const accounts = ["A", "B", "C"];
    const results: Array<{ applied: boolean; from: string; to: string; amount: number }> = [];
    for (let i = 0; i < 30; i++) {
      const from = accounts[i % 3]!;
      const to = accounts[(i + 1) % 3]!;
      results.push((await s.request({ transfer: { from, to, amount: i + 1 } }, { kind: "update" })) as never);
    }
    expect(results.every((r) => r.applied)).toBe(true);
    const ledger = await readLedger(stores[0]!);
    expect(ledger.applied).toBe(30);
    // Expected balances from applying each answered transfer once.
    const want: Record<string, number> = { A: 1000, B: 1000, C: 1000 };
    for (const r of results) {
      want[r.from]! -= r.amount;
      want[r.to]! += r.amount;
    }
    expect(ledger.balances).toEqual(want);
    expect(Object.values(ledger.balances).reduce((a, b) => a + b, 0)).toBe(3000);
    const mine = servers.filter((x) => x.service === service);
    // Exactly one copy of each transfer committed; the copies that lost were stopped.
    expect(mine.reduce((a, x) => a + x.stats.committed, 0)).toBe(30);
    expect(mine.reduce((a, x) => a + x.stats.fenceLost + x.stats.cancelled, 0)).toBeGreaterThan(0);
    if (kind === "postgres") expect(await pgDoubleApplied(stores[0] as PgStore)).toEqual([]);
    await client.close();
  });
});
