/**
 * The fenced commit against real stores (I4): a real PostgreSQL and a real JetStream KV.
 * Duplicates race for real; crashes are real connection cuts (PostgreSQL) or the exact state
 * a holder that died leaves behind (KV), forced rather than hoped for.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseTransfer, readLedger, seedLedger, ensurePgLedger, pgDoubleApplied, type KvLedger } from "../../src/apps/ledger.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import type { FenceOutcome } from "../../src/runtime/stores/store.js";
import { KvStore, type KvTx } from "../../src/runtime/stores/store-kv.js";
import { PgStore } from "../../src/runtime/stores/store-pg.js";
import { encode } from "../../src/runtime/wire.js";
import { runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";
import { PgServer } from "../helpers/postgres.js";
import type pg from "pg";

let ns: NatsServer;
let rt: Runtime;
let pgs: PgServer;
let pgStore: PgStore;
let kvStore: KvStore;

beforeAll(async () => {
  [ns, pgs] = await Promise.all([startNats(), PgServer.start()]);
  rt = await runtimeFor(ns);
  pgStore = await PgStore.open({ url: pgs.url, poolSize: 20 });
  await ensurePgLedger(pgStore);
  kvStore = await KvStore.open(rt.nc, { bucket: "test_data", fence: rt.kv.fence, claimTimeoutMs: 300 });
}, 60_000);

afterAll(async () => {
  await pgStore?.close();
  await rt?.close();
  await ns?.cleanup();
  await pgs?.stop();
});

const live = () => new AbortController().signal;

/** A KV transfer of `amount` from A to B in the one-key ledger. */
function kvMove(amount: number) {
  return async (tx: KvTx) => {
    const l = (await tx.get<KvLedger>("ledger"))!;
    const balances = { ...l.balances, A: l.balances.A! - amount, B: l.balances.B! + amount };
    tx.set("ledger", { balances, applied: l.applied + 1 });
    return { A: balances.A };
  };
}

async function pgMove(c: pg.PoolClient, amount: number, session: string, request: number) {
  await c.query("UPDATE tandem_ledger SET balance = balance - $1 WHERE account = 'A'", [amount]);
  await c.query("UPDATE tandem_ledger SET balance = balance + $1 WHERE account = 'B'", [amount]);
  await c.query("INSERT INTO tandem_ledger_log (session, request, src, dst, amount) VALUES ($1, $2, 'A', 'B', $3)", [session, request, amount]);
  const r = await c.query<{ balance: string }>("SELECT balance FROM tandem_ledger WHERE account = 'A'");
  return { A: Number(r.rows[0]!.balance) };
}

