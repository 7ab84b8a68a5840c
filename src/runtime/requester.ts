/**
 * Request/reply for the hot paths (one per runtime, `rt.requester`: the manager's dispatches,
 * deliveries and restarts, and queue publishes): one wildcard inbox subscription, replies matched
 * by a counter, timeouts swept by one timer. nats.js's `request()` builds a subscription entry,
 * a timer and an Error object (a stack capture, even on success: its RequestOne.cancel rejects
 * the settled promise with a fresh RequestError) per call; at thousands of dispatches and
 * deliveries a second that was 7 % of the manager's CPU, after async traces were off.
 */
import { createInbox, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { ErrorCode, TandemError } from "./errors.js";

interface Pending {
  resolve(m: Msg): void;
  reject(e: Error): void;
  deadline: number;
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

  /** `inboxPrefix`: the connection's own (a secured user may only receive on its prefix). */
  constructor(private readonly nc: NatsConnection, inboxPrefix?: string) {
    this.prefix = createInbox(inboxPrefix);
    const skip = this.prefix.length + 1;
    this.sub = nc.subscribe(`${this.prefix}.*`, {
      callback: (err, m) => {
        if (err) return;
        const id = m.subject.slice(skip);
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

  request(subject: string, data: Uint8Array, opts: { timeout: number; headers?: MsgHdrs }): Promise<Msg> {
    const id = (++this.seq).toString(36);
    return new Promise<Msg>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, deadline: performance.now() + opts.timeout });
      try {
        this.nc.publish(subject, data, { reply: `${this.prefix}.${id}`, ...(opts.headers ? { headers: opts.headers } : {}) });
      } catch (err) {
        this.pending.delete(id);
        reject(err as Error);
      }
    });
  }

  close(): void {
    clearInterval(this.sweep);
    this.sub.unsubscribe();
    for (const p of this.pending.values()) p.reject(TIMEOUT);
    this.pending.clear();
  }
}
