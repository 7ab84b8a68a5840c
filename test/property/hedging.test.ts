/**
 * Property: hedged ledger transfers under faults. For any run of random straggler latencies
 * and a schedule of SIGKILLs (a server, the primary manager), with every session hedged and
 * every request an `update` through the KV fenced store:
 *   I1-I3, I6  the client histories check out (the same checker as the fault property);
 *   I4         the ledger's total is conserved, the number of applied transfers equals the
 *              distinct transfers answered "applied", and the balances are exactly what
 *              applying each of those once gives;
 *   records    every hedge record names as winner the server whose response was delivered.
 *
 * Bounded like the fault property: TANDEM_PROPERTY_RUNS (default 2; TANDEM_DEEP=1 makes it 20)
 * within a time budget; the seed is printed and TANDEM_SEED replays it.
 */
import { afterAll, describe } from "vitest";
import fc from "fast-check";
import { Kvm } from "@nats-io/kv";
import { Deployment, until } from "../helpers/deployment.js";
import { faultProperty } from "../helpers/property.js";
import { checkHistory, type Line } from "../helpers/history.js";
import { LEDGER_ACCOUNTS, LEDGER_KEY, LEDGER_OPENING, pgDoubleApplied, readLedger, seedLedger, type KvLedger } from "../../src/apps/ledger.js";
import { PgStore } from "../../src/runtime/stores/store-pg.js";
import { PgServer } from "../helpers/postgres.js";
import type { HedgeRecord } from "../../src/actors/hedgeProxy.js";


type Fault = { kind: "server"; i: number } | { kind: "primary" };
interface Step {
  fault: Fault;
  afterMs: number;
  downMs: number;
}
interface Run {
  store: "kv" | "postgres";
  stragglePct: number;
  straggleMs: number;
  hedgeAfter: number;
  steps: Step[];
}

const run: fc.Arbitrary<Run> = fc.record({
  store: fc.constantFrom("kv" as const, "postgres" as const),
  stragglePct: fc.integer({ min: 5, max: 40 }),
  straggleMs: fc.integer({ min: 50, max: 800 }),
  // 0 (copies race for the fence) often; otherwise a delay around the fast calls' latency.
  hedgeAfter: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 60 })),
  steps: fc.array(
    fc.record({
      fault: fc.oneof(fc.record({ kind: fc.constant("server" as const), i: fc.integer({ min: 0, max: 2 }) }), fc.constant({ kind: "primary" as const })),
      afterMs: fc.integer({ min: 100, max: 900 }),
      downMs: fc.integer({ min: 0, max: 600 }),
    }),
    { minLength: 0, maxLength: 3 },
  ),
});

const describeRun = (r: Run) =>
  `${r.store}, straggle ${r.stragglePct}% x ${r.straggleMs} ms, hedge after ${r.hedgeAfter} ms; ${r.steps.map((s) => `${s.fault.kind}${"i" in s.fault ? ` ${s.fault.i}` : ""} after ${s.afterMs} down ${s.downMs}`).join("; ") || "no faults"}`;

/** One PostgreSQL for every run that picks it (started on first use). */
let pg: { server: PgServer; store: PgStore } | null = null;
afterAll(async () => {
  await pg?.store.close();
  await pg?.server.stop();
});