describe("KV store fenced commit (I4)", () => {
  it("of eight duplicates racing for one request exactly one applies, and all answer with its result", async () => {
    await seedLedger(kvStore, { A: 1000, B: 0 });
    const outs = await Promise.all(
      Array.from({ length: 8 }, (_, i) => kvStore.commit({ session: "k1", request: 1, server: `s${i}` }, live(), kvMove(10))),
    );
    expect(outs.filter((o) => o.won)).toHaveLength(1);
    const winner = outs.find((o) => o.won)!;
    for (const o of outs) expect(o).toMatchObject({ result: { A: 990 }, by: winner.by });
    expect(await readLedger(kvStore)).toEqual({ balances: { A: 990, B: 10 }, applied: 1 });
  });

  it("many requests with duplicates each apply once, conflicts on the one key retried", async () => {
    await seedLedger(kvStore, { A: 1000, B: 0 });
    const jobs: Array<Promise<FenceOutcome<unknown>>> = [];
    for (let n = 1; n <= 20; n++) {
      for (let d = 0; d < 3; d++) jobs.push(kvStore.commit({ session: "k2", request: n, server: `s${d}` }, live(), kvMove(n)));
    }
    const outs = await Promise.all(jobs);
    expect(outs.filter((o) => o.won)).toHaveLength(20);
    const sum = (20 * 21) / 2;
    expect(await readLedger(kvStore)).toEqual({ balances: { A: 1000 - sum, B: sum }, applied: 20 });
  });

  it("a holder that died after its write but before marking the fence done is not applied twice", async () => {
    await seedLedger(kvStore, { A: 500, B: 0 });
    // The state the dead holder left: its claim, and its write (with its id) in the data key.
    await rt.kv.fence.create("k3.1", encode({ state: "claimed", server: "dead", at: Date.now() }));
    await kvStore.data.put("ledger", encode({ v: { balances: { A: 495, B: 5 }, applied: 1 }, recent: [{ id: "k3.1", result: { A: 495 }, by: "dead" }] }));
    const out = await kvStore.commit({ session: "k3", request: 1, server: "redo" }, live(), kvMove(5));
    expect(out).toEqual({ won: false, result: { A: 495 }, by: "dead" });
    expect(await readLedger(kvStore)).toEqual({ balances: { A: 495, B: 5 }, applied: 1 });
    expect((await rt.kv.fence.get("k3.1"))!.json()).toMatchObject({ state: "done", server: "dead" });
  });

  it("a holder that died after its write is not applied again even after many later updates of the key (JetStream de-duplication)", async () => {
    await seedLedger(kvStore, { A: 1000, B: 0 });
    // The dead holder: its claim with its result recorded, and its write under its message id.
    const claimRev = await rt.kv.fence.create("k8.1", encode({ state: "claimed", server: "dead", at: Date.now() }));
    await rt.kv.fence.update("k8.1", encode({ state: "applying", server: "dead", result: { A: 990 }, at: Date.now() }), claimRev);
    const cur = await kvStore.data.get("ledger");
    await rt.js.publish("$KV.test_data.ledger", encode({ v: { balances: { A: 990, B: 10 }, applied: 1 }, recent: [{ id: "k8.1", result: { A: 990 }, by: "dead" }] }), {
      msgID: "k8.1",
      expect: { lastSubjectSequence: cur!.revision },
    });
    // More later updates of the key than its value remembers.
    for (let n = 1; n <= 70; n++) await kvStore.commit({ session: "k8other", request: n, server: "s" }, live(), kvMove(1));
    const out = await kvStore.commit({ session: "k8", request: 1, server: "redo" }, live(), kvMove(10));
    expect(out).toEqual({ won: false, result: { A: 990 }, by: "dead" });
    expect(await readLedger(kvStore)).toEqual({ balances: { A: 920, B: 80 }, applied: 71 });
  });

  it("a holder that died before its write: the claim is taken over after it goes stale and applied once", async () => {
    await seedLedger(kvStore, { A: 500, B: 0 });
    await rt.kv.fence.create("k4.1", encode({ state: "claimed", server: "dead", at: Date.now() }));
    const t0 = Date.now();
    const out = await kvStore.commit({ session: "k4", request: 1, server: "redo" }, live(), kvMove(7));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250); // waited for the claim to go stale
    expect(out).toEqual({ won: true, result: { A: 493 }, by: "redo" });
    expect(await readLedger(kvStore)).toEqual({ balances: { A: 493, B: 7 }, applied: 1 });
  });

  it("a cancelled duplicate applies nothing and frees its claim for the others", async () => {
    await seedLedger(kvStore, { A: 100, B: 0 });
    const ac = new AbortController();
    const slow = kvStore.commit({ session: "k5", request: 1, server: "slow" }, ac.signal, async (tx) => {
      const l = (await tx.get<KvLedger>("ledger"))!;
      ac.abort(new Error("hedge lost"));
      tx.set("ledger", { ...l, applied: l.applied + 1 });
      return 1;
    });
    await expect(slow).rejects.toThrow("hedge lost");
    expect(await rt.kv.fence.get("k5.1").then((e) => e?.operation)).not.toBe("PUT");
    const out = await kvStore.commit({ session: "k5", request: 1, server: "other" }, live(), kvMove(1));
    expect(out.won).toBe(true);
    expect(await readLedger(kvStore)).toEqual({ balances: { A: 99, B: 1 }, applied: 1 });
  });

  it("an update that sets two keys is refused with a stable code and changes nothing", async () => {
    await seedLedger(kvStore, { A: 100, B: 0 });
    const two = kvStore.commit({ session: "k6", request: 1, server: "s" }, live(), async (tx) => {
      tx.set("a", 1);
      tx.set("b", 2);
      return null;
    });
    await expect(two).rejects.toMatchObject({ code: "TANDEM_FENCE_MULTI_KEY" });
    expect(await kvStore.read("a")).toBeUndefined();
  });
});

