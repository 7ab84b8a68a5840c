#!/usr/bin/env node
/**
 * The `tandem` command. Every long-running command drains on SIGINT/SIGTERM (a second signal
 * exits at once). Logs go to stderr (pino); `client --json` writes JSON lines to stdout.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { TandemClient, type ClientSession, type PersistedSession } from "../actors/client.js";
import { ManagerNode, type ManagerStatus } from "../actors/manager.js";
import { TandemServer, type Handler } from "../actors/server.js";
import { parseHedge, unwrap } from "../actors/protocol.js";
import type { HedgeOptions } from "../machines/types.js";
import { ledgerHandler, openLedgerIfMissing, transferFor } from "./ledger.js";
import { readSessionInfo } from "../actors/sessionInfo.js";
import type { FencedStore } from "../runtime/stores/store.js";
import { KvStore } from "../runtime/stores/store-kv.js";
import { PgStore } from "../runtime/stores/store-pg.js";
import { configFromEnv, resolveConfig, type Config } from "../runtime/config.js";
import { flagHelp, SETTINGS } from "../runtime/settings.js";
import { TandemError } from "../runtime/errors.js";
import { createLogger, type Logger } from "../runtime/logger.js";
import { NatsServer, parseSync, serverConfig } from "../runtime/dev/nats-server.js";
import { NatsCluster } from "../runtime/dev/nats-cluster.js";
import { buildAuth, type AuthUser } from "../runtime/dev/auth.js";
import { startRuntime, type Runtime } from "../runtime/runtime.js";
import { builtinHandlers, straggle } from "./work.js";
import { CHAOS_SESSION_RETRY, chaosBehaviour } from "./chaos-mix.js";
import { encode } from "../runtime/wire.js";

type Options = NonNullable<ParseArgsConfig["options"]>;

// The flags every command takes, and their help, from the one settings table (settings.ts).
const COMMON: Options = {
  ...Object.fromEntries(SETTINGS.filter((x) => x.flag).map((x) => [x.flag!, { type: "string" as const }])),
  help: { type: "boolean", short: "h" },
};

const COMMON_HELP = `
Common options (flags override the environment variables; README: Configuration):
${flagHelp()}`;

const HELP: Record<string, string> = {
  main: `tandem: fault-tolerant work distribution on NATS JetStream

Usage: tandem <command> [options]

Commands:
  demo       a guided demo: manager, two servers, three clients, one server killed midway
  nats       run nats-server with JetStream in the foreground (store under .tandem/nats)
  manager    run a manager node (one primary holds the lease; others stand by)
  server     run a server session for a service with a built-in handler
  client     send requests to a service and report the responses
  status     show the primary manager, services, sessions and servers
  trace      what happened to a session's requests, from its queues and records
  dlq        the dead-letter stream: list, show, replay and purge entries
  auth       write per-role NATS users and permissions (for \`tandem nats --secure\`)

Run \`tandem <command> --help\` for its options.`,
  demo: `Usage: tandem demo [--requests N] [--no-kill] [--hedge]

Starts an embedded nats-server, one manager, two servers and three clients as separate
processes, shows progress, kills one server with SIGKILL midway, and prints what happened.
  --requests N   requests per client (default 300)
  --no-kill      do not kill a server
  --hedge        the hedging demo instead: a straggler server, ledger transfers without and
                 with hedging, p50/p99 of both, the extra work, and the ledger checked (I4)`,
  auth: `Usage: tandem auth --clients ID,ID --servers ID:SERVICE,... [--out DIR]

Writes DIR/nats.conf (one NATS user per role with subject permissions) and DIR/users.json
(the passwords; keep it private). Run again to add users: existing passwords are kept.
  --clients IDS      client ids (each client's NATS user is its id)
  --servers LIST     server ids with their service (the server's user is its id)
  --out DIR          default <data-dir>/auth
Then: tandem nats --secure, and every role with --user/--password (or NATS_USER/NATS_PASSWORD):
the manager as "manager", servers and clients as their ids, \`tandem status\` as "admin".`,
  nats: `Usage: tandem nats [--port N] [--store DIR] [--cluster N] [--secure [--auth DIR]]

Runs nats-server -js on 127.0.0.1 in the foreground. Other tandem commands in this directory
find it without NATS_URL.
  --port N       client port (default: a free port)
  --store DIR    store directory (default <data-dir>/nats, or <data-dir>/nats-cluster)
  --cluster N    N servers in a cluster (3 for replicated streams), each with its own client
                 port, route port and store; streams and buckets then get 3 replicas
  --secure       require the users and permissions \`tandem auth\` wrote (default <data-dir>/auth)
  --tls-cert F --tls-key F   serve TLS with this certificate (clients then need --ca / NATS_CA)
  --sync always|DUR  when JetStream fsyncs its store: "always" fsyncs every write (survives a
                     power loss of a single node; costs throughput), a duration such as 1s
                     syncs that often (nats-server's default is 2m: acknowledged data survives a
                     process crash, not a power loss)`,
  manager: `Usage: tandem manager [options]

Runs a manager node. Without a lease holder it becomes primary; otherwise it waits as standby
and takes over when the primary's lease runs out.`,
  server: `Usage: tandem server --service S --work echo|hash|sleep|chaos|ledger [options]

  --service S        service name (letters, digits, _ or -)
  --work W           echo: return the payload; hash: CPU work that records its progress as
                     server restart data; sleep: wait --sleep-ms per request; chaos: fail as
                     the payload says ({"do":"throw"|"retry"|"exit"|"hang"}, README: When
                     work fails); ledger: transfers between accounts A-D in --store, each
                     applied exactly once
  --store S          ledger: kv (JetStream KV, the default) or a postgres://user@host/db URL
  --sleep-ms N       sleep: milliseconds per request (default 20)
  --rounds N         hash: sha256 rounds per request (default 20000)
  --straggle-pct P   delay P percent of calls (a straggler, for hedging) ...
  --straggle-ms M    ... by M milliseconds (default 500)
  --capacity N       requests handled at once (default 64)
  --id ID            server id (default <service>-<random>)`,
  client: `Usage: tandem client --service S --requests N [--concurrency C] [--json] [options]

Opens C sessions and sends N requests over them (each session one at a time, in order).
  --service S        service to call
  --requests N       requests in all (default 100)
  --concurrency C    sessions in parallel (default 1)
  --json             one JSON line per response on stdout (request id, response, latency),
                     then a summary line
  --state FILE       keep the sessions in FILE: a client killed and started again with the
                     same FILE resumes its sessions and gets every response it had not taken
  --id ID            client id (default: random, or the one in --state)
  --payload JSON     request payload (default {"i": <index>})
  --mix SEED         for a --work chaos service: send a reproducible mix of succeeding,
                     failing, retried, server-killing, hanging and cancelled requests, each
                     response line saying the outcomes its behaviour allows ("expect")
  --transfers        send ledger transfers (update requests) instead of a payload
  --hedge K          hedged sessions: up to K copies of each request on different servers
  --hedge-after A    milliseconds before hedging (0 = at once, default 50) or p95
  --keep             do not close the sessions at the end
  --trace SUBJECT    nats-server message tracing: every request publish carries
                     Nats-Trace-Dest: SUBJECT; watch it with \`nats sub SUBJECT\``,
  trace: `Usage: tandem trace SESSION [N] [--json]

What happened to a session's requests (or to request N), read from the session's queues and
records: when each was queued, the checkpoints and the response and which server wrote them,
hedged copies and the winner, and when the client committed its receipt. Times are the ones
JetStream stored. Closed sessions are purged, so only open ones can be traced.
  --json         one JSON object instead of the table`,
  status: `Usage: tandem status [--json] [--session ID]

Asks the primary manager for its view: epoch, node, services, sessions and servers.
  --session ID   one session's record and, for hedged requests, which server took which
                 copy and which one won`,
};

function fail(msg: string, code = 2): never {
  process.stderr.write(`tandem: ${msg}\n`);
  process.exit(code);
}

function parse(cmd: string, argv: string[], extra: Options) {
  try {
    const r = parseArgs({ args: argv, options: { ...COMMON, ...extra }, allowPositionals: false, strict: true });
    if (r.values.help) {
      process.stdout.write(`${HELP[cmd] ?? HELP.main}\n${cmd === "main" ? "" : COMMON_HELP}\n`);
      process.exit(0);
    }
    return r.values as Record<string, string | boolean | undefined>;
  } catch (err) {
    fail(`${(err as Error).message}\nRun \`tandem ${cmd} --help\` for usage.`);
  }
}

function configFrom(v: Record<string, string | boolean | undefined>): Config {
  const flags = Object.fromEntries(SETTINGS.filter((x) => x.flag && typeof v[x.flag] === "string").map((x) => [x.key, v[x.flag!] as string]));
  try {
    return resolveConfig(configFromEnv(), flags);
  } catch (err) {
    fail((err as Error).message);
  }
}

function int(v: string | boolean | undefined, name: string, dflt: number, min = 0): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) fail(`--${name} must be an integer >= ${min} (got ${String(v)})`);
  return n;
}

/** Run until SIGINT/SIGTERM, then drain with `stop`; a second signal exits at once. */
function untilSignal(log: Logger, stop: () => Promise<void>): Promise<void> {
  return new Promise((resolveDone) => {
    let stopping = false;
    const onSignal = (sig: string) => {
      if (stopping) {
        log.warn({ signal: sig }, "second signal: exiting without draining");
        process.exit(130);
      }
      stopping = true;
      log.info({ signal: sig }, "draining (send the signal again to exit at once)");
      stop()
        .catch((err) => log.error({ err }, "drain failed"))
        .finally(() => resolveDone());
    };
    process.on("SIGINT", () => onSignal("SIGINT"));
    process.on("SIGTERM", () => onSignal("SIGTERM"));
  });
}

