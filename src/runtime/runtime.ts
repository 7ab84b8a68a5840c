/**
 * The process-level runtime: a NATS connection (to NATS_URL, or to an embedded nats-server),
 * JetStream handles, provisioned streams and buckets, names and the root logger.
 */
import { ErrorCode, TandemError } from "./errors.js";
import { withBackoff } from "./backoff.js";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { existsSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
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
  /** Set when this process started the nats-server it uses. */
  readonly embedded: NatsServer | undefined;
  close(): Promise<void>;
}

interface Discovery {
  url: string;
  pid: number;
}

function discoveryFile(dataDir: string): string {
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

/** A nats-server that another Tandem process of this directory started, if still alive. */
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

/** Start nats-server with its store under dataDir and advertise it to other local processes. */
export async function startEmbedded(dataDir: string, logger: Logger): Promise<NatsServer> {
  const storeDir = join(resolve(dataDir), "nats");
  mkdirSync(storeDir, { recursive: true });
  const server = await NatsServer.start({ storeDir });
  writeFileSync(discoveryFile(dataDir), JSON.stringify({ url: server.url, pid: server.pid } satisfies Partial<Discovery>));
  logger.info({ url: server.url, storeDir, pid: server.pid }, "embedded nats-server started");
  return server;
}

export async function stopEmbedded(server: NatsServer, dataDir: string): Promise<void> {
  const d = findEmbedded(dataDir);
  if (d && d.pid === server.pid) rmSync(discoveryFile(dataDir), { force: true });
  await server.shutdown();
}

export interface StartOptions {
  logger: Logger;
  /** Connection name, shows in nats-server's connz. */
  name: string;
  /** Provision streams and buckets (every role does it; it is idempotent). */
  provision?: boolean;
  /**
   * Without NATS_URL and with no nats-server of `tandem nats` in the data directory, start an
   * embedded one (default). Read-only commands say false: they never make a world of their own.
   */
  embedded?: boolean;
}

export async function startRuntime(config: Config, opts: StartOptions): Promise<Runtime> {
  const logger = opts.logger;
  let embedded: NatsServer | undefined;
  let servers = config.natsUrls;
  if (servers.length === 0) {
    const found = findEmbedded(config.dataDir);
    if (found) {
      servers = found.url.split(","); // one server, or a cluster started by `tandem nats --cluster`
      logger.debug({ url: found.url }, "using the nats-server started by another tandem process");
    } else if (opts.embedded === false) {
      throw new TandemError(
        ErrorCode.NatsUnreachable,
        `no NATS_URL, and no nats-server started by \`tandem nats\` in ${config.dataDir}: start one there (\`tandem nats\`), or point this command at yours with NATS_URL or --nats`,
        { context: { dataDir: config.dataDir } },
      );
    } else {
      embedded = await startEmbedded(config.dataDir, logger);
      servers = [embedded.url];
      logger.warn(
        "no NATS_URL: started an embedded nats-server for this process only; run `tandem nats` or set NATS_URL to share one",
      );
    }
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
    embedded,
    async close() {
      if (closed) return;
      closed = true;
      requester.close();
      await nc.drain().catch(() => nc.close());
      if (embedded) await stopEmbedded(embedded, config.dataDir);
    },
  };
}
