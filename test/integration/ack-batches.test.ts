/**
 * Acknowledgements in batches (docs/design.md §6) through a real nats-server: the Requester that sends
 * work and deliveries, and the ReplyBatcher a server or client answers with. Many requests
 * answered in one turn travel as few messages and each settles with its own reply; one request
 * alone is answered on its own subject at once; a batch from another responder settles nothing;
 * a body that cannot be read settles what was whole and is reported as bad input.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Msg } from "@nats-io/transport-node";
import { dlqReporter } from "../../src/actors/protocol.js";
import { ReplyBatcher } from "../../src/actors/reply-batcher.js";
import { MAX_BATCH } from "../../src/actors/schemas.js";
import { ErrorCode } from "../../src/runtime/errors.js";
import { batchSubject, coalescable, decodeReplyBatch, encodeReplyBatch } from "../../src/runtime/reply-batch.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { decode, encode } from "../../src/runtime/wire.js";
import { eventually, primaryManager, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";

let ns: NatsServer;
let rtM: Runtime; // the requester's side (the manager)
let rtS: Runtime; // the responders' side
let rtSpy: Runtime;
const seen: Array<{ subject: string; data: Uint8Array }> = [];

beforeAll(async () => {
  ns = await startNats();
  rtM = await runtimeFor(ns, {}, "manager");
  rtS = await runtimeFor(ns, {}, "server");
  rtSpy = await runtimeFor(ns, {}, "spy");
  // Everything that comes back to any inbox, as NATS routes it.
  rtSpy.nc.subscribe("_INBOX.>", { callback: (e, m) => void (!e && seen.push({ subject: m.subject, data: m.data.slice() })) });
  await rtSpy.nc.flush();
}, 60_000);

afterAll(async () => {
  for (const rt of [rtSpy, rtS, rtM]) await rt?.close().catch(() => {});
  await ns?.cleanup();
});

/** A responder answering each request with its own number, through a batcher under `id`. */
async function responder(subject: string, id: string): Promise<ReplyBatcher> {
  const batcher = new ReplyBatcher(id, (s, d) => rtS.nc.publish(s, d), () => 256 * 1024);
  rtS.nc.subscribe(subject, { callback: (e, m: Msg) => void (!e && batcher.respond(m, encode({ ok: true, value: { n: decode(m.data) } }))) });
  await rtS.nc.flush();
  return batcher;
}

const since = (mark: number) => seen.slice(mark);
const settle = () => new Promise((r) => setTimeout(r, 100));