async function runtime(cfg: Config, log: Logger, name: string, role: "manager" | "other" = "other"): Promise<Runtime> {
  try {
    // With a NATS user (a secured deployment) only the manager creates streams and buckets.
    return await startRuntime(cfg, { logger: log, name, provision: role === "manager" || !cfg.natsUser });
  } catch (err) {
    if (err instanceof TandemError) fail(`${err.message}`, 1);
    throw err;
  }
}

// ---- commands --------------------------------------------------------------------------

async function cmdNats(argv: string[]): Promise<void> {
  const v = parse("nats", argv, {
    port: { type: "string" },
    store: { type: "string" },
    cluster: { type: "string" },
    secure: { type: "boolean" },
    auth: { type: "string" },
    "tls-cert": { type: "string" },
    "tls-key": { type: "string" },
    sync: { type: "string" },
  });
  const cfg = configFrom(v);
  const log = createLogger({ level: cfg.logLevel, name: "tandem-nats" });
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
    const discovery = join(resolve(cfg.dataDir), "nats.json");
    writeFileSync(discovery, JSON.stringify({ url: cluster.url, pid: cluster.servers[0]!.pid }));
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
  const port = v.port === undefined ? undefined : int(v.port, "port", 4222, 1);
  const server = await NatsServer.start({ storeDir, ...(port ? { port } : {}), args: secureArgs, config });
  const discovery = join(resolve(cfg.dataDir), "nats.json");
  writeFileSync(discovery, JSON.stringify({ url: server.url, pid: server.pid }));
  log.info({ url: server.url, storeDir, pid: server.pid, sync: sync ?? "2m (nats-server default)" }, `nats-server ready; other commands here use it, or set NATS_URL=${server.url}`);
  process.stdout.write(`${server.url}\n`);
  await untilSignal(log, async () => {
    rmSync(discovery, { force: true });
    await server.shutdown();
  });
}

