/**
 * Small JetStream helpers the actors share: read the last value of every subject of a stream,
 * and take over a durable consumer at a given sequence (delete and re-create, so the previous
 * owner's pulls fail: DESIGN.md I5).
 */
import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiError,
  type Consumer,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from "@nats-io/jetstream";
import { JsApiCode } from "./errors.js";

/** Every message a stream's last-per-subject view holds (bucket contents), in one pass. */
export async function readLastPerSubject(
  js: JetStreamClient,
  jsm: JetStreamManager,
  stream: string,
): Promise<JsMsg[]> {
  const info = await jsm.streams.info(stream);
  if (info.state.messages === 0) return [];
  const c = await js.consumers.get(stream, { deliver_policy: DeliverPolicy.LastPerSubject });
  const out: JsMsg[] = [];
  try {
    for (;;) {
      const batch = await c.fetch({ max_messages: 1000, expires: 1000 });
      let got = 0;
      let last: JsMsg | null = null;
      for await (const m of batch) {
        got++;
        last = m;
        out.push(m);
        if (m.info.pending === 0) break;
      }
      if (got === 0 || (last && last.info.pending === 0)) break;
    }
  } finally {
    await c.delete().catch(() => {});
  }
  return out;
}

/**
 * Delete `durable` if it exists and create it again delivering from `startSeq`. Ack policy
 * none: the manager's own cursors, not consumer acks, say what was applied.
 */
export async function takeOverConsumer(
  js: JetStreamClient,
  jsm: JetStreamManager,
  stream: string,
  durable: string,
  startSeq: number,
): Promise<Consumer> {
  try {
    await jsm.consumers.delete(stream, durable);
  } catch (err) {
    if (!(err instanceof JetStreamApiError && err.code === JsApiCode.ConsumerNotFound)) throw err;
  }
  await jsm.consumers.add(stream, {
    durable_name: durable,
    ack_policy: AckPolicy.None,
    deliver_policy: startSeq > 1 ? DeliverPolicy.StartSequence : DeliverPolicy.All,
    ...(startSeq > 1 ? { opt_start_seq: startSeq } : {}),
    max_waiting: 16,
  });
  return js.consumers.get(stream, durable);
}

export function isWrongLastSequence(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JsApiCode.StreamWrongLastSequence || err.code === JsApiCode.StreamWrongLastSequenceUnknown)
  );
}
