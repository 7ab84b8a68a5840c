/**
 * The process-level runtime: a NATS connection (to NATS_URL, or to an embedded nats-server),
 * JetStream handles, provisioned streams and buckets, names and the root logger.
 */
import { ErrorCode, TandemError } from "./errors.js";
import { withBackoff } from "./backoff.js";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Config } from "./config.js";
import { inboxPrefixFor } from "./dev/auth.js";
import { connectNats } from "./connection.js";
import type { Logger } from "./logger.js";
import { NatsServer } from "./dev/nats-server.js";
import { provisionBuckets, provisionStreams, type Buckets } from "./provision.js";
import { ensureStoreBucket } from "./stores/store-kv.js";
import { Requester } from "./requester.js";
import { Names } from "./wire.js";
import { Metrics } from "./metrics.js";
import { Health, serveMetrics, type MetricsEndpoint } from "./health.js";

/** Ack timeout of JetStream publishes (acks take < 200 ms at p99.9 under load; CPU-starved
 * processes need more). */
export const JS_TIMEOUT_MS = 3000;

export interface Runtime {
  readonly config: Config;
  readonly names: Names;
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly kv: Buckets;
  /** Request/reply over one wildcard inbox (the hot paths' publishes and requests). */
  readonly requester: Requester;
  /** Replicas of the streams and buckets (resolved from `replicas: 0` = auto). */
  readonly replicas: number;
  readonly logger: Logger;
  /** Prometheus metrics every role of this process records into (served on --metrics-port). */
  readonly metrics: Metrics;
  /** The readiness checks of this process's roles (/readyz). */
  readonly health: Health;
  /** Whether the connection to NATS is up now (not between a disconnect and a reconnect). */
  natsConnected(): boolean;
  /**
   * Serve /metrics, /healthz and /readyz on 127.0.0.1:port (0: a free port); startRuntime does
   * it by itself when config.metricsPort is set. Closed with the runtime.
   */
  serveMetrics(port: number): Promise<MetricsEndpoint>;
  close(): Promise<void>;
}

/**
 * What `nats.json` in a data directory says: the nats-server every Tandem process of that
 * directory uses when NATS_URL is not set. Written by `tandem nats` (foreground) or by the first
 * process that needed one (the shared embedded server, detached: it outlives that process and
 * `tandem nats --stop` ends it).
 */
export interface Discovery {
  url: string;
  pid: number;
  /** Started by a Tandem process on demand (not by `tandem nats`). */
  embedded?: boolean;
  storeDir?: string;
  /** nats-server's HTTP monitoring port, when it has one. */
  monitorPort?: number;
}

