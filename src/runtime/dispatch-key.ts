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
