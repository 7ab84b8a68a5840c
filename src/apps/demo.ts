/**
 * `tandem demo` (what `npm start` runs): a real deployment of separate processes on an
 * embedded nats-server, a progress bar, one server killed with SIGKILL midway, and a summary.
 */
import { join } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { bold, DemoStage, dim, say } from "./demo-kit.js";

interface Line {
  type: string;
  request?: string;
  session?: string;
  ok?: boolean;
  latencyMs?: number | null;
  server?: string;
  error?: string;
}


export async function cmdDemo(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { requests: { type: "string" }, "no-kill": { type: "boolean" }, hedge: { type: "boolean" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    process.stdout.write(`Usage: tandem demo [--requests N] [--no-kill] [--hedge]

Starts an embedded nats-server, one manager, two servers and three clients as separate
processes, shows progress, kills one server with SIGKILL midway, and prints what happened.
  --requests N   requests per client (default 300)
  --no-kill      do not kill a server
  --hedge        the hedging demo instead: a straggler server, ledger transfers without and
                 with hedging, p50/p99 of both, the extra work, and the ledger checked (I4)
`);
    return;
  }
  const perClient = Number(values.requests ?? (values.hedge ? 400 : 300));
  if (!Number.isInteger(perClient) || perClient < 10) throw new Error("--requests must be an integer >= 10");
  if (values.hedge) {
    const { hedgeDemo } = await import("./demo-hedge.js");
    return hedgeDemo(perClient);
  }
  const kill = values["no-kill"] !== true;
  say(bold("Tandem demo"));
  say("Clients hand requests to a manager, which keeps every request, response and restart");
  say("checkpoint in NATS JetStream and routes the work to servers. We will kill a server, then");
  say("the primary manager, and check that nothing is lost and nothing arrives twice.\n");

  const stage = await DemoStage.open("demo");
  const { dir } = stage;
  const start = (name: string, args: string[]) => stage.start(name, args);
  say(`  1. nats-server with JetStream      ${dim(stage.nats.url)}`);

  try {
    start("manager-a", ["manager", "--node", "manager-a"]);
    await stage.waitFor<DemoStatus>((st) => st.node === "manager-a");
    start("manager-b", ["manager", "--node", "manager-b"]);
    say(`  2. two managers: a primary and a standby that receives its backups  ${dim("tandem manager")}`);
    const servers = ["demo-server-1", "demo-server-2"];
    for (const id of servers) start(id, ["server", "--service", "demo", "--work", "sleep", "--sleep-ms", "8", "--id", id]);
    say(`  3. two servers of service "demo"   ${dim("tandem server --service demo --work sleep")}`);
    await stage.waitFor<DemoStatus>((st) => st.servers.filter((x) => x.alive).length >= 2 && st.standbys.length >= 1);

    const clients = 3;
    const total = clients * perClient;
    say(`  4. three clients, two sessions each, ${perClient} requests per client\n`);
    const seen = new Map<string, number>();
    const lastServer = new Map<string, string>();
    const latencies: number[] = [];
    let lines = 0;
    let errors = 0;
    let killedAt = 0;
    let movedFirst = 0;
    let managerKilledAt = 0;
    const servedAfterManagerKill = new Map<string, number>();
    const sessionsSeen = new Set<string>();
    const moved = new Set<string>();
    const finished: Array<Promise<void>> = [];
    for (let i = 1; i <= clients; i++) {
      const child = start(`client-${i}`, [
        "client",
        "--service",
        "demo",
        "--requests",
        String(perClient),
        "--concurrency",
        "2",
        "--json",
        "--state",
        join(dir, `client-${i}.json`),
      ]);
      const rl = createInterface({ input: child.stdout! });
      rl.on("line", (text) => {
        let l: Line;
        try {
          l = JSON.parse(text) as Line;
        } catch {
          return;
        }
        if (l.type !== "response" || !l.request) return;
        lines++;
        seen.set(l.request, (seen.get(l.request) ?? 0) + 1);
        if (!l.ok) errors++;
        if (typeof l.latencyMs === "number") latencies.push(l.latencyMs);
        const session = l.session ?? "";
        if (killedAt && lastServer.get(session) === servers[0] && l.server && l.server !== servers[0]) {
          moved.add(session);
          if (!movedFirst) movedFirst = performance.now() - killedAt;
        }
        if (l.server) lastServer.set(session, l.server);
        sessionsSeen.add(session);
        if (managerKilledAt && !servedAfterManagerKill.has(session)) servedAfterManagerKill.set(session, performance.now() - managerKilledAt);
      });
      finished.push(new Promise((r) => child.once("exit", () => r())));
    }

    const bar = (done: number) => {
      const width = 40;
      const filled = Math.round((done / total) * width);
      return `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${String(done).padStart(String(total).length)}/${total}`;
    };
    let lastPrinted = -1;
    const tty = process.stdout.isTTY;
    const progress = setInterval(() => {
      const done = seen.size;
      const note = managerKilledAt ? "  (server 1 and the primary manager killed)" : killedAt ? "  (server 1 killed)" : "";
      if (tty) process.stdout.write(`\r  ${bar(done)}${note}`);
      else if (Math.floor((done / total) * 10) !== lastPrinted) {
        lastPrinted = Math.floor((done / total) * 10);
        say(`  ${bar(done)}`);
      }
      if (kill && !killedAt && done >= total * 0.3) {
        const victim = stage.find(servers[0]!)!;
        victim.child.kill("SIGKILL");
        killedAt = performance.now();
        if (!tty) say(`  -- SIGKILL ${servers[0]} (pid ${victim.child.pid}) --`);
      }
      // The primary dies only after the server failover is over, so each story reads alone.
      if (kill && !managerKilledAt && movedFirst > 0 && done >= total * 0.6) {
        const victim = stage.find("manager-a")!;
        victim.child.kill("SIGKILL");
        managerKilledAt = performance.now();
        if (!tty) say(`  -- SIGKILL the primary manager (pid ${victim.child.pid}) --`);
      }
    }, 100);
    const t0 = performance.now();
    await Promise.all(finished);
    clearInterval(progress);
    if (tty) process.stdout.write(`\r  ${bar(seen.size)}\n`);
    const seconds = (performance.now() - t0) / 1000;

    latencies.sort((a, b) => a - b);
    const pct = (p: number) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]! : 0);
    const duplicates = lines - seen.size;
    const lost = total - seen.size;
    say("");
    say(bold("What happened"));
    say(`  sent         ${total} requests from 3 clients (6 sessions)`);
    say(`  answered     ${seen.size}   in ${seconds.toFixed(1)} s (${Math.round(seen.size / seconds)}/s)`);
    say(`  lost         ${lost}`);
    say(`  duplicates   ${duplicates}   (responses that reached an application twice)`);
    say(`  errors       ${errors}`);
    say(`  latency      p50 ${pct(50).toFixed(1)} ms, p99 ${pct(99).toFixed(1)} ms`);
    if (kill) {
      say("");
      say(bold("When a server died"));
      say(`  ${servers[0]} was killed with SIGKILL at ${Math.round((killedAt - t0) / 1000 * 10) / 10} s. The manager noticed its missing`);
      say(`  heartbeats, moved its ${moved.size} session(s) to ${servers[1]}, which restarted them from their`);
      say(`  server restart data and redid the request in flight. First response from the new server`);
      say(`  ${movedFirst ? `${Math.round(movedFirst)} ms after the kill` : "not observed"}; the clients just waited a little.`);
      say("");
      say(bold("When the primary manager died"));
      const times = [...servedAfterManagerKill.values()].sort((a, b) => a - b);
      const waitingSessions = [...sessionsSeen].filter((x) => !servedAfterManagerKill.has(x)).length;
      say(`  manager-a was killed with SIGKILL at ${Math.round((managerKilledAt - t0) / 100) / 10} s. manager-b, the standby, saw no lease`);
      say(`  renewal and no backup for a lease period (1 s), took the lease with a new epoch, rebuilt the`);
      say(`  session table from its last backup plus the queues, and restarted every client and server`);
      say(`  session. Every session served again ${times.length ? `${Math.round(times[times.length - 1]!)} ms` : "?"} after the kill${waitingSessions ? ` (${waitingSessions} had already finished)` : ""};`);
      say(`  nothing was lost or duplicated (see above).`);
    }
    say("");
    say(dim(`Process logs (pino JSON): ${stage.logs}`));
    say(dim("Next: README.md shows the API, the CLI and the guarantees; `npm test` proves them."));
    if (lost !== 0 || duplicates !== 0) process.exitCode = 1;
  } finally {
    await stage.stop();
  }
}

interface DemoStatus {
  node: string;
  servers: Array<{ alive: boolean }>;
  standbys: Array<{ node: string }>;
}
