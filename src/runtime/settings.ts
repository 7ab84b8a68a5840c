/**
 * Every setting once: its key in Config, flag, environment variable, default, bounds and what it
 * does. config.ts takes its defaults, environment names and validation from here; the `tandem`
 * command its common flags and their help; the README's configuration table is this table
 * (`test/integration/settings.test.ts` holds the README to it; `node dist/runtime/settings.js`
 * prints it).
 */

/** Every setting of a process, resolved (config.ts: defaults, then environment, then flags). */
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

export interface Setting {
  key: keyof Config;
  /** The flag, without dashes (common to every command); none when set only by environment. */
  flag?: string;
  env?: string;
  kind: "int" | "string" | "list" | "level";
  /** The default (null: computed, e.g. the node name from host and PID). */
  default: number | string | string[] | null;
  min?: number;
  max?: number;
  help: string;
}

const KiB = 1024;
const MiB = 1024 * KiB;

export const SETTINGS: readonly Setting[] = [
  { key: "natsUrls", flag: "nats", env: "NATS_URL", kind: "list", default: [], help: "NATS servers, comma-separated (none: the nats-server of this directory, `tandem nats` or the shared one the first process started, else start that one)" },
  { key: "prefix", flag: "prefix", env: "TANDEM_PREFIX", kind: "string", default: "tandem", help: "subject prefix and stream/bucket name stem, so deployments can share a NATS" },
  { key: "replicas", flag: "replicas", env: "TANDEM_REPLICAS", kind: "int", default: 0, min: 0, max: 5, help: "stream and bucket replicas; 0 = auto (3 on a cluster of 3 or more servers, else 1)" },
  { key: "dataDir", flag: "data-dir", env: "TANDEM_DATA_DIR", kind: "string", default: ".tandem", help: "state and embedded store directory" },
  { key: "logLevel", flag: "log-level", env: "TANDEM_LOG_LEVEL", kind: "level", default: "info", help: "fatal|error|warn|info|debug|trace|silent" },
  { key: "heartbeatMs", flag: "heartbeat-ms", env: "TANDEM_HEARTBEAT_MS", kind: "int", default: 200, min: 10, max: 60_000, help: "manager: lease renewal period" },
  { key: "leaseMs", flag: "lease-ms", env: "TANDEM_LEASE_MS", kind: "int", default: 1000, min: 50, max: 600_000, help: "manager: a standby takes over after this long without renewal or backup (more than twice the heartbeat)" },
  { key: "backupMs", flag: "backup-ms", env: "TANDEM_BACKUP_MS", kind: "int", default: 250, min: 10, max: 60_000, help: "manager: how often the table is backed up to standbys and snapshotted" },
  { key: "serverHeartbeatMs", flag: "server-heartbeat-ms", env: "TANDEM_SERVER_HEARTBEAT_MS", kind: "int", default: 250, min: 10, max: 60_000, help: "server sessions heartbeat this often" },
  { key: "serverTimeoutMs", flag: "server-timeout-ms", env: "TANDEM_SERVER_TIMEOUT_MS", kind: "int", default: 1500, min: 50, max: 600_000, help: "a server without a heartbeat this long is lost; its work moves (more than twice its heartbeat)" },
  { key: "maxPending", flag: "max-pending", env: "TANDEM_MAX_PENDING", kind: "int", default: 1000, min: 1, max: 1_000_000, help: "requests a session may have outstanding" },
  { key: "maxPayload", flag: "max-payload", env: "TANDEM_MAX_PAYLOAD", kind: "int", default: 256 * KiB, min: 1, max: 64 * MiB, help: "largest payload or restart data, in bytes" },
  { key: "ackTimeoutMs", flag: "ack-timeout-ms", env: "TANDEM_ACK_TIMEOUT_MS", kind: "int", default: 1000, min: 10, max: 600_000, help: "how long the manager waits for a session to acknowledge a message before retrying" },
  { key: "stallMs", env: "TANDEM_STALL_MS", kind: "int", default: 5000, min: 100, max: 3_600_000, help: "a client waiting this long without a delivery (and at least 5 leases) re-syncs with the manager" },
  { key: "duplicateWindowMs", kind: "int", default: 10 * 60 * 1000, min: 1000, max: 7 * 24 * 3600 * 1000, help: "JetStream de-duplication window of the queues; longer than any retry or failover" },
  { key: "hedgeBudgetPct", env: "TANDEM_HEDGE_BUDGET_PCT", kind: "int", default: 10, min: 0, max: 100, help: "hedging: extra copies at most this percent of a service's requests" },
  { key: "hedgeReserve", env: "TANDEM_HEDGE_RESERVE", kind: "int", default: 10, min: 0, max: 100_000, help: "hedging: extra copies allowed in a burst before the percentage applies" },
  { key: "maxSessionsPerClient", env: "TANDEM_MAX_SESSIONS_PER_CLIENT", kind: "int", default: 1000, min: 1, max: 1_000_000, help: "sessions one client id may have open" },
  { key: "maxSessions", env: "TANDEM_MAX_SESSIONS", kind: "int", default: 100_000, min: 1, max: 10_000_000, help: "sessions the manager keeps open, across all clients" },
  { key: "maxSessionBytes", env: "TANDEM_MAX_SESSION_BYTES", kind: "int", default: 16 * MiB, min: KiB, max: 2 ** 40, help: "bytes of requests and responses the manager holds for one session" },
  { key: "maxClientBytes", env: "TANDEM_MAX_CLIENT_BYTES", kind: "int", default: 64 * MiB, min: KiB, max: 2 ** 40, help: "... for one client" },
  { key: "maxHeldBytes", env: "TANDEM_MAX_HELD_BYTES", kind: "int", default: 512 * MiB, min: KiB, max: 2 ** 40, help: "... in all" },
  { key: "dlqMaxBytes", env: "TANDEM_DLQ_MAX_BYTES", kind: "int", default: 256 * MiB, min: 64 * KiB, max: 2 ** 50, help: "bytes the dead-letter stream keeps; past it the oldest entries go" },
  { key: "metricsPort", flag: "metrics-port", env: "TANDEM_METRICS_PORT", kind: "int", default: 0, min: 0, max: 65_535, help: "serve Prometheus /metrics, /healthz and /readyz on this port (0: none)" },
  { key: "node", flag: "node", env: "TANDEM_NODE", kind: "string", default: null, help: "manager node name, unique per process (default <host>-<pid>)" },
  { key: "natsUser", flag: "user", env: "NATS_USER", kind: "string", default: "", help: "NATS user (`tandem auth` writes the users)" },
  { key: "natsPass", flag: "password", env: "NATS_PASSWORD", kind: "string", default: "", help: "NATS password" },
  { key: "natsCa", flag: "ca", env: "NATS_CA", kind: "string", default: "", help: "TLS: the CA file of the NATS servers' certificates" },
  { key: "natsCert", env: "NATS_CERT", kind: "string", default: "", help: "TLS: a client certificate file, if the servers ask for one" },
  { key: "natsKey", env: "NATS_KEY", kind: "string", default: "", help: "TLS: the client certificate's key file" },
];

