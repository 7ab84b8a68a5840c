/**
 * Batched deliveries (issue 17, item 4) against a real nats-server: responses of one session that
 * are ready together (a window's pipeline) travel as one message on the session's deliver
 * subject, every request number a Tandem-Request header, and still reach the application in
 * order and once. A batch is validated element by element: one bad element is refused with
 * TANDEM_MALFORMED and dead-lettered with its own bytes, the good ones are taken.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Msg } from "@nats-io/transport-node";
import type { ManagerNode } from "../../src/actors/manager.js";
import { TandemClient } from "../../src/actors/client.js";
import { TandemServer } from "../../src/actors/server.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { decode, encode, Header } from "../../src/runtime/wire.js";
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

describe("batched deliveries", () => {
  it("responses of a session ready together go as one message, and reach the application in order, once", async () => {
    const s = await client.open("slowfirst", { window: 8 });
    const messages: Array<{ batch: number[]; headers: string[] }> = [];
    const sub = rt.nc.subscribe(rt.names.deliver(client.id, s.id), {
      callback: (_e, m: Msg) => {
        const b = decode(m.data) as { n?: number; batch?: Array<{ n: number }> };
        messages.push({ batch: b.batch ? b.batch.map((x) => x.n) : [b.n!], headers: m.headers?.values(Header.Request) ?? [] });
      },
    });
    const order: number[] = [];
    const pending = [];
    for (let i = 1; i <= 40; i++) pending.push((await s.send(i)).response.then((r) => order.push((r.value as { n: number }).n)));
    await Promise.all(pending);
    sub.unsubscribe();
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

  it("a batch whose envelope does not fit is refused whole and dead-lettered", async () => {
    const s = await client.open("held");
    const r = await rt.nc.request(rt.names.deliver(client.id, s.id), encode({ epoch: s.epoch, session: s.id, batch: Array.from({ length: 65 }, (_, i) => ({ n: i + 1, server: "x", ok: i })) }), { timeout: 3000 });
    const reply = decode(r.data) as { ok: boolean; error?: { code: string; message: string } };
    expect(reply).toMatchObject({ ok: false, error: { code: "TANDEM_MALFORMED" } });
    expect(reply.error!.message).toMatch(/batch/);
    await s.close();
  });
});