function authDir(cfg: Config, dir?: string): string {
  return dir ?? join(resolve(cfg.dataDir), "auth");
}

function adminAuth(cfg: Config, dir?: string): { user?: string; pass?: string } {
  try {
    const users = JSON.parse(readFileSync(join(authDir(cfg, dir), "users.json"), "utf8")) as AuthUser[];
    const admin = users.find((u) => u.user === "admin");
    return admin ? { user: admin.user, pass: admin.password } : {};
  } catch {
    return {};
  }
}

async function cmdAuth(argv: string[]): Promise<void> {
  const v = parse("auth", argv, { clients: { type: "string" }, servers: { type: "string" }, out: { type: "string" } });
  const cfg = configFrom(v);
  const dir = authDir(cfg, typeof v.out === "string" ? v.out : undefined);
  const list = (s: unknown) => (typeof s === "string" ? s.split(",").map((x) => x.trim()).filter(Boolean) : []);
  const servers = list(v.servers).map((x) => {
    const [id, service] = x.split(":");
    if (!id || !service) fail(`--servers takes ID:SERVICE pairs (got "${x}")`);
    return { id, service };
  });
  const usersFile = join(dir, "users.json");
  const previous = existsSync(usersFile) ? (JSON.parse(readFileSync(usersFile, "utf8")) as AuthUser[]) : [];
  // Users named before stay (with their passwords) unless named again with another role.
  const clients = [...new Set([...previous.filter((u) => u.role === "client").map((u) => u.user), ...list(v.clients)])];
  const known = new Map(previous.filter((u) => u.role === "server").map((u) => [u.user, u.service!]));
  for (const s of servers) known.set(s.id, s.service);
  let built: { users: AuthUser[]; conf: string };
  try {
    built = buildAuth({ prefix: cfg.prefix, clients, servers: [...known].map(([id, service]) => ({ id, service })) }, previous);
  } catch (err) {
    fail((err as Error).message);
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, "nats.conf"), built.conf, { mode: 0o600 });
  writeFileSync(usersFile, JSON.stringify(built.users, null, 2), { mode: 0o600 });
  process.stdout.write(`wrote ${join(dir, "nats.conf")} and ${usersFile} (${built.users.length} users)\n`);
  process.stdout.write("run: tandem nats --secure; then each role with --user and --password from users.json\n");
}

