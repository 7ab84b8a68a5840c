/**
 * Batching (issue 17, item 4) against a real nats-server: responses of one session that are ready
 * together (a window's pipeline) travel as one message on the session's deliver subject, and
 * dispatches of one session decided together as one message on its work subject, every request
 * number a Tandem-Request header; responses still reach the application in order and once, and
 * each request runs once. A batch is validated element by element: one bad element is refused
 * (TANDEM_MALFORMED, or TANDEM_STALE_EPOCH) and dead-lettered with its own bytes, the good ones
 * are taken.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Msg } from "@nats-io/transport-node";
import type { ManagerNode } from "../../src/actors/manager.js";
import { TandemClient } from "../../src/actors/client.js";
import { TandemServer } from "../../src/actors/server.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { decode, encode, Header } from "../../src/runtime/wire.js";
import { traceSession } from "../../src/apps/request-trace.js";
import { eventually, primaryManager, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";

let ns: NatsServer;
let rt: Runtime;
let mgr: ManagerNode;
let servers: TandemServer[] = [];
let client: TandemClient;
/** Requests of the "held" service wait for this. */
let release: () => void = () => {};
const held = new Promise<void>((r) => (release = r));

beforeAll(async () => {
  ns = await startNats();
  rt = await runtimeFor(ns);
  mgr = await primaryManager(rt);
  servers = [
    // The first request of each group of 8 finishes last: the other 7 are stored first and wait
    // for it, then all 8 are ready to deliver at once.
    await TandemServer.start(rt, { service: "slowfirst", handler: async (req) => (await new Promise((r) => setTimeout(r, req.n % 8 === 1 ? 120 : 5)), { n: req.n }) }),
    await TandemServer.start(rt, { service: "held", handler: async (req) => (await held, req.payload) }),
    await TandemServer.start(rt, { service: "fast", handler: async (req) => req.payload }),
  ];
  client = await TandemClient.connect(rt);
}, 60_000);

afterAll(async () => {
  release();
  await client?.close();
  for (const s of servers) await s.stop();
  await mgr?.stop();
  await rt?.close();
  await ns?.cleanup();
});

/** Every message on a subject: the request numbers it carries and its Tandem-Request headers. */
function watch(subject: string) {
  const messages: Array<{ batch: number[]; headers: string[] }> = [];
  const sub = rt.nc.subscribe(subject, {
    callback: (_e, m: Msg) => {
      const b = decode(m.data) as { n?: number; batch?: Array<{ n: number }> };
      messages.push({ batch: b.batch ? b.batch.map((x) => x.n) : [b.n!], headers: m.headers?.values(Header.Request) ?? [] });
    },
  });
  return { messages, sub };
}

async function dead(reason: string, subject: string): Promise<Array<Record<string, unknown>>> {
  const info = await rt.jsm.streams.info(rt.names.streamDlq);
  const out: Array<Record<string, unknown>> = [];
  for (let q = info.state.first_seq; q <= info.state.last_seq; q++) {
    const m = await rt.jsm.streams.getMessage(rt.names.streamDlq, { seq: q }).catch(() => null);
    const b = m?.json<Record<string, unknown>>();
    if (b && b.subject === subject && m!.subject === rt.names.dlq(reason, "unsecured")) out.push(b);
  }
  return out;
}

