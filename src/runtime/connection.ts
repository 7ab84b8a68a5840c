/**
 * NATS connections with settings fit for failover. nats.js defaults give up after about 20 s
 * of outage (10 attempts x 2 s) and ping every 2 min; a manager failover or a nats-server
 * restart must not end a session, so we reconnect forever and notice dead peers in seconds.
 */
import { AuthorizationError, connect, UserAuthenticationExpiredError, type NatsConnection } from "@nats-io/transport-node";
import { withBackoff } from "./backoff.js";
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
  /** Told, once, when the first connect has waited a few seconds (for the process's log). */
  onWaiting?: (message: string) => void;
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
  // Our own first-connect retries rather than nats.js's waitOnFirstConnect, which would also retry
  // bad credentials and TLS failures forever: those stop at once, with what to fix.
  const firstConnectMs = opts.firstConnectMs ?? FIRST_CONNECT_MS;
  // Waiting is never silent: after 3 s, say which NATS does not answer (once), then keep trying.
  const started = Date.now();
  let told = false;
  const onFailure = (err: unknown) => {
    if (told || Date.now() - started < 3000 || connectRefusal(err, opts) !== null) return;
    told = true;
    opts.onWaiting?.(`no NATS server answers at ${opts.servers.join(", ")} yet (${(err as Error).message}); still trying for ${Math.round(firstConnectMs / 1000)} s. Is nats-server running? (\`tandem nats\` starts one)`);
  };
  const nc = await withBackoff(
    () =>
      connect({
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
      }),
    { initialMs: 100, maxMs: 1000, forMs: firstConnectMs, fatal: (err) => connectRefusal(err, opts) !== null, onFailure },
  ).catch((err: unknown) => {
    throw (
      connectRefusal(err, opts) ??
      new TandemError(ErrorCode.NatsUnreachable, `no NATS server answered at ${opts.servers.join(", ")} within ${Math.round(firstConnectMs / 1000)} s: ${(err as Error).message}. Is nats-server running? (\`tandem nats\` starts one)`, {
        cause: err,
        context: { servers: opts.servers },
      })
    );
  });
  checkServerVersion(nc, opts.servers);
  return nc;
}

/**
 * A first connect that trying again will not mend: bad credentials (nats.js's AuthorizationError,
 * or a server's authentication refusal) or a TLS failure (a Node TLS error, which nats.js passes
 * on as the cause). Null for anything else (nothing listening yet, a timeout).
 */
function connectRefusal(err: unknown, opts: ConnectOptions): TandemError | null {
  const e = err as Error & { cause?: unknown; code?: string };
  const cause = e?.cause as { code?: string; message?: string } | undefined;
  if (err instanceof AuthorizationError || err instanceof UserAuthenticationExpiredError || /authorization|authentication/i.test(e?.message ?? "")) {
    return new TandemError(
      ErrorCode.Auth,
      `NATS refused the credentials of user "${opts.user ?? "(none)"}": ${e.message}. Check NATS_USER and NATS_PASSWORD (or --user/--password); \`tandem auth\` writes them`,
      { cause: err, context: { user: opts.user ?? null } },
    );
  }
  // Node's TLS errors have codes (ERR_TLS_*, DEPTH_ZERO_SELF_SIGNED_CERT, UNABLE_TO_VERIFY_LEAF_SIGNATURE, ...).
  const tlsCode = [e?.code, cause?.code].find((c) => typeof c === "string" && /TLS|CERT|SSL|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME/.test(c));
  if (tlsCode || /certificate|tls|ssl|self.signed|altnames/i.test(`${e?.message ?? ""} ${cause?.message ?? ""}`)) {
    return new TandemError(
      ErrorCode.Config,
      `TLS with the NATS server failed: ${e.message}. Give the CA that signed its certificate with NATS_CA (or --ca), and a client certificate with NATS_CERT/NATS_KEY if it asks for one`,
      { cause: err, ...(tlsCode ? { context: { tlsCode } } : {}) },
    );
  }
  return null;
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
