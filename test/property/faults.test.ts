/**
 * Property: for any schedule of process faults against a deployment with a primary and a
 * standby manager (SIGKILL of a client, a server, the primary, or the primary and a server
 * together; SIGSTOP/SIGCONT of the primary; SIGKILL of nats-server, started again on its store;
 * each back after a random downtime), with sessions opened, used and closed throughout (a short
 * client of three sessions starts before each fault: closes purge queues while the cursors read
 * them, the kind of churn that once made cursors skip entries), once the schedule heals, the
 * recorded history of every client satisfies I1, I2, I3 and I6 (I3 not for the unordered pools).
 *
 * Bounded: TANDEM_PROPERTY_RUNS runs (default 3; TANDEM_DEEP=1 makes it 30) within a time
 * budget; the seed is printed and TANDEM_SEED replays it. fast-check shrinks a failing schedule
 * to a minimal one, printed with the counterexample.
 */
import { describe } from "vitest";
import fc from "fast-check";
import { Deployment, until } from "../helpers/deployment.js";
import { faultProperty } from "../helpers/property.js";
import { checkHistory } from "../helpers/history.js";
import { continueManagers, describeStep, fault, runStep, type Step } from "../helpers/faults.js";

const schedule = fc.record({
  // Client b's sessions have this window, and so do client c's pools (client a's have 1): every shape in every run.
  window: fc.integer({ min: 2, max: 8 }),
  steps: fc.array(fc.record({ fault, afterMs: fc.integer({ min: 50, max: 700 }), downMs: fc.integer({ min: 0, max: 800 }) }), { minLength: 1, maxLength: 4 }),
});
const describeRun = (r: { window: number; steps: Step[] }) => `window ${r.window}: ${r.steps.map(describeStep).join("; ")}`;

async function runSchedule({ window, steps }: { window: number; steps: Step[] }): Promise<{ ok: boolean; problems: string[] }> {
  const d = await Deployment.start({ servers: 2, managers: 2 });
  try {
    // Client c's are unordered pools over both servers, with the same window.
    const clients = [d.client("a", 120, 2), d.client("b", 120, 2, ["--window", String(window)]), d.client("c", 120, 2, ["--unordered", "--window", String(window)])];
    for (const c of clients) c.start();
    let churn = 0;
    for (const step of steps) {
      const churner = d.client(`churn${++churn}`, 9, 3);
      churner.start();
      clients.push(churner);
      await runStep(d, clients, step);
    }
    continueManagers(d);
    // Healed: every process is running again; clients that were killed resume and finish.
    await until(() => clients.every((c) => c.finished()), "every client to finish after the schedule healed", 120_000);
    const v = checkHistory(clients.map((c) => c.history()));
    if (!v.ok) console.error(`schedule: ${describeRun({ window, steps })}\n${v.problems.slice(0, 10).join("\n")}\n${d.logs(15)}`);
    return v;
  } catch (err) {
    console.error(`schedule: ${describeRun({ window, steps })}\n${String(err)}\n${d.logs(15)}`);
    return { ok: false, problems: [String(err)] };
  } finally {
    await d.stop();
  }
}

describe("fault schedules (fast-check)", () => {
  faultProperty(
    "after any schedule of kills and restarts heals, no request is lost or answered twice, order and restart data hold (I1, I2, I3, I6)",
    "fault property",
    schedule,
    async (run) => (await runSchedule(run)).problems,
    describeRun,
    { runs: 3, deepRuns: 30, budgetMs: 150_000, deepBudgetMs: 60 * 60_000 },
  );
});