describe("batching", () => {
  it("responses of a session ready together go as one message, and reach the application in order, once; so do dispatches", async () => {
    const s = await client.open("slowfirst", { window: 8 });
    const { messages, sub } = watch(rt.names.deliver(client.id, s.id));
    const work = watch(rt.names.work(servers[0]!.id, s.id));
    const order: number[] = [];
    const pending = [];
    for (let i = 1; i <= 40; i++) pending.push((await s.send(i)).response.then((r) => order.push((r.value as { n: number }).n)));
    await Promise.all(pending);
    sub.unsubscribe();
    work.sub.unsubscribe();
    await s.close();
    expect(order).toEqual([...Array(40).keys()].map((k) => k + 1));
    const batches = messages.filter((m) => m.batch.length > 1);
    expect(batches.length).toBeGreaterThan(0);
    // Fewer messages than responses, each n delivered once, and each batch names its requests.
    const sent = messages.flatMap((m) => m.batch);
    expect(messages.length).toBeLessThan(40);
    expect([...sent].sort((a, b) => a - b)).toEqual([...Array(40).keys()].map((k) => k + 1));
    for (const m of messages) expect(m.headers).toEqual(m.batch.map(String));
    console.log(`40 responses in ${messages.length} delivery messages; largest batch ${Math.max(...messages.map((m) => m.batch.length))}`);
    // Dispatches: each request sent once (no server died), fewer messages than requests.
    const dispatched = work.messages.flatMap((m) => m.batch);
    expect([...dispatched].sort((a, b) => a - b)).toEqual([...Array(40).keys()].map((k) => k + 1));
    expect(work.messages.some((m) => m.batch.length > 1)).toBe(true);
    for (const m of work.messages) expect(m.headers).toEqual(m.batch.map(String));
    console.log(`40 requests in ${work.messages.length} work messages; largest batch ${Math.max(...work.messages.map((m) => m.batch.length))}`);
  });

  it("requests sent in one turn are one record of the request queue, responses finished together one of the response queue; each answered once, in order, and traced", async () => {
    const s = await client.open("fast", { window: 16 });
    const reqs = watch(rt.names.req(client.id, s.id));
    const resps = watch(rt.names.resp("*", s.id));
    // Sixteen sends in one turn: the first goes at once, the other fifteen as one record.
    const sends = Array.from({ length: 16 }, (_, i) => s.send(i + 1));
    const answers = await Promise.all((await Promise.all(sends)).map((x) => x.response));
    expect(answers.map((r) => [r.n, r.value])).toEqual([...Array(16).keys()].map((k) => [k + 1, k + 1]));
    await rt.nc.flush();
    reqs.sub.unsubscribe();
    resps.sub.unsubscribe();
    const all = [...Array(16).keys()].map((k) => k + 1);
    for (const [what, w] of [["request", reqs], ["response", resps]] as const) {
      // Each request stored once, in fewer records than requests, each naming its requests (the
      // open record and receipts, which name none, aside).
      const records = w.messages.filter((m) => m.batch.every((n) => typeof n === "number"));
      expect([...records.flatMap((m) => m.batch)].sort((a, b) => a - b), what).toEqual(all);
      expect(records.length, what).toBeLessThan(16);
      for (const m of records) expect(m.headers, what).toEqual(m.batch.map(String));
      console.log(`16 ${what}s of one turn in ${records.length} ${what} queue records; largest ${Math.max(...records.map((m) => m.batch.length))}`);
    }
    // `tandem trace` reads the batch records element by element.
    const t = await traceSession(rt, s.id);
    expect(t.requests.map((r) => [r.n, r.steps.some((x) => x.step === "queued"), r.steps.some((x) => x.step === "answered")])).toEqual(all.map((n) => [n, true, true]));
    await s.close();
  });

  it("a batch record in a queue is checked element by element: the bad ones are dead-lettered with their own bytes, the session goes on", async () => {
    const s = await client.open("fast");
    expect(await s.request("first")).toBe("first");
    // In the session's own request queue: a duplicate of request 1 (ignored) and two that do not fit.
    const reqSubject = rt.names.req(client.id, s.id);
    const noNumber = { payload: "no n" };
    const badNumber = { n: "two", payload: 2 };
    await rt.js.publish(reqSubject, encode({ batch: [{ n: 1, payload: "again" }, noNumber, badNumber] }), { msgID: `test.${s.id}.reqbatch` });
    // On its server's response subject: a response under a made-up key and one that does not fit.
    const respSubject = rt.names.resp(servers[2]!.id, s.id);
    const forged = { n: 1, k: "k".repeat(22), ok: "forged" };
    const junk = { n: -1 };
    await rt.js.publish(respSubject, encode({ batch: [forged, junk] }), { msgID: `test.${s.id}.respbatch` });
    const has = async (reason: string, subject: string, body: unknown) => (await dead(reason, subject)).some((b) => Buffer.from(b.data as string, "base64").toString() === JSON.stringify(body));
    await eventually(async () => ((await has("malformed", reqSubject, noNumber)) && (await has("malformed", reqSubject, badNumber))) || null, "the bad request elements dead-lettered with their bytes");
    await eventually(async () => ((await has("forged", respSubject, forged)) && (await has("malformed", respSubject, junk))) || null, "the bad response elements dead-lettered with their bytes");
    // Nothing of it was run or delivered: the session goes on with its own requests.
    expect(await s.request("second")).toBe("second");
    expect(await s.request("third")).toBe("third");
    await s.close();
  });

  it("a work batch: a bad element and one from a stale epoch are refused and dead-lettered with their bytes; the good one runs", async () => {
    const s = await client.open("slowfirst");
    await s.request("warm"); // the server knows the epoch now
    const srv = servers[0]!;
    const good = { epoch: s.epoch, session: "forged-batch", client: client.id, service: "slowfirst", n: 1, kind: "request", k: "k".repeat(22), payload: "p", restart: null };
    const bad = { epoch: s.epoch, session: "forged-batch", n: -3 };
    const stale = { ...good, n: 2, epoch: s.epoch - 1 };
    // Fits the schema, at the current epoch, but for another session than the subject names: a
    // `nats sub` on that session would never see it.
    const elsewhere = { ...good, n: 3, session: "another-session" };
    const subject = rt.names.work(srv.id, "forged-batch");
    const r = await rt.nc.request(subject, encode({ batch: [bad, good, stale, elsewhere] }), { timeout: 3000 });
    const reply = decode(r.data) as { ok: boolean; value: { results: Array<{ n: number; error?: { code: string; message: string } }> } };
    expect(reply.ok).toBe(true);
    expect(reply.value.results.map((x) => [x.n, x.error?.code])).toEqual([
      [-3, "TANDEM_MALFORMED"],
      [1, undefined],
      [2, "TANDEM_STALE_EPOCH"],
      [3, "TANDEM_MALFORMED"],
    ]);
    expect(reply.value.results[3]!.error!.message).toMatch(/another-session.*forged-batch/);
    await eventually(async () => (await dead("malformed", subject)).some((b) => Buffer.from(b.data as string, "base64").toString() === JSON.stringify(bad)), "the bad element dead-lettered with its bytes");
    await eventually(async () => (await dead("malformed", subject)).some((b) => Buffer.from(b.data as string, "base64").toString() === JSON.stringify(elsewhere)), "the misaddressed element dead-lettered with its bytes");
    // Alone, not in a batch, the same: refused, and never run.
    const single = await rt.nc.request(subject, encode({ ...elsewhere, n: 4 }), { timeout: 3000 });
    expect(decode(single.data)).toMatchObject({ ok: false, error: { code: "TANDEM_MALFORMED" } });
    // So is a cancel on this session's cancel subject naming another session.
    const cancelBody = { epoch: s.epoch, session: "another-session", n: 3 };
    const cancelSubject = rt.names.cancel(srv.id, "forged-batch");
    const cancel = await rt.nc.request(cancelSubject, encode(cancelBody), { timeout: 3000 });
    expect(decode(cancel.data)).toMatchObject({ ok: false, error: { code: "TANDEM_MALFORMED" } });
    await eventually(async () => (await dead("malformed", cancelSubject)).some((b) => Buffer.from(b.data as string, "base64").toString() === JSON.stringify(cancelBody)), "the misaddressed cancel dead-lettered with its bytes");
    await eventually(async () => (await dead("stale_epoch", subject)).some((b) => Buffer.from(b.data as string, "base64").toString() === JSON.stringify(stale)), "the stale element dead-lettered with its bytes");
    await s.close();
  });

  it("a bad element is refused and dead-lettered with its bytes; the good ones around it are taken", async () => {
    const s = await client.open("held");
    const one = (await s.send("a")).response;
    const two = (await s.send("b")).response;
    const bad = { n: "two", server: 7 };
    const r = await rt.nc.request(rt.names.deliver(client.id, s.id), encode({ epoch: s.epoch, session: s.id, batch: [{ n: 1, server: "x", ok: "first" }, bad, { n: 2, server: "x", ok: "second" }] }), { timeout: 3000 });
    const reply = decode(r.data) as { ok: boolean; value: { results: Array<{ n: number; error?: { code: string; message: string } }> } };
    expect(reply.ok).toBe(true);
    expect(reply.value.results.map((x) => [x.n, x.error?.code])).toEqual([
      [1, undefined],
      [0, "TANDEM_MALFORMED"],
      [2, undefined],
    ]);
    expect(reply.value.results[1]!.error!.message).toMatch(/\/n|\/server/);
    await expect(one).resolves.toMatchObject({ n: 1, value: "first" });
    await expect(two).resolves.toMatchObject({ n: 2, value: "second" });
    const entry = await eventually(async () => {
      const m = await rt.jsm.streams.getMessage(rt.names.streamDlq, { last_by_subj: rt.names.dlq("malformed", "unsecured") });
      const b = m?.json<Record<string, unknown>>();
      return b && b.subject === rt.names.deliver(client.id, s.id) ? b : null;
    }, "the bad element in the dead-letter stream");
    expect(JSON.parse(Buffer.from(entry.data as string, "base64").toString())).toEqual(bad);
    await s.close();
  });

  it("a delivery, or a batch of them, for another session than its subject names is refused and dead-lettered; the session goes on", async () => {
    const s = await client.open("held");
    const other = await client.open("held");
    const one = (await s.send("a")).response;
    // On the other session's subject, naming this one: taken, it would answer this one's request.
    const subject = rt.names.deliver(client.id, other.id);
    const single = { epoch: s.epoch, session: s.id, n: 1, server: "x", ok: "not yours" };
    const batch = { epoch: s.epoch, session: s.id, batch: [{ n: 1, server: "x", ok: "not yours" }] };
    for (const body of [single, batch]) {
      const r = await rt.nc.request(subject, encode(body), { timeout: 3000 });
      const reply = decode(r.data) as { ok: boolean; error?: { code: string; message: string } };
      expect(reply).toMatchObject({ ok: false, error: { code: "TANDEM_MALFORMED" } });
      expect(reply.error!.message).toContain(other.id);
      await eventually(async () => (await dead("malformed", subject)).some((b) => Buffer.from(b.data as string, "base64").toString() === JSON.stringify(body)), "the misaddressed delivery dead-lettered with its bytes");
    }
    // Nothing was taken: the request is still open, and the delivery on its own subject answers it.
    const r = await rt.nc.request(rt.names.deliver(client.id, s.id), encode({ ...single, ok: "mine" }), { timeout: 3000 });
    expect(decode(r.data)).toMatchObject({ ok: true });
    await expect(one).resolves.toMatchObject({ n: 1, value: "mine" });
    await other.close();
    await s.close();
  });

  it("a batch whose envelope does not fit is refused whole and dead-lettered", async () => {
    const s = await client.open("held");
    const r = await rt.nc.request(rt.names.deliver(client.id, s.id), encode({ epoch: s.epoch, session: s.id, batch: Array.from({ length: 65 }, (_, i) => ({ n: i + 1, server: "x", ok: i })) }), { timeout: 3000 });
    const reply = decode(r.data) as { ok: boolean; error?: { code: string; message: string } };
    expect(reply).toMatchObject({ ok: false, error: { code: "TANDEM_MALFORMED" } });
    expect(reply.error!.message).toMatch(/batch/);
    await s.close();
  });
});

