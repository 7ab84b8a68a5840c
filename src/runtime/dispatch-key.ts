/**
 * Dispatch keys (docs/design.md §2): the manager gives each work message a key only it can make,
 * HMAC(secret, session, n, server), and accepts a response or checkpoint only when it carries the
 * key of the server whose subject it came on. A server sees the keys of its own work and no
 * other's, so it cannot answer for a request it was not sent, nor pre-empt the real answer's
 * message id (a forged response with the real id once replaced another client's answer). The
 * key is the same for every manager of the deployment, so a takeover checks replayed responses
 * exactly as the live primary did.
 */
import { createHmac, randomBytes } from "node:crypto";
import type { KV } from "@nats-io/kv";

const SECRET_KEY = "secret";

/**
 * The deployment's secret, from the control bucket (only managers and admins may read it):
 * created by the first manager, read by every later one.
 */
export async function loadDispatchSecret(ctl: KV): Promise<Buffer> {
  for (;;) {
    const e = await ctl.get(SECRET_KEY);
    if (e && e.operation === "PUT") return Buffer.from(e.string(), "base64");
    try {
      await ctl.create(SECRET_KEY, randomBytes(32).toString("base64"));
    } catch {
      // Another manager created it first: read that one.
    }
  }
}

/** The key of request n of a session at one server (22 characters, a subject-safe token). */
export function dispatchKey(secret: Buffer, session: string, n: number, server: string): string {
  return createHmac("sha256", secret).update(`${session}\n${n}\n${server}`).digest("base64url").slice(0, 22);
}

/**
 * The manager's dispatch keys of one term: each key it gave a work message is remembered until a
 * response or checkpoint for it is checked, so the check of a live answer costs a map lookup,
 * not a second HMAC (the HMAC was a fifth of the manager's dispatch stage). What it does not
 * remember (a replay after a takeover, more than `bound` outstanding) it computes; the answer
 * is the same either way.
 */
export class DispatchKeys {
  private readonly issued = new Map<string, string>();

  constructor(
    readonly secret: Buffer,
    private readonly bound = 100_000,
  ) {}

  /** The key of request n of a session at `server`, remembered for its check. */
  give(session: string, n: number, server: string): string {
    const k = dispatchKey(this.secret, session, n, server);
    if (this.issued.size >= this.bound) this.issued.clear();
    this.issued.set(`${session}\n${n}\n${server}`, k);
    return k;
  }

  /** Does `k` belong to request n of the session at `server`? */
  check(k: unknown, session: string, n: number, server: string): boolean {
    const id = `${session}\n${n}\n${server}`;
    const known = this.issued.get(id);
    if (known === undefined) return k === dispatchKey(this.secret, session, n, server);
    if (known !== k) return false;
    this.issued.delete(id);
    return true;
  }
}
