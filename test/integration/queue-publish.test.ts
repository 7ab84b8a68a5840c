/**
 * The hot-path JetStream publish (runtime/queue-publish.ts) against a real nats-server: it must
 * mean what `js.publish` means: a sequence once stored, the same one again for a duplicate id,
 * and a clear error when nobody stores the subject or JetStream refuses the message.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { publishToQueue } from "../../src/runtime/queue-publish.js";
import { ErrorCode, TandemError } from "../../src/runtime/errors.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { makeHeaders, encode } from "../../src/runtime/wire.js";
import { runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";

let ns: NatsServer;
let rt: Runtime;

beforeAll(async () => {
  ns = await startNats();
  rt = await runtimeFor(ns);
  await rt.jsm.streams.add({ name: "QP", subjects: ["qp.>"] });
}, 60_000);

afterAll(async () => {
  await rt?.close();
  await ns?.cleanup();
});

const opts = (msgID: string, timeout = 2000) => ({ msgID, headers: makeHeaders({ session: "s", request: 1, kind: "request" }), timeout });

describe("publishToQueue", () => {
  it("stores a message once: a second publish with the same id is a duplicate of the same sequence", async () => {
    const first = await publishToQueue(rt.requester, "qp.a", encode({ v: 1 }), opts("s.1"));
    expect(first).toMatchObject({ stream: "QP", duplicate: false });
    const again = await publishToQueue(rt.requester, "qp.a", encode({ v: 1 }), opts("s.1"));
    expect(again).toEqual({ stream: "QP", seq: first.seq, duplicate: true });
    const next = await publishToQueue(rt.requester, "qp.a", encode({ v: 2 }), opts("s.2"));
    expect(next.seq).toBe(first.seq + 1);
    const stored = await rt.jsm.streams.getMessage("QP", { seq: first.seq });
    expect(stored?.header.get("Nats-Msg-Id")).toBe("s.1");
    expect(stored?.header.get("Tandem-Session")).toBe("s");
    expect((await rt.jsm.streams.info("QP")).state.messages).toBe(2);
  });

  it("a subject no stream stores is an error with a code (nobody listens: TANDEM_NO_REPLY), not a hang", async () => {
    const err = await publishToQueue(rt.requester, "nobody.stores.this", encode({}), opts("x.1")).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TandemError);
    expect((err as TandemError).code).toBe(ErrorCode.NoReply);
  });

  it("a message JetStream refuses comes back as an error carrying JetStream's code", async () => {
    const o = opts("s.3");
    o.headers.set("Nats-Expected-Last-Sequence", "999999");
    const err = await publishToQueue(rt.requester, "qp.a", encode({ v: 3 }), o).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TandemError);
    expect((err as TandemError).message).toMatch(/JetStream refused/);
    expect((err as TandemError).context).toMatchObject({ subject: "qp.a", code: 400, errCode: 10071 });
  });
});
