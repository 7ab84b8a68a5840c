/**
 * The fault kinds the fault properties schedule, and how one step of a schedule is carried out
 * against a deployment of real processes: SIGKILL of a client, a server, the primary, or the
 * primary and a server together; SIGSTOP/SIGCONT of the primary; nats-server killed and started
 * again on its store. Each is back after the step's downtime.
 */
import fc from "fast-check";
import type { ClientRunner, Deployment } from "./deployment.js";

export type Fault =
  | { kind: "client"; i: number }
  | { kind: "server"; i: number }
  | { kind: "primary" }
  | { kind: "primary+server"; i: number }
  | { kind: "pause-primary" }
  | { kind: "nats" };

export interface Step {
  fault: Fault;
  /** Wait before the fault. */
  afterMs: number;
  /** Time the faulted process stays down before it is started again. */
  downMs: number;
}

export const fault: fc.Arbitrary<Fault> = fc.oneof(
  fc.record({ kind: fc.constant("client" as const), i: fc.integer({ min: 0, max: 1 }) }),
  fc.record({ kind: fc.constant("server" as const), i: fc.integer({ min: 0, max: 1 }) }),
  fc.constant({ kind: "primary" as const }),
  fc.record({ kind: fc.constant("primary+server" as const), i: fc.integer({ min: 0, max: 1 }) }),
  fc.constant({ kind: "pause-primary" as const }),
  fc.constant({ kind: "nats" as const }),
);

export const describeStep = (s: Step) => `${s.fault.kind}${"i" in s.fault ? ` ${s.fault.i}` : ""} after ${s.afterMs} ms, down ${s.downMs} ms`;

/** Carry out one step; says whether it took the primary down (a failover, or a pause). */
export async function runStep(d: Deployment, clients: ClientRunner[], step: Step): Promise<{ primaryDown: boolean }> {
  await new Promise((r) => setTimeout(r, step.afterMs));
  const f = step.fault;
  const restarts: Array<() => void | Promise<void>> = [];
  let primaryDown = false;
  if (f.kind === "client") {
    const c = clients[f.i]!;
    if (c.running()) {
      await c.kill();
      restarts.push(() => c.start());
    }
  }
  if (f.kind === "server" || f.kind === "primary+server") {
    await d.killServer(f.i);
    restarts.push(() => void d.startServer(f.i));
  }
  if (f.kind === "primary" || f.kind === "primary+server") {
    const p = await d.primary();
    if (p) {
      primaryDown = true;
      await p.kill("SIGKILL");
      restarts.push(() => void d.startManager());
    }
  }
  if (f.kind === "pause-primary") {
    const p = await d.primary();
    if (p?.running()) {
      primaryDown = true;
      p.child.kill("SIGSTOP");
      restarts.push(() => void p.child.kill("SIGCONT"));
    }
  }
  if (f.kind === "nats") {
    await d.ns.stop();
    restarts.push(() => d.ns.restart());
  }
  await new Promise((r) => setTimeout(r, step.downMs));
  for (const r of restarts) await r();
  return { primaryDown };
}

/** A stopped manager that was never continued would hold nothing up, but be sure. */
export function continueManagers(d: Deployment): void {
  for (const m of d.managers) if (m.running()) m.child.kill("SIGCONT");
}
