/**
 * `tandem demo --hedge`: hedged requests against a straggler. Three ledger servers (one of them
 * delays a share of its calls by 500 ms), the same transfers sent twice: without hedging, then
 * with it. Prints p50/p99 of both runs, the extra server work hedging spent, and checks the
 * ledger: every transfer applied exactly once (I4), the total conserved.
 */
import { createInterface } from "node:readline";
import { connect } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { bold, DemoStage, dim, say } from "./demo-kit.js";
import { LEDGER_ACCOUNTS, LEDGER_KEY, LEDGER_OPENING, type KvLedger } from "./ledger.js";

interface Status {
  node: string;
  servers: Array<{ alive: boolean }>;
  services: Array<{ service: string; hedging?: { requests: number; extra: number; p95Ms: number | null } }>;
}

export async function hedgeDemo(perClient: number): Promise<void> {
  say(bold("Tandem demo: hedged requests"));
  say("One of three servers is a straggler: 15 % of its calls take 500 ms longer (5 % of all calls).");
  say("The same ledger transfers go out twice, without and with hedging: with hedging, a request");
  say("without a response after the service's learned p95 goes to a second server too; the first");
  say("result wins and the other copy is cancelled. Each transfer must change the ledger once.\n");

  const stage = await DemoStage.open("demo-hedge");
  const start = (name: string, args: string[]) => stage.start(name, args);
  const status = () => stage.status<Status>();
  try {
    start("manager", ["manager", "--node", "manager-a"]);
    for (let i = 1; i <= 3; i++) {
      const straggle = i === 1 ? ["--straggle-pct", "15", "--straggle-ms", "500"] : [];
      start(`ledger-${i}`, ["server", "--service", "ledger", "--work", "ledger", "--store", "kv", "--id", i === 1 ? "ledger-straggler" : `ledger-${i}`, ...straggle]);
    }
    await stage.waitFor<Status>((st) => st.servers.filter((s) => s.alive).length >= 3);
    say(`  nats-server, a manager, three servers ${dim("tandem server --work ledger --store kv [--straggle-pct 15]")}\n`);

    const runOnce = async (label: string, extra: string[]) => {
      const latencies: number[] = [];
      const clients = 3;
      const total = clients * perClient;
      let done = 0;
      const exits: Array<Promise<void>> = [];
      for (let i = 1; i <= clients; i++) {
        const child = start(`${label}-client-${i}`, ["client", "--service", "ledger", "--transfers", "--requests", String(perClient), "--concurrency", "2", "--json", ...extra]);
        createInterface({ input: child.stdout! }).on("line", (text) => {
          try {
            const l = JSON.parse(text) as { type: string; ok?: boolean; latencyMs?: number };
            if (l.type === "response" && typeof l.latencyMs === "number") {
              latencies.push(l.latencyMs);
              done++;
            }
          } catch {
            /* not a JSON line */
          }
        });
        exits.push(new Promise((r) => child.once("exit", () => r())));
      }
      const tty = process.stdout.isTTY;
      const tick = setInterval(() => tty && process.stdout.write(`\r  ${label.padEnd(16)} ${done}/${total}`), 200);
      await Promise.all(exits);
      clearInterval(tick);
      if (tty) process.stdout.write("\r");
      latencies.sort((a, b) => a - b);
      const p = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
      return { n: latencies.length, p50: p(0.5), p99: p(0.99) };
    };

    const before = (await status())?.services.find((s) => s.service === "ledger")?.hedging ?? { requests: 0, extra: 0, p95Ms: null };
    const plain = await runOnce("without hedging", []);
    say(`  without hedging  ${plain.n} transfers   p50 ${plain.p50.toFixed(1)} ms   p99 ${plain.p99.toFixed(1)} ms`);
    const mid = (await status())?.services.find((s) => s.service === "ledger")?.hedging ?? before;
    const hedged = await runOnce("with hedging", ["--hedge", "2", "--hedge-after", "p95"]);
    const after = (await status())?.services.find((s) => s.service === "ledger")?.hedging ?? mid;
    const extra = after.extra - mid.extra;
    const requests = after.requests - mid.requests;
    say(`  with hedging     ${hedged.n} transfers   p50 ${hedged.p50.toFixed(1)} ms   p99 ${hedged.p99.toFixed(1)} ms`);
    say("");
    say(bold("What hedging did"));
    say(`  p99 went from ${plain.p99.toFixed(0)} ms to ${hedged.p99.toFixed(0)} ms (${(plain.p99 / Math.max(hedged.p99, 0.1)).toFixed(1)}x lower).`);
    say(`  extra copies: ${extra} for ${requests} requests (${((100 * extra) / Math.max(1, requests)).toFixed(1)} % extra server work; the budget caps it at 10 %),`);
    say(`  sent after the learned p95 of ${after.p95Ms ?? "?"} ms; every losing copy was cancelled.`);

    // I4: read the ledger.
    const nc = await connect({ servers: stage.nats.url });
    const kv = await new Kvm(nc).open("tandem_ledger");
    const ledger = (await kv.get(LEDGER_KEY))!.json<{ v: KvLedger }>().v;
    await nc.close();
    const sum = Object.values(ledger.balances).reduce((a, b) => a + b, 0);
    const want = LEDGER_OPENING * LEDGER_ACCOUNTS.length;
    say("");
    say(bold("The ledger (I4: one update per transfer)"));
    say(`  applied ${ledger.applied} of ${plain.n + hedged.n} transfers; total ${sum} (opening total ${want})`);
    say(`  balances ${JSON.stringify(ledger.balances)}`);
    if (ledger.applied !== plain.n + hedged.n || sum !== want) {
      say("  MISMATCH: a transfer was applied twice or lost");
      process.exitCode = 1;
    }
    say("");
    say(dim(`Process logs (pino JSON): ${stage.logs}. Try: tandem status --session <id> for who won each request.`));
  } finally {
    await stage.stop();
  }
}
