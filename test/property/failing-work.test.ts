/**
 * Property (issue 15): random handler behaviour per request (succeed, throw terminal, throw
 * retryable, end its server process, hang past its deadline, be cancelled by its caller) under
 * the fault schedules of faults.test.ts (SIGKILL of a client, a server, the primary, the primary
 * and a server; SIGSTOP of the primary; nats-server killed and started again). Servers run the
 * chaos handler under a supervisor that restarts them when they end themselves. Once the schedule
 * heals, every request has ended exactly once with an outcome its behaviour implies, order, I1,
 * I2 and I6 hold (the history checker), and no request ended its server more often than the
 * stated bound: its attempts' worth (poison: maxAttempts = 2; "exit": once), plus one for each
 * manager failover in the schedule. Client b's sessions run with a window of 1 to 4 requests
 * at their server at once (issue 17). A request that ends TANDEM_POISON against its behaviour
 * passes only when the managers' logs show it lost its server maxAttempts times (a death costs
 * every request it held an attempt, whichever ended it).
 *
 * Bounded as the other fault properties: TANDEM_PROPERTY_RUNS (default 2; TANDEM_DEEP=1: 20),
 * a time budget, the seed printed, TANDEM_SEED to replay.
 */
import { describe } from "vitest";
import fc from "fast-check";
import { Deployment, until } from "../helpers/deployment.js";
import { faultProperty } from "../helpers/property.js";
import { checkHistory, type Line } from "../helpers/history.js";
import { logLines } from "../helpers/procs.js";
import { CHAOS_POISON_ATTEMPTS, CHAOS_SESSION_RETRY } from "../../src/apps/chaos-mix.js";
import { continueManagers, describeStep, fault, runStep, type Step } from "../helpers/faults.js";

interface Run {
  mix: number;
  /** Client b's sessions' window (client a's: 1). */
  window: number;
  steps: Step[];
}

const run: fc.Arbitrary<Run> = fc.record({
  mix: fc.integer({ min: 0, max: 2 ** 30 }),
  window: fc.integer({ min: 1, max: 4 }),
  steps: fc.array(fc.record({ fault, afterMs: fc.integer({ min: 100, max: 1500 }), downMs: fc.integer({ min: 0, max: 800 }) }), { minLength: 1, maxLength: 3 }),
});

const describeRun = (r: Run) => `mix ${r.mix}, window ${r.window}: ${r.steps.map(describeStep).join("; ")}`;

const EXIT_LINE = "the chaos handler ends this process (a poison request)";

async function runOnce(r: Run): Promise<string[]> {
  const d = await Deployment.start({ servers: 2, managers: 2, work: ["--work", "chaos"], supervise: true });
  try {
    const clients = [d.client("a", 60, 2, ["--mix", String(r.mix)]), d.client("b", 60, 2, ["--mix", String(r.mix + 1), "--window", String(r.window)])];
    for (const c of clients) c.start();
    let failovers = 0;
    for (const step of r.steps) if ((await runStep(d, clients, step)).primaryDown) failovers++;
    continueManagers(d);
    await until(() => clients.every((c) => c.finished()), "every client to finish after the schedule healed", 180_000);
    const histories = clients.map((c) => c.history());
    // A server's death costs an attempt to every request it held, whichever of them ended it
    // (README, When work fails): a request that shared its servers with others' poison can run
    // out of attempts itself. Allowed only when the managers' logs show it lost its server that
    // many times; anything else that ended TANDEM_POISON against its behaviour is a problem.
    const lost = new Map<string, Set<number>>();
    for (const p of d.managers) {
      for (const l of logLines(p)) {
        if (l.code !== "TANDEM_SERVER_LOST" || typeof l.attempt !== "number") continue;
        const id = `${String(l.session)}.${String(l.n)}`;
        lost.set(id, (lost.get(id) ?? new Set()).add(l.attempt));
      }
    }
    let collateral = 0;
    const problems = checkHistory(histories).problems.filter((p) => {
      const m = /^outcome \S+: (\S+) ended TANDEM_POISON, its behaviour implies ok$/.exec(p);
      // Every attempt but the last is logged as retried; an "ok" handler fails no other way, so
      // with maxAttempts - 1 lost servers on record the last was one too.
      const ok = m !== null && (lost.get(m[1]!)?.size ?? 0) >= (CHAOS_SESSION_RETRY.maxAttempts ?? 3) - 1;
      if (ok) collateral++;
      return !ok;
    });
    // Executions that ended their server, per request, against the bound.
    const exits = new Map<string, number>();
    for (const p of d.serverProcs) {
      for (const l of logLines(p)) if (l.msg === EXIT_LINE) exits.set(`${String(l.session)}.${String(l.n)}`, (exits.get(`${String(l.session)}.${String(l.n)}`) ?? 0) + 1);
    }
    const kinds = new Map<string, string>();
    for (const h of histories) for (const l of h.lines as Line[]) if (l.type === "response") kinds.set(String(l.request), String(l.behaviour));
    for (const [id, count] of exits) {
      const kind = kinds.get(id);
      const bound = (kind === "poison" ? CHAOS_POISON_ATTEMPTS : kind === "exit" ? 1 : 0) + failovers;
      if (count > bound) problems.push(`bound: ${id} (${kind ?? "unknown"}) ended its server ${count} times; the bound is ${bound} (${failovers} failover(s))`);
    }
    const tally = [...kinds.values()].reduce<Record<string, number>>((t, k) => ({ ...t, [k]: (t[k] ?? 0) + 1 }), {});
    console.log(`    behaviours ${JSON.stringify(tally)}; server exits ${[...exits.values()].reduce((a, b) => a + b, 0)}; failovers ${failovers}; quarantined with others' deaths ${collateral}`);
    if (problems.length) console.error(`${describeRun(r)}\n${problems.slice(0, 10).join("\n")}\n${d.logs(15)}`);
    return problems;
  } catch (err) {
    console.error(`${describeRun(r)}\n${String(err)}\n${d.logs(15)}`);
    return [String(err)];
  } finally {
    await d.stop();
  }
}

describe("failing work under fault schedules (fast-check)", () => {
  faultProperty(
    "every request ends once with the outcome its behaviour implies, within the execution bound, through kills and restarts (I1, I2, I3, I6)",
    "work-failure property",
    run,
    runOnce,
    describeRun,
    { runs: 2, deepRuns: 20, budgetMs: 150_000, deepBudgetMs: 60 * 60_000 },
  );
});