async function once(r: Run): Promise<string[]> {
  let storeArg = "kv";
  if (r.store === "postgres") {
    if (!pg) {
      const server = await PgServer.start();
      pg = { server, store: await PgStore.open({ url: server.url }) };
    }
    await seedLedger(pg.store, Object.fromEntries(LEDGER_ACCOUNTS.map((a) => [a, LEDGER_OPENING])));
    storeArg = pg.server.url;
  }
  const d = await Deployment.start({
    servers: 3,
    managers: 2,
    service: "ledger",
    work: ["--work", "ledger", "--store", storeArg, "--straggle-pct", String(r.stragglePct), "--straggle-ms", String(r.straggleMs)],
  });
  try {
    const hedge = ["--transfers", "--hedge", "2", "--hedge-after", String(r.hedgeAfter), "--keep"];
    const clients = [d.client("a", 150, 2, hedge), d.client("b", 150, 2, hedge)];
    for (const c of clients) c.start();
    for (const step of r.steps) {
      await new Promise((res) => setTimeout(res, step.afterMs));
      const restarts: Array<() => void> = [];
      if (step.fault.kind === "server") {
        const i = step.fault.i;
        await d.killServer(i);
        restarts.push(() => void d.startServer(i));
      } else {
        const p = await d.primary();
        if (p) {
          await p.kill("SIGKILL");
          restarts.push(() => void d.startManager());
        }
      }
      await new Promise((res) => setTimeout(res, step.downMs));
      for (const x of restarts) x();
    }
    await until(() => clients.every((c) => c.finished()), "every client to finish", 120_000);
    const problems = [...checkHistory(clients.map((c) => c.history())).problems];

    // I4: read the ledger and compare with the transfers the application saw applied.
    const kvm = new Kvm(d.nc);
    let ledger: KvLedger;
    if (r.store === "kv") {
      const e = await (await kvm.open("tandem_ledger")).get(LEDGER_KEY);
      ledger = e!.json<{ v: KvLedger }>().v;
    } else {
      ledger = await readLedger(pg!.store);
      for (const x of await pgDoubleApplied(pg!.store)) problems.push(`I4: ${x.session}.${x.request} applied ${x.times} times`);
    }
    const applied = new Map<string, { from: string; to: string; amount: number }>();
    const delivered = new Map<string, string>(); // request id -> server whose response came
    for (const c of clients) {
      for (const l of c.history().lines as Line[]) {
        if (l.type !== "response" || l.ok !== true) continue;
        const res = l.response as { applied: boolean; from: string; to: string; amount: number };
        if (res.applied) applied.set(String(l.request), res);
        delivered.set(String(l.request), String(l.server));
      }
    }
    const want = Object.fromEntries(LEDGER_ACCOUNTS.map((a) => [a, LEDGER_OPENING]));
    for (const t of applied.values()) {
      want[t.from]! -= t.amount;
      want[t.to]! += t.amount;
    }
    const total = Object.values(ledger.balances).reduce((a, b) => a + b, 0);
    if (total !== LEDGER_OPENING * LEDGER_ACCOUNTS.length) problems.push(`I4: ledger total ${total} is not ${LEDGER_OPENING * LEDGER_ACCOUNTS.length}`);
    if (ledger.applied !== applied.size) problems.push(`I4: the store applied ${ledger.applied} transfers, the application saw ${applied.size} applied`);
    if (JSON.stringify(ledger.balances) !== JSON.stringify({ ...ledger.balances, ...want })) {
      problems.push(`I4: balances ${JSON.stringify(ledger.balances)} differ from applying each answered transfer once ${JSON.stringify(want)}`);
    }

    // Session records: every recorded winner is the server whose response was delivered.
    const sessions = await kvm.open("tandem_sessions");
    let records = 0;
    for await (const k of await sessions.keys("*.hedge.*")) {
      const rec = (await sessions.get(k))!.json<HedgeRecord>();
      const id = `${rec.session}.${rec.n}`;
      records++;
      if (rec.winner !== null && delivered.has(id) && delivered.get(id) !== rec.winner) {
        problems.push(`records: ${id} was answered by ${delivered.get(id)} but the record names ${rec.winner}`);
      }
    }
    // A proxy lost with a killed primary leaves no record; most requests have one.
    if (records < delivered.size / 2) problems.push(`records: only ${records} hedge records for ${delivered.size} requests`);
    if (problems.length) console.error(`${describeRun(r)}\n${problems.slice(0, 10).join("\n")}\n${d.logs(12)}`);
    return problems;
  } catch (err) {
    console.error(`${describeRun(r)}\n${String(err)}\n${d.logs(15)}`);
    return [String(err)];
  } finally {
    await d.stop();
  }
}

describe("hedged updates under faults (fast-check)", () => {
  faultProperty(
    "with stragglers, server and manager kills, each transfer is applied once and answered once, and the records name the winner (I1-I4, I6)",
    "hedging property",
    run,
    once,
    describeRun,
    { runs: 2, deepRuns: 20, budgetMs: 100_000, deepBudgetMs: 40 * 60_000 },
  );
});
