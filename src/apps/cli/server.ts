/**
 * `tandem server`: run a server session for a service with a built-in handler.
 * Its flags and help are declared here together; the common settings, parsing and runtime
 * come from the kit.
 */
import { TandemServer, type Handler } from "../../actors/server.js";
import { ledgerHandler, openLedgerIfMissing } from "../ledger.js";
import type { FencedStore } from "../../runtime/stores/store.js";
import { KvStore } from "../../runtime/stores/store-kv.js";
import { PgStore } from "../../runtime/stores/store-pg.js";
import { TandemError } from "../../runtime/errors.js";
import { createLogger } from "../../runtime/logger.js";
import { builtinHandlers, straggle } from "../work.js";
import { fail, parse, configFrom, int, untilSignal, runtime } from "./kit.js";

export const HELP = `Usage: tandem server --service S --work echo|hash|sleep|chaos|ledger [options]

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
  --id ID            server id (default <service>-<random>)`;

export async function cmdServer(argv: string[]): Promise<void> {
  const v = parse("server", HELP, argv, {
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
  const log = createLogger({ level: cfg.logLevel, name: `server ${typeof v.id === "string" ? v.id : v.service}` });
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
