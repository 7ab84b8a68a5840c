/**
 * NATS connections with settings fit for failover. nats.js defaults give up after about 20 s
 * of outage (10 attempts x 2 s) and ping every 2 min; a manager failover or a nats-server
 * restart must not end a session, so we reconnect forever and notice dead peers in seconds.
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { inboxPrefixFor } from "./auth.js";
import { ErrorCode, TandemError } from "./errors.js";

export interface ConnectOptions {
  servers: string[];
  name: string;
  /** Credentials for secured deployments. */
  user?: string;
  pass?: string;
}

export const RECONNECT = {
  maxReconnectAttempts: -1,
  reconnectTimeWait: 250,
  reconnectJitter: 100,
  pingInterval: 2000,
  maxPingOut: 3,
} as const;

export async function connectNats(opts: ConnectOptions): Promise<NatsConnection> {
  return connect({
    servers: opts.servers,
    name: opts.name,
    ...RECONNECT,
    waitOnFirstConnect: true,
    // nats.js captures two stack traces (new Error) per request for "async traces"; every
    // dispatch, delivery and JetStream publish is a request, and the manager's profile had 17 %
    // of its CPU there. Our errors carry codes and context instead.
    noAsyncTraces: true,
    // A secured deployment gives each user its own inbox prefix, so its replies are its own.
    ...(opts.user !== undefined ? { user: opts.user, pass: opts.pass ?? "", inboxPrefix: inboxPrefixFor(opts.user) } : {}),
  }).catch((err: unknown) => {
    const e = err as Error;
    if (/authorization|authentication|auth/i.test(`${e?.name} ${e?.message}`)) {
      throw new TandemError(
        ErrorCode.Auth,
        `NATS refused the credentials of user "${opts.user ?? "(none)"}": ${e.message}. Check NATS_USER and NATS_PASSWORD (or --user/--password); \`tandem auth\` writes them`,
        { cause: err, context: { user: opts.user ?? null } },
      );
    }
    throw err;
  });
}