async function cmdManager(argv: string[]): Promise<void> {
  const v = parse("manager", argv, {});
  const cfg = configFrom(v);
  const log = createLogger({ level: cfg.logLevel });
  const rt = await runtime(cfg, log, `tandem-manager-${cfg.node}`, "manager");
  const node = new ManagerNode(rt);
  node.start();
  log.info({ node: cfg.node }, "manager node started");
  await untilSignal(log, async () => {
    await node.stop();
    await rt.close();
  });
}

async function cmdServer(argv: string[]): Promise<void> {
  const v = parse("server", argv, {
    service: { type: "string" },
    work: { type: "string" },
    "sleep-ms": { type: "string" },
    rounds: { type: "string" },
    capacity: { type: "string" },
    id: { type: "string" },
    store: { type: "string" },
    "straggle-pct": { type: "string" },
    "straggle-ms": { type: "string" },
  });
  if (typeof v.service !== "string") fail("--service is required (run `tandem server --help`)");
  const work = (v.work as string | undefined) ?? "echo";
  const handlers: Record<string, Handler> = { ...builtinHandlers({ sleepMs: int(v["sleep-ms"], "sleep-ms", 20), rounds: int(v.rounds, "rounds", 20_000, 1) }), ledger: ledgerHandler() };
  if (!(work in handlers)) fail(`--work must be one of ${Object.keys(handlers).join(", ")} (got ${work})`);
  const pct = int(v["straggle-pct"], "straggle-pct", 0);
  if (pct > 100) fail("--straggle-pct must be 0..100");
  const cfg = configFrom(v);
  const log = createLogger({ level: cfg.logLevel });
  const rt = await runtime(cfg, log, `tandem-server-${v.service}`);
  let store: FencedStore | undefined;
  const storeArg = typeof v.store === "string" ? v.store : work === "ledger" ? "kv" : undefined;
  try {
    if (storeArg === "kv") store = await KvStore.open(rt.nc, { bucket: rt.names.bucketLedger, fence: rt.kv.fence, replicas: rt.replicas });
    else if (storeArg?.startsWith("postgres://") || storeArg?.startsWith("postgresql://")) store = await PgStore.open({ url: storeArg });
    else if (storeArg !== undefined) fail(`--store must be kv or a postgres:// URL (got ${storeArg})`);
    if (store && work === "ledger") await openLedgerIfMissing(store);
  } catch (err) {
    await rt.close();
    fail(err instanceof TandemError ? `${err.code}: ${err.message}` : String(err), 1);
  }
  const server = await TandemServer.start(rt, {
    service: v.service,
    handler: straggle(handlers[work]!, pct, int(v["straggle-ms"], "straggle-ms", 500)),
    capacity: int(v.capacity, "capacity", 64, 1),
    ...(typeof v.id === "string" ? { id: v.id } : {}),
    ...(store ? { store } : {}),
  });
  log.info({ server: server.id, service: server.service, work, ...(store ? { store: store.kind } : {}), ...(pct ? { stragglePct: pct } : {}) }, "server ready");
  await untilSignal(log, async () => {
    await server.stop();
    await store?.close();
    await rt.close();
    log.info(server.stats, "server stopped");
  });
}

