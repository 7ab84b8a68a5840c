/**
 * The shape every fault property shares: settings from the environment (TANDEM_DEEP,
 * TANDEM_PROPERTY_RUNS, TANDEM_PROPERTY_BUDGET_MS, TANDEM_SEED), the seed printed for a replay,
 * one line per run, a time budget, and the deployments of a run fast-check abandoned at that
 * budget stopped by their PIDs (and not judged after they were stopped).
 */
import { afterAll, expect, it } from "vitest";
import fc from "fast-check";
import { stopAllDeployments } from "./deployment.js";

export interface PropertyBudget {
  runs: number;
  deepRuns: number;
  budgetMs: number;
  deepBudgetMs: number;
}

export function faultProperty<T>(title: string, label: string, arb: fc.Arbitrary<T>, check: (x: T) => Promise<string[]>, describeRun: (x: T) => string, b: PropertyBudget): void {
  const deep = process.env.TANDEM_DEEP === "1";
  const runs = Number(process.env.TANDEM_PROPERTY_RUNS ?? (deep ? b.deepRuns : b.runs));
  const budgetMs = Number(process.env.TANDEM_PROPERTY_BUDGET_MS ?? (deep ? b.deepBudgetMs : b.budgetMs));
  const seed = Number(process.env.TANDEM_SEED ?? Math.floor(Math.random() * 2 ** 31));
  let abandoned = false;
  afterAll(async () => {
    abandoned = true;
    await stopAllDeployments();
  });
  it(
    title,
    async () => {
      console.log(`${label}: seed ${seed}, ${runs} run(s), budget ${budgetMs} ms (replay with TANDEM_SEED=${seed})`);
      let n = 0;
      await fc.assert(
        fc.asyncProperty(arb, async (x) => {
          n++;
          const t0 = performance.now();
          const problems = await check(x);
          console.log(`  run ${n}: ${describeRun(x)} -> ${problems.length ? "FAILED" : "ok"} in ${Math.round(performance.now() - t0)} ms`);
          if (!abandoned) expect(problems).toEqual([]);
        }),
        { numRuns: runs, seed, interruptAfterTimeLimit: budgetMs, markInterruptAsFailure: false, endOnFailure: !deep },
      );
    },
    budgetMs + 180_000,
  );
}
