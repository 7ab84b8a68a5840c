/**
 * `tandem nats`: run nats-server with JetStream in the foreground (a cluster with --cluster).
 * Its flags and help are declared here together; the common settings, parsing and runtime
 * come from the kit.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { createLogger } from "../../runtime/logger.js";
import { NatsServer, parseSync, portOr, serverConfig, stopPid } from "../../runtime/dev/nats-server.js";
import { discoveryFile, findEmbedded, type Discovery } from "../../runtime/runtime.js";
import { NatsCluster } from "../../runtime/dev/nats-cluster.js";
import { fail, parse, configFrom, int, untilSignal, adminAuth } from "./kit.js";

export const HELP = `Usage: tandem nats [--port N] [--monitor-port N] [--store DIR] [--cluster N] [--secure [--auth DIR]]
       tandem nats --stop

Runs nats-server -js on 127.0.0.1 in the foreground. Other tandem commands in this directory
find it without NATS_URL (so does the shared one a tandem process starts when none is running).
  --port N       client port (default 4222 when free, else a free port)
  --monitor-port N   nats-server's HTTP monitoring (/varz, /jsz, /connz; default 8222 when
                 free, else a free port; 0 for none)
  --stop         stop the nats-server this directory's tandem processes use (the shared
                 embedded one, or one of \`tandem nats\`) and exit
  --store DIR    store directory (default <data-dir>/nats, or <data-dir>/nats-cluster)
  --cluster N    N servers in a cluster (3 for replicated streams), each with its own client
                 port, route port and store; streams and buckets then get 3 replicas
  --secure       require the users and permissions \`tandem auth\` wrote (default <data-dir>/auth)
  --tls-cert F --tls-key F   serve TLS with this certificate (clients then need --ca / NATS_CA)
  --sync always|DUR  when JetStream fsyncs its store: "always" fsyncs every write (survives a
                     power loss of a single node; costs throughput), a duration such as 1s
                     syncs that often (nats-server's default is 2m: acknowledged data survives a
                     process crash, not a power loss)`;

export async function cmdNats(argv: string[]): Promise<void> {
  const v = parse("nats", HELP, argv, {
    port: { type: "string" },
    store: { type: "string" },
    cluster: { type: "string" },
    secure: { type: "boolean" },
    auth: { type: "string" },
    "tls-cert": { type: "string" },
    "tls-key": { type: "string" },
    sync: { type: "string" },
    "monitor-port": { type: "string" },
    stop: { type: "boolean" },
  });
  const cfg = configFrom(v);
  const log = createLogger({ level: cfg.logLevel, name: "nats" });
  const running = findEmbedded(cfg.dataDir);
  if (v.stop === true) {
    if (!running) {
      process.stdout.write(`no nats-server is running for ${resolve(cfg.dataDir)}\n`);
      return;
    }
    await stopPid(running.pid);
    rmSync(discoveryFile(cfg.dataDir), { force: true });
    process.stdout.write(`stopped the nats-server at ${running.url} (pid ${running.pid})\n`);
    return;
  }
  if (running) {
    fail(`a nats-server is already running for ${resolve(cfg.dataDir)} at ${running.url} (pid ${running.pid}); other commands here use it. Stop it first with \`tandem nats --stop\`, or give this one another --data-dir`, 1);
  }
  const secureArgs: string[] = [];
  let authConf: string | undefined;
  if (v.secure === true) {
    const conf = join(typeof v.auth === "string" ? v.auth : join(resolve(cfg.dataDir), "auth"), "nats.conf");
    if (!existsSync(conf)) fail(`--secure needs ${conf}: write it first with \`tandem auth --clients ... --servers ...\``, 1);
    authConf = readFileSync(conf, "utf8");
  }
  let sync: string | undefined;
  try {
    sync = typeof v.sync === "string" ? parseSync(v.sync) : undefined;
  } catch (err) {
    fail((err as Error).message);
  }
  const config = serverConfig({ sync, authConf });
  if (typeof v["tls-cert"] === "string" || typeof v["tls-key"] === "string") {
    if (typeof v["tls-cert"] !== "string" || typeof v["tls-key"] !== "string") fail("--tls-cert and --tls-key go together");
    secureArgs.push("--tls", "--tlscert", v["tls-cert"] as string, "--tlskey", v["tls-key"] as string);
  }
  if (v.cluster !== undefined) {
    const size = int(v.cluster, "cluster", 3, 1);
    const dir = typeof v.store === "string" ? v.store : join(resolve(cfg.dataDir), "nats-cluster");
    mkdirSync(dir, { recursive: true });
    const cluster = await NatsCluster.start({ size, dir, args: secureArgs, config });
    await cluster.waitReady(30_000, v.secure === true ? adminAuth(cfg, typeof v.auth === "string" ? v.auth : undefined) : {});
    const discovery = discoveryFile(cfg.dataDir);
    writeFileSync(discovery, JSON.stringify({ url: cluster.url, pid: cluster.servers[0]!.pid!, storeDir: dir } satisfies Discovery));
    log.info({ servers: cluster.urls, names: cluster.names, dir }, `NATS cluster of ${size} ready; other commands here use it, or set NATS_URL=${cluster.url}`);
    process.stdout.write(`${cluster.url}\n`);
    await untilSignal(log, async () => {
      rmSync(discovery, { force: true });
      await cluster.shutdown();
    });
    return;
  }
  const storeDir = typeof v.store === "string" ? v.store : join(resolve(cfg.dataDir), "nats");
  mkdirSync(storeDir, { recursive: true });
  const port = v.port === undefined ? await portOr(4222) : int(v.port, "port", 4222, 1);
  const monitorPort = v["monitor-port"] === undefined ? await portOr(8222) : int(v["monitor-port"], "monitor-port", 8222, 0);
  const server = await NatsServer.start({ storeDir, port, ...(monitorPort > 0 ? { monitorPort } : {}), args: secureArgs, config });
  const discovery = discoveryFile(cfg.dataDir);
  writeFileSync(discovery, JSON.stringify({ url: server.url, pid: server.pid!, storeDir, ...(monitorPort > 0 ? { monitorPort } : {}) } satisfies Discovery));
  log.info(
    { url: server.url, storeDir, pid: server.pid, sync: sync ?? "2m (nats-server default)", ...(monitorPort > 0 ? { monitoring: `http://127.0.0.1:${monitorPort}` } : {}) },
    `nats-server ready; other commands here use it, or set NATS_URL=${server.url}`,
  );
  process.stdout.write(`${server.url}\n`);
  await untilSignal(log, async () => {
    rmSync(discovery, { force: true });
    await server.shutdown();
  });
}
