/**
 * Configuration in stages: DEFAULTS, then environment (TANDEM_*), then flags. `resolveConfig`
 * returns a Config with every field present or throws a TandemError naming the bad setting.
 */
import { ErrorCode, TandemError } from "./errors.js";

export interface Config {
  /** NATS servers to connect to; empty means: start an embedded nats-server. */
  natsUrls: string[];
  /** Subject prefix and name stem of streams and buckets, so deployments can share a NATS. */
  prefix: string;
  /** Replicas of every stream and bucket. */
  /** Stream and bucket replicas; 0 = auto (3 on a cluster of 3 or more servers, else 1). */
  replicas: number;
  /** Directory for the embedded nats-server's store and the CLI's state. */
  dataDir: string;
  /** Manager: lease renewal period. */
  heartbeatMs: number;
  /** Manager: a standby takes over after this long without renewal or backup. */
  leaseMs: number;
  /** Manager: how often state is backed up / snapshotted. */
  backupMs: number;
  /** Server sessions heartbeat this often ... */
  serverHeartbeatMs: number;
  /** ... and are declared dead after this long without one. */
  serverTimeoutMs: number;
  /** Largest application payload (request or response) in bytes. */
  maxPayload: number;
  /** Requests a session may have outstanding (sent, response not yet taken). */
  maxPending: number;
  /** How long the manager waits for a session to acknowledge a message before retrying. */
  ackTimeoutMs: number;
  /**
   * A client with requests outstanding and no delivery for this long (at least 5 leases)
   * re-syncs with the manager. Long work its server reports running is not a stall.
   */
  stallMs: number;
  /** JetStream de-duplication window; longer than any retry or failover horizon. */
  duplicateWindowMs: number;
  /** Hedging budget: extra copies at most this percent of requests per service (plus the reserve). */
  hedgeBudgetPct: number;
  /** Hedging budget: extra copies allowed in a burst before the percentage applies. */
  hedgeReserve: number;
  /** NATS user and password (secured deployments: `tandem auth`). */
  natsUser: string;
  natsPass: string;
  /** TLS: the CA that signed the NATS servers' certificates (a file), and an optional client certificate. */
  natsCa: string;
  natsCert: string;
  natsKey: string;
  /** Sessions one client id may have open at once. */
  maxSessionsPerClient: number;
  /** Sessions the manager keeps open at once, across all clients. */
  maxSessions: number;
  /** Bytes of requests and responses the manager holds in memory: per session, per client, in all. */
  maxSessionBytes: number;
  maxClientBytes: number;
  maxHeldBytes: number;
  /** Bytes the dead-letter stream may hold; past it the oldest entries go (writers are never refused). */
  dlqMaxBytes: number;
  /** Manager node name (unique per process). */
  node: string;
  logLevel: string;
}

export const DEFAULTS: Omit<Config, "node"> = {
  natsUrls: [],
  prefix: "tandem",
  replicas: 0,
  dataDir: ".tandem",
  heartbeatMs: 200,
  leaseMs: 1000,
  backupMs: 250,
  serverHeartbeatMs: 250,
  serverTimeoutMs: 1500,
  maxPayload: 256 * 1024,
  maxPending: 1000,
  ackTimeoutMs: 1000,
  stallMs: 5000,
  duplicateWindowMs: 10 * 60 * 1000,
  natsUser: "",
  natsPass: "",
  natsCa: "",
  natsCert: "",
  natsKey: "",
  maxSessionsPerClient: 1000,
  maxSessions: 100_000,
  dlqMaxBytes: 256 * 1024 * 1024,
  maxSessionBytes: 16 * 1024 * 1024,
  maxClientBytes: 64 * 1024 * 1024,
  maxHeldBytes: 512 * 1024 * 1024,
  hedgeBudgetPct: 10,
  hedgeReserve: 10,
  logLevel: "info",
};

export function defaultConfig(): Config {
  return { ...DEFAULTS, node: `${hostnameish()}-${process.pid}` };
}

function hostnameish(): string {
  return (process.env.HOSTNAME ?? "node").replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 32) || "node";
}