interface ClientState {
  client: string;
  service: string;
  requests: number;
  sessions: PersistedSession[];
}

function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function writeAtomic(file: string, data: string): void {
  mkdirSync(dirname(resolve(file)), { recursive: true });
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, data);
  renameSync(tmp, file);
}

async function cmdClient(argv: string[]): Promise<void> {
  const v = parse("client", argv, {
    service: { type: "string" },
    requests: { type: "string" },
    concurrency: { type: "string" },
    json: { type: "boolean" },
    state: { type: "string" },
    id: { type: "string" },
    payload: { type: "string" },
    keep: { type: "boolean" },
    transfers: { type: "boolean" },
    hedge: { type: "string" },
    "hedge-after": { type: "string" },
    trace: { type: "string" },
    mix: { type: "string" },
  });
  const mix = v.mix === undefined ? undefined : int(v.mix, "mix", 0);
  let hedge: HedgeOptions | undefined;
  if (v.hedge !== undefined) {
    const after = v["hedge-after"] === "p95" ? "p95" : int(v["hedge-after"], "hedge-after", 50);
    try {
      hedge = parseHedge({ copies: int(v.hedge, "hedge", 2, 2), after });
    } catch (err) {
      fail((err as Error).message);
    }
  }
  const transfers = v.transfers === true;
  const cfg = configFrom(v);
  const log = createLogger({ level: cfg.logLevel });
  const json = v.json === true;
  const stateFile = typeof v.state === "string" ? v.state : undefined;
  let state: ClientState | null = null;
  if (stateFile && existsSync(stateFile)) {
    try {
      state = JSON.parse(readFileSync(stateFile, "utf8")) as ClientState;
    } catch (err) {
      fail(`--state ${stateFile} is not a Tandem client state file (${(err as Error).message}); remove it to start fresh`);
    }
  }
  const service = state?.service ?? (typeof v.service === "string" ? v.service : fail("--service is required (run `tandem client --help`)"));
  const total = state?.requests ?? int(v.requests, "requests", 100, 1);
  const concurrency = int(v.concurrency, "concurrency", 1, 1);
  let payloadTemplate: unknown;
  if (typeof v.payload === "string") {
    try {
      payloadTemplate = JSON.parse(v.payload);
    } catch {
      fail("--payload must be JSON");
    }
  }
  const rt = await runtime(cfg, log, "tandem-client");
  const traceDest = typeof v.trace === "string" ? v.trace : undefined;
  let client: TandemClient;
  try {
    client = await TandemClient.connect(rt, { id: state?.client ?? (typeof v.id === "string" ? v.id : undefined), ...(traceDest ? { traceDest } : {}) });
  } catch (err) {
    await rt.close();
    fail((err as Error).message);
  }
  const out = (o: unknown) => {
    if (json) process.stdout.write(`${JSON.stringify(o)}\n`);
  };
  const started = performance.now();
  const latencies: number[] = [];
  let answered = 0;
  let errors = 0;
  const errorCodes: Record<string, number> = {};
  let sent = 0;
  const sessions: ClientSession[] = [];
  const quotas: number[] = [];
  try {
    if (state) {
      for (const p of state.sessions) {
        const s = await client.resume(p);
        sessions.push(s);
        out({ type: "resumed", session: s.id, restart: s.restart ?? null, lastReq: s.lastRequest, taken: s.takenUpTo });
      }
      log.info({ sessions: sessions.length }, "resumed sessions from the state file");
    } else {
      for (let i = 0; i < Math.min(concurrency, total); i++) sessions.push(await client.open(service, { ...(hedge ? { hedge } : {}), ...(mix !== undefined ? { retry: CHAOS_SESSION_RETRY } : {}) }));
      state = { client: client.id, service, requests: total, sessions: sessions.map((s) => s.snapshot()) };
      if (stateFile) writeAtomic(stateFile, JSON.stringify(state));
    }
  } catch (err) {
    fail(err instanceof TandemError ? `${err.code}: ${err.message}` : String(err), 1);
  }
  // Committed receipts, for anyone checking exactly-once on this output.
  for (const s of sessions) s.onCommit((upTo) => out({ type: "taken", session: s.id, upTo }));
  const k = sessions.length;
  for (let i = 0; i < k; i++) quotas.push(Math.floor(total / k) + (i < total % k ? 1 : 0));
  const progress = process.stderr.isTTY && !json ? setInterval(() => process.stderr.write(`\r${answered}/${total} answered`), 200) : undefined;
  let stopping = false;
  const onSignal = () => {
    if (stopping) process.exit(130);
    stopping = true;
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const record = (s: ClientSession, n: number, ok: boolean, value: unknown, error: TandemError | undefined, latency: number | null, server: string) => {
    if (ok) answered++;
    else {
      errors++;
      const code = error?.code ?? "unknown";
      errorCodes[code] = (errorCodes[code] ?? 0) + 1;
    }
    if (latency !== null) latencies.push(latency);
    // Under --mix, the outcomes the request's behaviour allows (for the history checker).
    const b = mix !== undefined ? chaosBehaviour(mix, sessions.indexOf(s), n) : undefined;
    out({ type: "response", request: `${s.id}.${n}`, session: s.id, n, ok, ...(ok ? { response: value } : { error: error?.code }), latencyMs: latency, server, ...(b ? { behaviour: b.kind, expect: b.expect } : {}) });
  };

  await Promise.all(
    sessions.map(async (s, i) => {
      // Responses to requests an earlier incarnation sent (after a resume).
      const orphans = s.unclaimed;
      if (orphans > 0) {
        const it = s.responses();
        for (let c = 0; c < orphans; c++) {
          const r = await it.next();
          if (r.done) break;
          record(s, r.value.n, r.value.ok, r.value.value, r.value.error, null, r.value.server);
        }
      }
      const quota = quotas[i]!;
      while (!stopping && s.lastRequest < quota) {
        const n = s.lastRequest + 1;
        const b = mix !== undefined ? chaosBehaviour(mix, i, n) : null;
        const payload = b ? b.payload : transfers ? transferFor(n * 7 + i) : (payloadTemplate ?? { i: n, session: i });
        const t0 = performance.now();
        sent++;
        try {
          let signal: AbortSignal | undefined;
          if (b?.abortAfterMs !== undefined) {
            const ac = new AbortController();
            setTimeout(() => ac.abort(), b.abortAfterMs);
            signal = ac.signal;
          }
          // Client restart data: how far this session has sent (a resumed client continues there).
          const { response } = await s.send(payload, {
            restart: { sent: n },
            ...(transfers ? { kind: "update" as const } : {}),
            ...(b?.timeoutMs !== undefined ? { timeoutMs: b.timeoutMs } : {}),
            ...(b?.retry ? { retry: b.retry } : {}),
            ...(signal ? { signal } : {}),
          });
          const r = await response;
          if (!r.ok && r.error?.code === "TANDEM_CLOSED") break;
          record(s, n, r.ok, r.value, r.error, performance.now() - t0, r.server);
        } catch (err) {
          // Refused before queueing (back-pressure, too large): nothing was sent.
          sent--;
          const te = err instanceof TandemError ? err : undefined;
          log.error({ err }, te ? `${te.code}: ${te.message}` : "request failed");
          break;
        }
      }
    }),
  );
  if (progress) {
    clearInterval(progress);
    process.stderr.write("\n");
  }
  const done = sessions.every((s, i) => s.lastRequest >= quotas[i]! && s.pending === 0);
  if (done && v.keep !== true) {
    for (const s of sessions) await s.close().catch(() => {});
    if (stateFile) rmSync(stateFile, { force: true });
  }
  latencies.sort((a, b) => a - b);
  const summary = {
    type: "summary",
    client: client.id,
    service,
    sessions: sessions.length,
    sent,
    answered,
    errors,
    ...(errors > 0 ? { errorCodes } : {}),
    complete: done,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    durationMs: Math.round(performance.now() - started),
  };
  if (json) out(summary);
  else process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  await client.close();
  await rt.close();
}

async function cmdStatus(argv: string[]): Promise<void> {
  const v = parse("status", argv, { json: { type: "boolean" }, session: { type: "string" } });
  const cfg = configFrom(v);
  const log = createLogger({ level: cfg.logLevel === "info" ? "warn" : cfg.logLevel });
  const rt = await runtime(cfg, log, "tandem-status");
  if (typeof v.session === "string") {
    const info = await readSessionInfo(rt, v.session);
    if (v.json) process.stdout.write(`${JSON.stringify(info)}\n`);
    else {
      const r = info.record;
      const lines = [
        `session   ${info.session}${r ? `  client ${r.client}  service ${r.service}  server ${r.server ?? "-"}` : "  (no record: closed, or never opened)"}`,
        ...(r ? [`queue     requests ${r.lastReq}  answered ${r.answered}  taken ${r.taken}${r.hedge ? `  hedge ${r.hedge.copies} copies after ${r.hedge.after}${typeof r.hedge.after === "number" ? " ms" : ""}` : ""}`] : []),
        ...(info.hedges.length ? ["", "request  winner                        copies (cancelled)                         ms"] : []),
        ...info.hedges.map((h) => `${String(h.n).padStart(7)}  ${(h.winner ?? "-").padEnd(29)} ${h.copies.map((c) => (h.cancelled.includes(c) ? `(${c})` : c)).join(" ").padEnd(42)} ${h.latencyMs}`),
      ];
      process.stdout.write(`${lines.join("\n")}\n`);
    }
    await rt.close();
    return;
  }
  let st: ManagerStatus;
  try {
    const r = await rt.nc.request(rt.names.mgr("status"), encode({}), { timeout: 3000 });
    st = unwrap<ManagerStatus>(r.data);
  } catch (err) {
    await rt.close();
    fail(`no primary manager answered (${(err as Error).message}); start one with \`tandem manager\``, 1);
  }
  const lease = await rt.kv.ctl.get("leader");
  const leaseInfo = lease?.operation === "PUT" ? lease.json<{ epoch: number; node: string; since: string }>() : null;
  if (v.json) {
    process.stdout.write(`${JSON.stringify({ ...st, lease: leaseInfo })}\n`);
  } else {
    const lines = [
      `primary   ${st.node}  epoch ${st.epoch}  since ${st.since ?? "?"}${leaseInfo ? `  (lease renewed ${leaseInfo.since})` : ""}`,
      `standbys  ${st.standbys.length === 0 ? "none" : st.standbys.map((s) => `${s.node} (last backup ${s.lastBackupAgeMs} ms ago)`).join(", ")}`,
      `sessions  ${st.sessions}`,
      "",
      "service              sessions  pending  servers  hedged (extra/requests, learned p95)",
      ...st.services.map(
        (s) =>
          `${s.service.padEnd(20)} ${String(s.sessions).padStart(8)} ${String(s.pending).padStart(8)} ${String(s.servers).padStart(8)}  ${
            s.hedging && s.hedging.extra > 0 ? `${s.hedging.extra}/${s.hedging.requests}, p95 ${s.hedging.p95Ms ?? "-"} ms` : "-"
          }`,
      ),
      "",
      "servers",
      ...st.servers.map((s) => `  ${s.id.padEnd(28)} ${s.service.padEnd(16)} ${s.alive ? "alive" : "lost"}`),
    ];
    process.stdout.write(`${lines.join("\n")}\n`);
  }
  await rt.close();
}

async function cmdTrace(argv: string[]): Promise<void> {
  let positionals: string[];
  let v: Record<string, string | boolean | undefined>;
  try {
    const r = parseArgs({ args: argv, options: { ...COMMON, json: { type: "boolean" } } as Options, allowPositionals: true, strict: true });
    if (r.values.help) {
      process.stdout.write(`${HELP.trace}\n${COMMON_HELP}\n`);
      process.exit(0);
    }
    positionals = r.positionals;
    v = r.values as Record<string, string | boolean | undefined>;
  } catch (err) {
    fail(`${(err as Error).message}\nRun \`tandem trace --help\` for usage.`);
  }
  const [session, nText, ...extra] = positionals;
  if (!session || extra.length > 0) fail("usage: tandem trace SESSION [N] [--json]");
  const n = nText === undefined ? undefined : int(nText, "N", 1, 1);
  const cfg = configFrom(v);
  const log = createLogger({ level: cfg.logLevel === "info" ? "warn" : cfg.logLevel });
  const rt = await runtime(cfg, log, "tandem-trace");
  const { traceSession, formatTrace } = await import("./request-trace.js");
  const t = await traceSession(rt, session, n);
  await rt.close();
  process.stdout.write(`${v.json ? JSON.stringify(t) : formatTrace(t)}\n`);
  if (!t.client) process.exit(3); // no such session
  if (n !== undefined && t.requests.length === 0) process.exit(3);
}

async function main(): Promise<void> {
  const [cmd, ...rest] = process.argv.slice(2);
  switch (cmd) {
    case "nats":
      return cmdNats(rest);
    case "manager":
      return cmdManager(rest);
    case "server":
      return cmdServer(rest);
    case "client":
      return cmdClient(rest);
    case "status":
      return cmdStatus(rest);
    case "auth":
      return cmdAuth(rest);
    case "trace":
      return cmdTrace(rest);
    case "dlq": {
      const { cmdDlq } = await import("./cli-dlq.js");
      return cmdDlq(rest, {
        common: COMMON,
        commonHelp: COMMON_HELP,
        configFrom,
        fail,
        runtime: (cfg, name) => runtime(cfg, createLogger({ level: cfg.logLevel === "info" ? "warn" : cfg.logLevel }), name),
      });
    }
    case "demo": {
      const { cmdDemo } = await import("./demo.js");
      return cmdDemo(rest);
    }
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(`${HELP.main}\n`);
      return;
    default:
      fail(`unknown command "${cmd}"\n\n${HELP.main}`);
  }
}

main().then(
  () => process.exit(typeof process.exitCode === "number" ? process.exitCode : 0),
  (err) => {
    process.stderr.write(`tandem: ${err instanceof TandemError ? `${err.code}: ` : ""}${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  },
);