export function discoveryFile(dataDir: string): string {
  return join(resolve(dataDir), "nats.json");
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The nats-server a Tandem process of this directory started, if still alive. */
export function findEmbedded(dataDir: string): Discovery | null {
  const f = discoveryFile(dataDir);
  if (!existsSync(f)) return null;
  try {
    const d = JSON.parse(readFileSync(f, "utf8")) as Discovery;
    return typeof d.url === "string" && typeof d.pid === "number" && alive(d.pid) ? d : null;
  } catch {
    return null;
  }
}

/** A lock file older than this belongs to a process that died while starting the server. */
const STALE_LOCK_MS = 30_000;

/**
 * The data directory's shared nats-server: the one already running, or one this process starts
 * (detached) under an exclusive lock file, so that processes started together share one.
 */
export async function sharedEmbedded(dataDir: string, logger: Logger): Promise<Discovery & { startedHere: boolean }> {
  const dir = resolve(dataDir);
  mkdirSync(dir, { recursive: true });
  const lock = join(dir, "nats.lock");
  const until = Date.now() + 30_000;
  for (;;) {
    const found = findEmbedded(dir);
    if (found) return { ...found, startedHere: false };
    let fd: number | undefined;
    try {
      fd = openSync(lock, "wx");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const age = Date.now() - (statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
      if (age > STALE_LOCK_MS) rmSync(lock, { force: true });
      if (Date.now() > until) {
        throw new TandemError(ErrorCode.NatsServer, `another process holds ${lock} and has not started a nats-server in 30 s; remove the file if no tandem process is starting`, { context: { lock } });
      }
      await new Promise((r) => setTimeout(r, 100));
      continue;
    }
    try {
      const again = findEmbedded(dir); // started between our look and our lock
      if (again) return { ...again, startedHere: false };
      const storeDir = join(dir, "nats");
      const server = await NatsServer.start({ storeDir, detached: true });
      const d: Discovery = { url: server.url, pid: server.pid!, embedded: true, storeDir };
      writeFileSync(discoveryFile(dir), JSON.stringify(d));
      logger.info({ url: d.url, pid: d.pid, storeDir }, "started this directory's shared nats-server");
      return { ...d, startedHere: true };
    } finally {
      closeSync(fd);
      rmSync(lock, { force: true });
    }
  }
}

export interface StartOptions {
  logger: Logger;
  /** Connection name, shows in nats-server's connz. */
  name: string;
  /** Provision streams and buckets (every role does it; it is idempotent). */
  provision?: boolean;
  /**
   * Without NATS_URL and with no nats-server running for the data directory, start the shared
   * one (default). Read-only commands say false: they never make a world of their own.
   */
  embedded?: boolean;
}

export async function startRuntime(config: Config, opts: StartOptions): Promise<Runtime> {
  const logger = opts.logger;
  let servers = config.natsUrls;
  if (servers.length === 0) {
    const found = findEmbedded(config.dataDir);
    if (found) {
      servers = found.url.split(","); // one server, or a cluster started by `tandem nats --cluster`
      const what = found.embedded ? "shared embedded nats-server (no NATS_URL; already running; `tandem nats --stop` ends it)" : "nats-server of `tandem nats` (no NATS_URL)";
      logger.info({ url: found.url, pid: found.pid, dataDir: resolve(config.dataDir) }, `NATS: ${found.url}, this directory's ${what}`);
    } else if (opts.embedded === false) {
      throw new TandemError(
        ErrorCode.NatsUnreachable,
        `no NATS_URL, and no nats-server running for ${resolve(config.dataDir)}: start one there (\`tandem nats\`), or point this command at yours with NATS_URL or --nats`,
        { context: { dataDir: config.dataDir } },
      );
    } else {
      const d = await sharedEmbedded(config.dataDir, logger);
      servers = [d.url];
      logger.info(
        { url: d.url, pid: d.pid, dataDir: resolve(config.dataDir) },
        `NATS: ${d.url}, this directory's shared embedded nats-server (no NATS_URL; ${d.startedHere ? "started now" : "already running"}; \`tandem nats --stop\` ends it)`,
      );
    }
  } else {
    logger.info({ url: servers.join(",") }, `NATS: ${servers.join(",")} (NATS_URL)`);
  }
  const tls = config.natsCa || config.natsCert ? { ...(config.natsCa ? { caFile: config.natsCa } : {}), ...(config.natsCert ? { certFile: config.natsCert, keyFile: config.natsKey } : {}) } : undefined;
  const nc = await connectNats({
    servers,
    name: opts.name,
    onWaiting: (message) => logger.warn({ servers }, message),
    ...(config.natsUser ? { user: config.natsUser, pass: config.natsPass } : {}),
    ...(tls ? { tls } : {}),
  });
  const names = new Names(config.prefix);
  // A publish lost in a NATS outage would wait the default 5 s for its ack; every Tandem publish
  // is retried with the same message id, so a short timeout only costs a de-duplicated retry.
  const js = jetstream(nc, { timeout: JS_TIMEOUT_MS });
  // Auto: three replicas on a cluster of three or more (the servers it advertises), else one.
  const clusterSize = nc.info?.connect_urls?.length ?? 1;
  const replicas = config.replicas > 0 ? config.replicas : clusterSize >= 3 ? 3 : 1;
  const popts = { replicas, duplicateWindowMs: config.duplicateWindowMs, dlqMaxBytes: config.dlqMaxBytes };
  // NATS may go away while we start (a restart, a failover): keep trying for a minute.
  const { jsm, kv } = await withBackoff(
    async () => {
      const jsm = await jetstreamManager(nc);
      if (opts.provision !== false) await provisionStreams(jsm, names, popts);
      // A user without rights to create streams (a secured client or server) binds to them.
      const kv = await provisionBuckets(nc, names, { ...popts, bindOnly: opts.provision === false });
      // The KV ledger's bucket too: a secured server may write its keys but not create it.
      if (opts.provision !== false) await ensureStoreBucket(nc, names.bucketLedger, replicas);
      return { jsm, kv };
    },
    { initialMs: 100, maxMs: 2000, forMs: 60_000, onFailure: (err) => logger.warn({ err }, "JetStream not reachable while starting; retrying") },
  );
  const requester = new Requester(nc, config.natsUser ? inboxPrefixFor(config.natsUser) : undefined);
  let closed = false;
  let connected = true;
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === "disconnect") connected = false;
      else if (s.type === "reconnect") connected = true;
    }
  })().catch(() => {});
  const metrics = new Metrics();
  const health = new Health();
  const endpoints: MetricsEndpoint[] = [];
  const natsConnected = () => connected && !nc.isClosed();
  const serve = async (port: number) => {
    const ep = await serveMetrics(metrics, health, natsConnected, port);
    endpoints.push(ep);
    logger.info({ url: ep.url, paths: ["/metrics", "/healthz", "/readyz"] }, `metrics and health on ${ep.url}`);
    return ep;
  };
  if (config.metricsPort > 0) await serve(config.metricsPort);
  return {
    config,
    names,
    nc,
    js,
    jsm,
    kv,
    requester,
    replicas,
    logger,
    metrics,
    health,
    natsConnected,
    serveMetrics: serve,
    async close() {
      if (closed) return;
      closed = true;
      await Promise.all(endpoints.map((e) => e.close()));
      requester.close();
      await nc.drain().catch(() => nc.close());
    },
  };
}