const ENV: Record<string, keyof Config> = {
  NATS_URL: "natsUrls",
  TANDEM_PREFIX: "prefix",
  TANDEM_REPLICAS: "replicas",
  TANDEM_DATA_DIR: "dataDir",
  TANDEM_HEARTBEAT_MS: "heartbeatMs",
  TANDEM_LEASE_MS: "leaseMs",
  TANDEM_BACKUP_MS: "backupMs",
  TANDEM_SERVER_HEARTBEAT_MS: "serverHeartbeatMs",
  TANDEM_SERVER_TIMEOUT_MS: "serverTimeoutMs",
  TANDEM_MAX_PAYLOAD: "maxPayload",
  TANDEM_MAX_PENDING: "maxPending",
  TANDEM_ACK_TIMEOUT_MS: "ackTimeoutMs",
  TANDEM_STALL_MS: "stallMs",
  NATS_USER: "natsUser",
  NATS_PASSWORD: "natsPass",
  NATS_CA: "natsCa",
  NATS_CERT: "natsCert",
  NATS_KEY: "natsKey",
  TANDEM_MAX_SESSIONS_PER_CLIENT: "maxSessionsPerClient",
  TANDEM_MAX_SESSIONS: "maxSessions",
  TANDEM_DLQ_MAX_BYTES: "dlqMaxBytes",
  TANDEM_MAX_SESSION_BYTES: "maxSessionBytes",
  TANDEM_MAX_CLIENT_BYTES: "maxClientBytes",
  TANDEM_MAX_HELD_BYTES: "maxHeldBytes",
  TANDEM_HEDGE_BUDGET_PCT: "hedgeBudgetPct",
  TANDEM_HEDGE_RESERVE: "hedgeReserve",
  TANDEM_NODE: "node",
  TANDEM_LOG_LEVEL: "logLevel",
};

type Raw = Partial<Record<keyof Config, string | number | string[] | undefined>>;

/** Settings from the environment, as raw strings (validated by resolveConfig). */
export function configFromEnv(env: NodeJS.ProcessEnv = process.env): Raw {
  const out: Raw = {};
  for (const [name, key] of Object.entries(ENV)) {
    const v = env[name];
    if (v !== undefined && v !== "") out[key] = v;
  }
  return out;
}

const NUMERIC: Array<[keyof Config, number, number]> = [
  ["replicas", 0, 5],
  ["heartbeatMs", 10, 60_000],
  ["leaseMs", 50, 600_000],
  ["backupMs", 10, 60_000],
  ["serverHeartbeatMs", 10, 60_000],
  ["serverTimeoutMs", 50, 600_000],
  ["maxPayload", 1, 64 * 1024 * 1024],
  ["maxPending", 1, 1_000_000],
  ["ackTimeoutMs", 10, 600_000],
  ["stallMs", 100, 3_600_000],
  ["duplicateWindowMs", 1000, 7 * 24 * 3600 * 1000],
  ["hedgeBudgetPct", 0, 100],
  ["maxSessionsPerClient", 1, 1_000_000],
  ["maxSessions", 1, 10_000_000],
  ["dlqMaxBytes", 64 * 1024, 2 ** 50],
  ["maxSessionBytes", 1024, 2 ** 40],
  ["maxClientBytes", 1024, 2 ** 40],
  ["maxHeldBytes", 1024, 2 ** 40],
  ["hedgeReserve", 0, 100_000],
];

function bad(setting: string, why: string): TandemError {
  return new TandemError(ErrorCode.Config, `invalid setting ${setting}: ${why}`, {
    context: { setting },
  });
}

/** Merge layers (later wins) over the defaults and validate. */
export function resolveConfig(...layers: Raw[]): Config {
  const cfg = defaultConfig() as unknown as Record<string, unknown>;
  for (const layer of layers) {
    for (const [k, v] of Object.entries(layer)) if (v !== undefined) cfg[k] = v;
  }
  if (typeof cfg.natsUrls === "string") {
    cfg.natsUrls = cfg.natsUrls
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
  }
  if (!Array.isArray(cfg.natsUrls)) throw bad("natsUrls (NATS_URL)", "expected a comma-separated list of URLs");
  for (const [key, min, max] of NUMERIC) {
    const raw = cfg[key];
    const n = typeof raw === "string" ? Number(raw) : raw;
    if (typeof n !== "number" || !Number.isInteger(n)) {
      throw bad(key, `expected an integer, got ${JSON.stringify(raw)}`);
    }
    if (n < min || n > max) throw bad(key, `${n} is outside ${min}..${max}`);
    cfg[key] = n;
  }
  const c = cfg as unknown as Config;
  if (!/^[A-Za-z][A-Za-z0-9_-]{0,31}$/.test(c.prefix)) {
    throw bad("prefix", `"${c.prefix}" must be a letter then up to 31 letters, digits, _ or - (it is a subject token and a stream name stem)`);
  }
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(c.node)) {
    throw bad("node", `"${c.node}" must be 1-64 letters, digits, _ or -`);
  }
  if (c.leaseMs <= c.heartbeatMs * 2) {
    throw bad("leaseMs", `${c.leaseMs} must be more than twice heartbeatMs (${c.heartbeatMs}) or a healthy primary looks dead`);
  }
  if (c.serverTimeoutMs <= c.serverHeartbeatMs * 2) {
    throw bad("serverTimeoutMs", `${c.serverTimeoutMs} must be more than twice serverHeartbeatMs (${c.serverHeartbeatMs})`);
  }
  if (!["fatal", "error", "warn", "info", "debug", "trace", "silent"].includes(c.logLevel)) {
    throw bad("logLevel", `"${c.logLevel}" is not one of fatal, error, warn, info, debug, trace, silent`);
  }
  return c;
}
