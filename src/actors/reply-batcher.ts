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
import { chunks } from "./batches.js";

interface Held {
  reply: string;
  id: string;
  data: Uint8Array;
}

export class ReplyBatcher {
  private scheduled = false;
  private readonly open = new Set<string>();
  private held = new Map<string, Held[]>();
  /** Off once NATS refused a batch: every acknowledgement then goes alone (it is always allowed to). */
  private off = false;

  /**
   * `responder`: this process's id as the requester addressed it (a subject token).
   * `publish`: a core publish (its failure is the requester's timeout, as a lost reply's is).
   */
  constructor(
    private readonly responder: string,
    private readonly publish: (subject: string, data: Uint8Array) => void,
    private readonly maxBytes: () => number,
  ) {}

  respond(m: Msg, data: Uint8Array): void {
    const reply = m.reply;
    if (!reply) return;
    const c = this.off ? null : coalescable(reply);
    if (!c || !this.open.has(c.inbox)) {
      if (c) {
        this.open.add(c.inbox);
        this.schedule();
      }
      this.send(reply, data);
      return;
    }
    const list = this.held.get(c.inbox);
    const h = { reply, id: c.id, data };
    if (list) list.push(h);
    else this.held.set(c.inbox, [h]);
  }

  /**
   * Answer one by one from now on. A nats-server whose permissions predate batched acknowledgements
   * refuses the batch subject; its acknowledgements are lost, and their requests are sent again at
   * their timeout, so the first refusal turns batching off for this responder.
   */
  stop(): void {
    this.off = true;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  private send(subject: string, data: Uint8Array): void {
    try {
      this.publish(subject, data);
    } catch {
      // closed or draining: the requester times out and sends again
    }
  }

  private flush(): void {
    this.scheduled = false;
    this.open.clear();
    if (this.held.size === 0) return;
    const held = this.held;
    this.held = new Map();
    const max = this.maxBytes();
    for (const [inbox, list] of held) {
      for (const chunk of chunks(list, (h) => entryBytes(h.id, h.data), max)) {
        if (chunk.length === 1) this.send(chunk[0]!.reply, chunk[0]!.data);
        else this.send(batchSubject(inbox, this.responder), encodeReplyBatch(chunk));
      }
    }
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
