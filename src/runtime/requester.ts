/**
 * Request/reply for the hot paths (one per runtime, `rt.requester`: the manager's dispatches,
 * deliveries and restarts, and queue publishes): one wildcard inbox subscription, replies matched
 * by a counter, timeouts swept by one timer. nats.js's `request()` builds a subscription entry,
 * a timer and an Error object (a stack capture, even on success: its RequestOne.cancel rejects
 * the settled promise with a fresh RequestError) per call; at thousands of dispatches and
 * deliveries a second that was 7 % of the manager's CPU, after async traces were off.
 */
import { createInbox, type MsgHdrs, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { ErrorCode, TandemError } from "./errors.js";
import { BATCH, COALESCE, decodeReplyBatch } from "./reply-batch.js";

/** What a request resolves with: a reply alone, or one entry of a batch of acknowledgements (no headers). */
export interface RequestReply {
  data: Uint8Array;
  headers?: MsgHdrs;
}

interface Pending {
  resolve(m: RequestReply): void;
  reject(e: Error): void;
  deadline: number;
  /** The responder a coalescable request went to: only its batch settles it. */
  to?: string;
}

/** Shared instances: a failed request is an outcome here, not an exception with a stack. */
const TIMEOUT = new TandemError(ErrorCode.NoReply, "no reply in time");
const NO_RESPONDERS = new TandemError(ErrorCode.NoReply, "nobody listens on the subject");
const DISCONNECTED = new TandemError(ErrorCode.NatsUnreachable, "the connection to NATS was lost before the reply came");

export class Requester {
  private readonly prefix: string;
  private seq = 0;
  private readonly pending = new Map<string, Pending>();
  private readonly sub: Subscription;
  private readonly sweep: NodeJS.Timeout;
  /**
   * A batch of acknowledgements that could not be read whole (docs/design.md §6): the entries before
   * the fault are taken, the rest wait out their timeout and are sent again. Set by the actor
   * that owns the dead-letter stream (the runtime cannot write it).
   */
  onMalformedBatch?: (subject: string, data: Uint8Array, problem: string) => void;
  /** Entries of batches that named a request this requester did not send to their sender. */
  refusedEntries = 0;

  /** `inboxPrefix`: the connection's own (a secured user may only receive on its prefix). */
  constructor(private readonly nc: NatsConnection, inboxPrefix?: string) {
    this.prefix = createInbox(inboxPrefix);
    const skip = this.prefix.length + 1;
    this.sub = nc.subscribe(`${this.prefix}.>`, {
      callback: (err, m) => {
        if (err) return;
        let id = m.subject.slice(skip);
        if (id.charCodeAt(1) === 0x2e /* . */) {
          if (id[0] === BATCH) return this.onBatch(m.subject, id.slice(2), m.data);
          if (id[0] === COALESCE) id = id.slice(2);
        }
        const p = this.pending.get(id);
        if (!p) return; // late: already timed out
        this.pending.delete(id);
        if (m.data.length === 0 && m.headers?.code === 503) p.reject(NO_RESPONDERS);
        else p.resolve(m);
      },
    });
    this.sweep = setInterval(() => {
      const now = performance.now();
      for (const [id, p] of this.pending) {
        if (p.deadline <= now) {
          this.pending.delete(id);
          p.reject(TIMEOUT);
        }
      }
    }, 20);
    this.sweep.unref();
    // A reply due while the connection is down never comes (our inbox is gone with it), and a
    // request buffered meanwhile may reach a nats-server still recovering its streams: fail
    // them at the disconnect and again at the reconnect, so their callers retry at once (each
    // with its message id) rather than at their timeout (a request queued as nats-server died
    // once waited out its 3 s).
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type !== "disconnect" && s.type !== "reconnect") continue;
        for (const p of this.pending.values()) p.reject(DISCONNECTED);
        this.pending.clear();
      }
    })().catch(() => {});
  }

  /**
   * `to`: the responder's id, for a request whose acknowledgement may come in a batch with others of
   * the same turn (docs/design.md §6); without it the reply comes alone.
   */
  request(subject: string, data: Uint8Array, opts: { timeout: number; headers?: MsgHdrs; to?: string }): Promise<RequestReply> {
    const id = (++this.seq).toString(36);
    return new Promise<RequestReply>((resolve, reject) => {
      const p: Pending = { resolve, reject, deadline: performance.now() + opts.timeout };
      if (opts.to !== undefined) p.to = opts.to;
      this.pending.set(id, p);
      try {
        const reply = opts.to !== undefined ? `${this.prefix}.${COALESCE}.${id}` : `${this.prefix}.${id}`;
        this.nc.publish(subject, data, { reply, ...(opts.headers ? { headers: opts.headers } : {}) });
      } catch (err) {
        this.pending.delete(id);
        reject(err as Error);
      }
    });
  }

  /** Acknowledgements from `from`, several in one message: each settles its request if it went to `from`. */
  private onBatch(subject: string, from: string, data: Uint8Array): void {
    const { entries, problem } = decodeReplyBatch(data);
    for (const e of entries) {
      const p = this.pending.get(e.id);
      if (!p) continue; // late: already timed out
      if (p.to !== from) {
        this.refusedEntries++;
        continue;
      }
      this.pending.delete(e.id);
      p.resolve({ data: e.data });
    }
    if (problem !== null) this.onMalformedBatch?.(subject, data, problem);
  }

  /** The subject prefix of this requester's replies (its batches come on `<inbox>.B.<responder>`). */
  get inbox(): string {
    return this.prefix;
  }

  close(): void {
    clearInterval(this.sweep);
    this.sub.unsubscribe();
    for (const p of this.pending.values()) p.reject(TIMEOUT);
    this.pending.clear();
  }
}