function shown(s: Setting): string {
  const d = s.default;
  if (d === null) return "computed";
  if (Array.isArray(d)) return d.length ? d.join(",") : "none";
  if (d === "") return "none";
  if (typeof d === "number" && d >= MiB && d % MiB === 0) return `${d / MiB} MiB`;
  if (typeof d === "number" && d >= KiB && d % KiB === 0 && s.key.toLowerCase().includes("payload")) return `${d / KiB} KiB`;
  return String(d);
}

/** The README's configuration table. */
export function settingsTable(): string {
  const rows = SETTINGS.map((s) => `| ${s.flag ? `\`--${s.flag}\`` : ""} | ${s.env ? `\`${s.env}\`` : ""} | ${shown(s)} | ${s.help} |`);
  return ["| flag | environment | default | what it does |", "|---|---|---|---|", ...rows].join("\n");
}

/** Help lines of the common flags, for every command's --help (wrapped to 100 columns). */
export function flagHelp(width = 100): string {
  const indent = 27;
  return SETTINGS.filter((s) => s.flag)
    .map((s) => {
      const left = `  --${s.flag}${s.kind === "list" ? " URLS" : s.kind === "int" ? " N" : " X"}`.padEnd(indent);
      const words = `${s.help} (${s.env ? `${s.env}, ` : ""}default ${shown(s)})`.split(" ");
      const lines: string[] = [];
      let line = left;
      for (const w of words) {
        if (line.length + 1 + w.length > width && line.trim().length > 0 && line.length > indent) {
          lines.push(line);
          line = " ".repeat(indent);
        }
        line += (line.length > indent ? " " : "") + w;
      }
      lines.push(line);
      return lines.join("\n");
    })
    .join("\n");
}

if (process.argv[1]?.endsWith("settings.js")) process.stdout.write(`${settingsTable()}\n`);
