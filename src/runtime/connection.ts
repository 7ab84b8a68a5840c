/**
 * NATS connections with settings fit for failover. nats.js defaults give up after about 20 s
 * of outage (10 attempts x 2 s) and ping every 2 min; a manager failover or a nats-server
 * restart must not end a session, so we reconnect forever and notice dead peers in seconds.
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { inboxPrefixFor } from "./dev/auth.js";
import { ErrorCode, TandemError } from "./errors.js";
import { atLeast, NATS_SERVER_FLOOR, parseVersion } from "./dev/nats-bin.js";

export interface ConnectOptions {
  servers: string[];
  name: string;
  /** Credentials for secured deployments. */
  user?: string;
  pass?: string;
  /** Give up the first connection after this long (default FIRST_CONNECT_MS). */
  firstConnectMs?: number;
  /** TLS: CA file, and an optional client certificate and key. */
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
}

export const RECONNECT = {
  maxReconnectAttempts: -1,
  // A nats-server back from a restart should be in use within half a second (issue 14): at
  // 250 ms + 100 ms jitter a process that had just tried waited up to 350 ms of it. A refused
  // TCP connect every 100 ms costs nothing.
  reconnectTimeWait: 100,
  reconnectJitter: 50,
  pingInterval: 2000,
  maxPingOut: 3,
} as const;

/** How long a process waits for NATS to come up at start before it gives up. */
export const FIRST_CONNECT_MS = 60_000;

export async function connectNats(opts: ConnectOptions): Promise<NatsConnection> {
  // Our own first-connect loop rather than nats.js's waitOnFirstConnect, which would also retry
  // bad credentials and TLS failures forever: those stop at once, with what to fix.
  const deadline = Date.now() + (opts.firstConnectMs ?? FIRST_CONNECT_MS);
  for (let delay = 100; ; delay = Math.min(delay * 2, 1000)) {
    let nc: NatsConnection;
    try {
      nc = await connect({
        servers: opts.servers,
        name: opts.name,
        ...RECONNECT,
        // nats.js captures two stack traces (new Error) per request for "async traces"; every
        // dispatch, delivery and JetStream publish is a request, and the manager's profile had
        // 17 % of its CPU there. Our errors carry codes and context instead.
        noAsyncTraces: true,
        // A secured deployment gives each user its own inbox prefix, so its replies are its own.
        ...(opts.user !== undefined ? { user: opts.user, pass: opts.pass ?? "", inboxPrefix: inboxPrefixFor(opts.user) } : {}),
        ...(opts.tls ? { tls: opts.tls } : {}),
      });
    } catch (err) {
      const e = err as Error;
      const text = `${e?.name} ${e?.message} ${String((e as { cause?: unknown })?.cause ?? "")}`;
      if (/authorization|authentication/i.test(text)) {
        throw new TandemError(
          ErrorCode.Auth,
          `NATS refused the credentials of user "${opts.user ?? "(none)"}": ${e.message}. Check NATS_USER and NATS_PASSWORD (or --user/--password); \`tandem auth\` writes them`,
          { cause: err, context: { user: opts.user ?? null } },
        );
      }
      if (/certificate|tls|ssl|self.signed|altnames/i.test(text)) {
        throw new TandemError(
          ErrorCode.Config,
          `TLS with the NATS server failed: ${e.message}. Give the CA that signed its certificate with NATS_CA (or --ca), and a client certificate with NATS_CERT/NATS_KEY if it asks for one`,
          { cause: err },
        );
      }
      if (Date.now() > deadline) {
        throw new TandemError(ErrorCode.NoManager, `no NATS server answered at ${opts.servers.join(", ")} within ${Math.round((opts.firstConnectMs ?? FIRST_CONNECT_MS) / 1000)} s: ${e.message}. Is nats-server running? (\`tandem nats\` starts one)`, { cause: err });
      }
      await new Promise((r) => setTimeout(r, delay));
      continue;
    }
    checkServerVersion(nc, opts.servers);
    return nc;
  }
}

/**
 * Refuse a nats-server older than the floor, from its INFO: older servers lack what the design
 * relies on (2.9's filtered purge moved every consumer of a stream past the purged range).
 */
export function checkServerVersion(nc: NatsConnection, servers: string[]): void {
  const problem = serverVersionProblem(nc.info?.version, servers);
  if (!problem) return;
  void nc.close();
  throw problem;
}

/** The error for a server version below the floor (or unreadable); null when it is fine. */
export function serverVersionProblem(found: string | undefined, servers: string[]): TandemError | null {
  const v = parseVersion(found);
  if (v && atLeast(v, NATS_SERVER_FLOOR)) return null;
  return new TandemError(
    ErrorCode.NatsServer,
    `the NATS server at ${servers.join(", ")} is version ${found ?? "(unknown)"}; Tandem needs nats-server ${NATS_SERVER_FLOOR.join(".")} or newer. ` +
      "Upgrade it (`npm run setup` builds 2.15.2 into .tools/bin; or a release binary, or the nats:2.15 container image)",
    { context: { version: found ?? null, floor: NATS_SERVER_FLOOR.join(".") } },
  );
}