describe("a cancel and its dispatch decided in one turn", () => {
  it("the server never runs to the end, unaborted, a request its caller cancelled right after sending", async () => {
    let unaborted = 0;
    let started = 0;
    const srv = await TandemServer.start(rt, {
      service: "cancellable",
      handler: async (_req, ctx) => {
        started++;
        await new Promise<void>((r) => {
          const t = setTimeout(r, 150);
          ctx.signal.addEventListener("abort", () => (clearTimeout(t), r()), { once: true });
        });
        if (!ctx.signal.aborted) unaborted++;
        return "done";
      },
    });
    const sessions = await Promise.all(Array.from({ length: 16 }, () => client.open("cancellable", { window: 4 })));
    const outcomes = await Promise.all(
      sessions.map(async (s) => {
        const codes: string[] = [];
        for (let i = 0; i < 12; i++) {
          const ac = new AbortController();
          const { response } = await s.send(i, { signal: ac.signal });
          ac.abort();
          const r = await response;
          codes.push(r.ok ? "ok" : String(r.error?.code));
        }
        return codes;
      }),
    );
    await new Promise((r) => setTimeout(r, 300));
    console.log(`cancelled right after sending: ${started} of ${16 * 12} started at a server, ${unaborted} ran to the end unaborted; outcomes ${JSON.stringify(outcomes.flat().reduce<Record<string, number>>((t, c) => ({ ...t, [c]: (t[c] ?? 0) + 1 }), {}))}`);
    for (const s of sessions) await s.close();
    await srv.stop();
    expect(outcomes.flat().every((c) => c === "TANDEM_CANCELLED")).toBe(true);
    expect(unaborted).toBe(0);
  }, 60_000);
});
