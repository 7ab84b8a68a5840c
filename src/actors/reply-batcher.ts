/**
 * Acknowledgements of one turn, together (docs/design.md §6): a server acknowledging the work
 * of many sessions that came in one read, a client acknowledging many sessions' deliveries. The
 * first of a turn for a requester goes at once on its own reply subject (one at a time waits
 * for nothing); the others for that requester wait for the end of the turn and go as one message
 * to its batch subject, bounded in count and bytes. Only replies the requester marked
 * coalescable (runtime/reply-batch.ts) are held; any other is answered as it comes.
 */
import type { Msg, NatsConnection } from "@nats-io/transport-node";
import { ErrorCode } from "../runtime/errors.js";
import type { Logger } from "../runtime/logger.js";
import { BATCH, batchSubject, coalescable, encodeReplyBatch, entryBytes } from "../runtime/reply-batch.js";
import type { Runtime } from "../runtime/runtime.js";
import { batchBytes, TurnBatcher } from "./batches.js";

interface Held {
  reply: string;
  inbox: string;
  id: string;
  data: Uint8Array;
}

const SENT = Promise.resolve();

export class ReplyBatcher {
  /** The turn's holding and cutting, keyed by requester: the same as for queue records. */
  private readonly turns: TurnBatcher<Held>;
  /** Off once NATS refused a batch: every acknowledgement then goes alone (it is always allowed to). */
  private off = false;

  /**
   * `responder`: this process's id as the requester addressed it (a subject token).
   * `publish`: a core publish (its failure is the requester's timeout, as a lost reply's is).
   */
  constructor(
    private readonly responder: string,
    private readonly publish: (subject: string, data: Uint8Array) => void,
    maxBytes: () => number,
  ) {
    this.turns = new TurnBatcher<Held>(
      (h) => this.send(h.reply, h.data),
      (hs) => this.send(batchSubject(hs[0]!.inbox, this.responder), encodeReplyBatch(hs)),
      (h) => entryBytes(h.id, h.data),
      maxBytes,
      (h) => h.inbox,
    );
  }

  /** The batcher of a server or client process: on its connection, cut to what its NATS carries. */
  static on(rt: Runtime, responder: string): ReplyBatcher {
    return new ReplyBatcher(responder, (subject, data) => rt.nc.publish(subject, data), () => batchBytes(rt.nc.info?.max_payload));
  }

  respond(m: Msg, data: Uint8Array): void {
    const reply = m.reply;
    if (!reply) return;
    const c = this.off ? null : coalescable(reply);
    if (!c) void this.send(reply, data);
    else void this.turns.push({ reply, inbox: c.inbox, id: c.id, data });
  }

  /**
   * Answer one by one from now on. A nats-server whose permissions predate batched acknowledgements
   * refuses the batch subject; its acknowledgements are lost, and their requests are sent again at
   * their timeout, so the first refusal turns batching off for this responder.
   */
  stop(): void {
    this.off = true;
  }

  private send(subject: string, data: Uint8Array): Promise<void> {
    try {
      this.publish(subject, data);
    } catch {
      // closed or draining: the requester times out and sends again
    }
    return SENT;
  }
}

/**
 * Watch `nc` for NATS refusing a batch subject of `batcher` and turn its batching off, saying once
 * what to do (docs/design.md §6). Returns the unwatch.
 */
export function offWhenRefused(nc: NatsConnection, batcher: ReplyBatcher, responder: string, log: Logger): () => void {
  let done = false;
  void (async () => {
    for await (const s of nc.status()) {
      if (done) return;
      const err = s.type === "error" ? (s.error as Error & { subject?: string }) : undefined;
      if (err?.name !== "PermissionViolationError" || !err.subject?.endsWith(`.${BATCH}.${responder}`)) continue;
      batcher.stop();
      log.warn(
        { subject: err.subject, code: ErrorCode.Auth },
        `NATS refused batched acknowledgements on ${err.subject}; this process answers one by one from now on (slower). Run \`tandem auth\` again and reload nats-server so its users may publish on their own batch subject`,
      );
      return;
    }
  })().catch(() => {});
  return () => {
    done = true;
  };
}
