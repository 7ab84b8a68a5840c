/**
 * Configuration in stages: DEFAULTS, then environment (TANDEM_*), then flags. `resolveConfig`
 * returns a Config with every field present or throws a TandemError naming the bad setting.
 * Defaults, environment names and bounds all come from the one settings table (settings.ts).
 */
import { ErrorCode, TandemError } from "./errors.js";
import { SETTINGS } from "./settings.js";

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
  /** Serve Prometheus metrics and health on this port (0: none). */
  metricsPort: number;
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

/** The defaults, from the settings table (settings.ts). */
export const DEFAULTS = Object.fromEntries(SETTINGS.filter((x) => x.default !== null).map((x) => [x.key, x.default])) as unknown as Omit<Config, "node">;

export function defaultConfig(): Config {
  return { ...DEFAULTS, natsUrls: [...DEFAULTS.natsUrls], node: `${hostnameish()}-${process.pid}` };
}

function hostnameish(): string {
  return (process.env.HOSTNAME ?? "node").replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 32) || "node";
}

/** Environment variable -> setting, from the settings table. */
const ENV: Record<string, keyof Config> = Object.fromEntries(SETTINGS.filter((x) => x.env).map((x) => [x.env!, x.key]));

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

/** Integer settings with their bounds, from the settings table. */
const NUMERIC: Array<[keyof Config, number, number]> = SETTINGS.filter((x) => x.kind === "int").map((x) => [x.key, x.min ?? 0, x.max ?? Number.MAX_SAFE_INTEGER]);

/** A bad setting, named as the user gives it: its flag and environment variable (the settings table). */
function bad(setting: string, why: string): TandemError {
  const row = SETTINGS.find((x) => x.key === setting);
  const names = row ? [row.flag ? `--${row.flag}` : null, row.env ?? null].filter((x): x is string => x !== null) : [];
  const shown = names.length ? names.join(" / ") : setting;
  return new TandemError(ErrorCode.Config, `invalid setting ${shown}: ${why}`, {
    context: { setting, ...(row?.flag ? { flag: `--${row.flag}` } : {}), ...(row?.env ? { env: row.env } : {}) },
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
  if (!Array.isArray(cfg.natsUrls)) throw bad("natsUrls", "expected a comma-separated list of URLs");
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
