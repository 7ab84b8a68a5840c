/**
 * A JetStream publish for the session queues (a client's requests, a server's responses and
 * checkpoints, the manager's open records). It is what `js.publish` sends (the message with Nats-Msg-Id, a reply inbox, the
 * PubAck back), over the shared wildcard-inbox Requester: nats.js's publish goes through
 * `request()`, which settles every call by rejecting a fresh RequestError (a stack capture),
 * two per round trip that the server's profile showed. Errors keep their meaning: JetStream's
 * API errors come back as TANDEM_QUEUE_REFUSED with its code, and callers retry with the same id.
 */
import type { MsgHdrs } from "@nats-io/transport-node";
import { ErrorCode, TandemError } from "./errors.js";
import type { Requester } from "./requester.js";
import { decode } from "./wire.js";

export interface QueueAck {
  stream: string;
  seq: number;
  duplicate: boolean;
}

export async function publishToQueue(
  requester: Requester,
  subject: string,
  data: Uint8Array,
  opts: { msgID: string; headers: MsgHdrs; timeout: number },
): Promise<QueueAck> {
  opts.headers.set("Nats-Msg-Id", opts.msgID);
  const m = await requester.request(subject, data, { timeout: opts.timeout, headers: opts.headers });
  const v = decode(m.data) as { stream?: string; seq?: number; duplicate?: boolean; error?: { code?: number; err_code?: number; description?: string } };
  if (v.error || typeof v.seq !== "number") {
    const e = v.error ?? {};
    throw new TandemError(ErrorCode.QueueRefused, `JetStream refused the publish on ${subject}: ${e.description ?? "no sequence in its answer"}`, {
      context: { subject, code: e.code ?? null, errCode: e.err_code ?? null },
    });
  }
  return { stream: v.stream ?? "", seq: v.seq, duplicate: v.duplicate === true };
}