describe("acknowledgements in batches", () => {
  it("200 requests answered in one turn come back as a few messages, each settling its own request with its own reply", async () => {
    await responder("rb.work.a", "srvA");
    const mark = seen.length;
    const replies = await Promise.all(
      Array.from({ length: 200 }, (_, i) => rtM.requester.request("rb.work.a", encode(i), { timeout: 5000, to: "srvA" }).then((r) => decode(r.data))),
    );
    expect(replies).toEqual(Array.from({ length: 200 }, (_, i) => ({ ok: true, value: { n: i } })));
    await settle();
    const back = since(mark);
    const batches = back.filter((m) => m.subject.endsWith(".B.srvA"));
    expect(batches.length).toBeGreaterThanOrEqual(Math.ceil(199 / MAX_BATCH));
    expect(back.length).toBeLessThan(100); // 200 one by one before
    let inBatches = 0;
    for (const b of batches) {
      const d = decodeReplyBatch(b.data);
      expect(d.problem).toBeNull();
      expect(d.entries.length).toBeLessThanOrEqual(MAX_BATCH);
      inBatches += d.entries.length;
    }
    // Every reply came exactly once: alone on its subject or in a batch.
    expect(inBatches + back.filter((m) => !m.subject.includes(".B.")).length).toBe(200);
  });

  it("one request alone is answered at once on its own reply subject", async () => {
    const mark = seen.length;
    expect(decode((await rtM.requester.request("rb.work.a", encode(7), { timeout: 2000, to: "srvA" })).data)).toEqual({ ok: true, value: { n: 7 } });
    await settle();
    const back = since(mark);
    expect(back.length).toBe(1);
    expect(coalescable(back[0]!.subject)).not.toBeNull();
  });

  it("a batch from another responder settles none of the requests sent to the first: they time out and count as refused", async () => {
    // srvB answers, in a batch under its own name, requests that were sent to srvA.
    rtS.nc.subscribe("rb.work.forged", {
      callback: (e, m) => {
        const c = !e && m.reply ? coalescable(m.reply) : null;
        if (c) rtS.nc.publish(batchSubject(c.inbox, "srvB"), encodeReplyBatch([{ id: c.id, data: encode({ ok: true, value: "forged" }) }]));
      },
    });
    await rtS.nc.flush();
    const refusedBefore = rtM.requester.refusedEntries;
    const outcomes = await Promise.all(
      [1, 2, 3].map((i) => rtM.requester.request("rb.work.forged", encode(i), { timeout: 400, to: "srvA" }).then((r) => decode(r.data), (err: { code?: string }) => err.code)),
    );
    expect(outcomes).toEqual([ErrorCode.NoReply, ErrorCode.NoReply, ErrorCode.NoReply]);
    expect(rtM.requester.refusedEntries - refusedBefore).toBe(3);
  });

  it("a body that cannot be read settles its whole entries and is reported; the rest time out and are sent again by their callers", async () => {
    const problems: string[] = [];
    rtM.requester.onMalformedBatch = (_subject, _data, problem) => problems.push(problem);
    rtS.nc.subscribe("rb.work.broken", {
      callback: (e, m) => {
        const c = !e && m.reply ? coalescable(m.reply) : null;
        if (!c) return;
        const n = decode(m.data) as number;
        if (n === 1) return; // answered with the second
        const good = encodeReplyBatch([{ id: (parseInt(c.id, 36) - 1).toString(36), data: encode({ ok: true, value: 1 }) }]);
        const bad = new TextEncoder().encode(`${c.id} 50\n{"ok":true}`);
        rtS.nc.publish(batchSubject(c.inbox, "srvC"), new Uint8Array([...good, ...bad]));
      },
    });
    await rtS.nc.flush();
    const first = rtM.requester.request("rb.work.broken", encode(1), { timeout: 2000, to: "srvC" });
    const second = rtM.requester.request("rb.work.broken", encode(2), { timeout: 400, to: "srvC" });
    expect(decode((await first).data)).toEqual({ ok: true, value: 1 });
    await expect(second).rejects.toMatchObject({ code: ErrorCode.NoReply });
    expect(problems).toEqual([expect.stringMatching(/entry 2: 50 bytes announced, 11 left/)]);
    rtM.requester.onMalformedBatch = undefined;
  });

  it("the manager dead-letters a batch it cannot read, with its bytes and the responder it came from, and goes on", async () => {
    const rt = await runtimeFor(ns, {}, "manager-2");
    const mgr = await primaryManager(rt);
    try {
      const body = new TextEncoder().encode("zz 9\n{\"ok\":");
      const subject = batchSubject(rt.requester.inbox, "srv9");
      rtS.nc.publish(subject, body);
      const dl = await eventually(
        async () => (await rt.jsm.streams.getMessage(rt.names.streamDlq, { last_by_subj: rt.names.dlq("malformed", dlqReporter(rt)) }).catch(() => null))?.json<Record<string, unknown>>(),
        "the dead letter",
      );
      expect(dl).toMatchObject({ code: "TANDEM_MALFORMED", subject, context: { responder: "srv9" }, data: Buffer.from(body).toString("base64") });
      expect(String(dl.message)).toMatch(/from srv9 could not be read: entry 1: 9 bytes announced, 6 left/);
      expect(mgr.isPrimary()).toBe(true);
    } finally {
      await mgr.stop();
      await rt.close();
    }
  });
});