describe("PostgreSQL store fenced commit (I4)", () => {
  it("of eight duplicates racing for one request exactly one commits; the rest roll back and answer with its result", async () => {
    await seedLedger(pgStore, { A: 1000, B: 0 });
    const outs = await Promise.all(
      Array.from({ length: 8 }, (_, i) => pgStore.commit({ session: "p1", request: 1, server: `s${i}` }, live(), (c) => pgMove(c, 10, "p1", 1))),
    );
    expect(outs.filter((o) => o.won)).toHaveLength(1);
    for (const o of outs) expect(o.result).toEqual({ A: 990 });
    expect(await readLedger(pgStore)).toEqual({ balances: { A: 990, B: 10 }, applied: 1 });
    expect(await pgDoubleApplied(pgStore)).toEqual([]);
  });

  it("a duplicate waits for the winner's open transaction and loses when it commits", async () => {
    await seedLedger(pgStore, { A: 100, B: 0 });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const first = pgStore.commit({ session: "p2", request: 1, server: "first" }, live(), async (c) => {
      const r = await pgMove(c, 3, "p2", 1);
      await gate;
      return r;
    });
    await new Promise((r) => setTimeout(r, 100));
    let secondDone = false;
    const second = pgStore.commit({ session: "p2", request: 1, server: "second" }, live(), (c) => pgMove(c, 3, "p2", 1)).finally(() => (secondDone = true));
    await new Promise((r) => setTimeout(r, 200));
    expect(secondDone).toBe(false); // blocked on the fence row
    release();
    expect(await first).toMatchObject({ won: true, by: "first" });
    expect(await second).toEqual({ won: false, result: { A: 97 }, by: "first" });
    expect(await readLedger(pgStore)).toEqual({ balances: { A: 97, B: 3 }, applied: 1 });
  });

  it("when the winner's connection dies mid-transaction its update rolls back and the waiting duplicate applies once", async () => {
    await seedLedger(pgStore, { A: 100, B: 0 });
    let pid = 0;
    let cut!: () => void;
    const cutDone = new Promise<void>((r) => (cut = r));
    const first = pgStore.commit({ session: "p3", request: 1, server: "dies" }, live(), async (c) => {
      pid = Number((await c.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid);
      await pgMove(c, 4, "p3", 1);
      await cutDone; // its connection is gone by now: the commit cannot happen
      return pgMove(c, 4, "p3", 1);
    });
    await new Promise((r) => setTimeout(r, 150));
    const second = pgStore.commit({ session: "p3", request: 1, server: "survivor" }, live(), (c) => pgMove(c, 4, "p3", 1));
    await new Promise((r) => setTimeout(r, 150));
    // Cut the winner's connection for real, as a crash of its server would.
    await pgStore.pool.query("SELECT pg_terminate_backend($1)", [pid]);
    cut();
    await expect(first).rejects.toMatchObject({ code: "TANDEM_STORE" });
    expect(await second).toEqual({ won: true, result: { A: 96 }, by: "survivor" });
    expect(await readLedger(pgStore)).toEqual({ balances: { A: 96, B: 4 }, applied: 1 });
    expect(await pgDoubleApplied(pgStore)).toEqual([]);
  });

  it("a duplicate cancelled before commit rolls back, and a redo after a committed winner answers the same", async () => {
    await seedLedger(pgStore, { A: 100, B: 0 });
    const ac = new AbortController();
    const cancelled = pgStore.commit({ session: "p4", request: 1, server: "c" }, ac.signal, async (c) => {
      await pgMove(c, 9, "p4", 1);
      ac.abort(new Error("hedge lost"));
      return null;
    });
    await expect(cancelled).rejects.toThrow("hedge lost");
    expect(await readLedger(pgStore)).toEqual({ balances: { A: 100, B: 0 }, applied: 0 });
    const won = await pgStore.commit({ session: "p4", request: 1, server: "w" }, live(), (c) => pgMove(c, 9, "p4", 1));
    const redo = await pgStore.commit({ session: "p4", request: 1, server: "redo" }, live(), (c) => pgMove(c, 9, "p4", 1));
    expect(won).toEqual({ won: true, result: { A: 91 }, by: "w" });
    expect(redo).toEqual({ won: false, result: { A: 91 }, by: "w" });
    expect(await readLedger(pgStore)).toEqual({ balances: { A: 91, B: 9 }, applied: 1 });
  });

  it("a bad URL gives a clear error with a stable code", async () => {
    await expect(PgStore.open({ url: "postgres://nobody@127.0.0.1:1/none" })).rejects.toMatchObject({ code: "TANDEM_STORE" });
  });
});

describe("ledger payloads", () => {
  it("a malformed transfer is refused with TANDEM_MALFORMED", () => {
    expect(() => parseTransfer({ transfer: { from: "A", to: "A", amount: 1 } })).toThrow(/differ/);
    expect(() => parseTransfer({ transfer: { from: "A", to: "B", amount: -1 } })).toThrow(/positive/);
    expect(() => parseTransfer("x")).toThrow(/transfer/);
  });
});
