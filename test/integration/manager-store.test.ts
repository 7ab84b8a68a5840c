/**
 * The manager's store (src/actors/manager/store.ts) against a real nats-server: what the
 * lease, the cursors, the queues and the records promise the manager's parts.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JetStreamStore } from "../../src/actors/manager/store.js";
import { isWrongLastSequence } from "../../src/runtime/jetstream.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { encode, Header, makeHeaders } from "../../src/runtime/wire.js";
import { runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";

let ns: NatsServer;
let rt: Runtime;
let store: JetStreamStore;
beforeAll(async () => {
  ns = await startNats();
  rt = await runtimeFor(ns);
  store = new JetStreamStore(rt);
});
afterAll(async () => {
  await rt.close();
  await ns.cleanup();
});

const append = (subject: string, body: unknown, id: string) =>
  store.queues.append(subject, encode(body), { msgID: id, headers: makeHeaders({ session: "s", kind: "control" }), timeout: 5000 });

describe("the manager's store", () => {
  it("the lease is written only by compare-and-set: a stale revision is refused with wrong-last-sequence", async () => {
    expect(await store.lease.read()).toBeNull();
    const r1 = await store.lease.write({ epoch: 1, node: "a", since: "t1" }, null);
    // Created once: a second create finds it there.
    await expect(store.lease.write({ epoch: 1, node: "b", since: "t1" }, null)).rejects.toSatisfy(isWrongLastSequence);
    const r2 = await store.lease.write({ epoch: 2, node: "b", since: "t2" }, r1);
    await expect(store.lease.write({ epoch: 2, node: "a", since: "t3" }, r1)).rejects.toSatisfy(isWrongLastSequence);
    expect(await store.lease.read()).toEqual({ value: { epoch: 2, node: "b", since: "t2" }, revision: r2 });
    // Deleted: still a revision to write at, and no holder.
    await rt.kv.ctl.delete("leader");
    const gone = await store.lease.read();
    expect(gone?.value).toBeNull();
    expect(gone!.revision).toBeGreaterThan(r2);
    await store.lease.write({ epoch: 3, node: "c", since: "t4" }, gone!.revision);
    expect((await store.lease.read())?.value?.node).toBe("c");
  });

  it("the queues: appended entries are read back by sequence, the next one past a hole, trimmed below a cut", async () => {
    const subj = (n: number) => rt.names.req("cl", `q${n}`);
    const before = await store.queues.lastSeq("req");
    for (let i = 1; i <= 5; i++) await append(subj(i), { i }, `q.${i}`);
    // The same message id is stored once.
    await append(subj(5), { i: 5 }, "q.5");
    const last = await store.queues.lastSeq("req");
    expect(last).toBe(before + 5);
    const third = await store.queues.at("req", before + 3);
    expect(third?.subject).toBe(subj(3));
    expect(third?.time).toBeInstanceOf(Date);
    expect(third?.headers?.get(Header.Session)).toBe("s");
    // A hole (the entries of one session purged): `next` steps over it, `at` finds nothing.
    await store.queues.forgetSession("cl", "q3");
    expect(await store.queues.at("req", before + 3)).toBeNull();
    expect((await store.queues.next("req", before + 3))?.seq).toBe(before + 4);
    await store.queues.trim("req", before + 5);
    expect(await store.queues.at("req", before + 4)).toBeNull();
    expect((await store.queues.next("req", 1))?.seq).toBe(before + 5);
    expect(await store.queues.next("req", last + 1)).toBeNull();
  });

  it("a session's queue is read back whole and in order; other sessions' entries are not", async () => {
    for (let i = 1; i <= 30; i++) await append(rt.names.req("cl", i % 3 === 0 ? "other" : "mine"), { i }, `r.${i}`);
    const seen: number[] = [];
    const n = await store.queues.readSession("req", "cl", "mine", (m) => seen.push((m.json() as { i: number }).i));
    expect(n).toBe(20);
    expect(seen).toEqual([...Array(30).keys()].map((k) => k + 1).filter((i) => i % 3 !== 0));
    expect(await store.queues.readSession("req", "cl", "nobody", () => {})).toBe(0);
  });

  it("cursors: a new one per tag from a given sequence; dropping keeps only the named one", async () => {
    const last = await store.queues.lastSeq("req");
    const a = await store.cursors.open("req", "e1_a", last);
    await store.cursors.open("req", "e1_b", 1);
    expect((await a.info()).num_pending).toBe(1);
    const names = async () => {
      const out: string[] = [];
      for await (const c of rt.jsm.consumers.list(rt.names.streamReq)) out.push(c.name);
      return out.filter((x) => x.includes("_mgr_req")).sort();
    };
    expect(await names()).toHaveLength(2);
    expect(await store.cursors.drop("req", "e1_b")).toBe(1);
    expect(await names()).toEqual([expect.stringMatching(/_mgr_req_e1_b$/)]);
    expect(await store.cursors.drop("req", null)).toBe(1);
    expect(await names()).toEqual([]);
    // The cut's cursor record: none until a manager writes it.
    expect(await store.cursors.read()).toBeNull();
  });

  it("records: a session's record, its hedge outcomes, and forgetting them leaves nothing in the buckets", async () => {
    const w = store.records.fencedWriters();
    await w.sessions.create("s9", { session: "s9", client: "c9", epoch: 1 });
    await w.restart.create("s9.client", { n: 1, data: "x" });
    await store.records.putHedge("s9", 4, { session: "s9", n: 4, winner: "srv" });
    expect(await store.records.hasSession("s9")).toEqual({ client: "c9" });
    const keys = (await store.records.readAll("sessions")).map((r) => r.key);
    expect(keys).toEqual(expect.arrayContaining(["s9", "s9.hedge.4"]));
    expect((await store.records.readAll("restart")).map((r) => r.key)).toContain("s9.client");
    await store.records.forgetSession("s9", "hedges");
    expect((await store.records.readAll("sessions")).map((r) => r.key)).toEqual(["s9"]);
    await store.records.forgetSession("s9", "records");
    expect(await store.records.hasSession("s9")).toBeNull();
    expect(await store.records.readAll("sessions")).toEqual([]);
    expect(await store.records.readAll("restart")).toEqual([]);
    // The secret is made once and read back the same.
    expect((await store.records.dispatchSecret()).equals(await store.records.dispatchSecret())).toBe(true);
  });
});
