/**
 * The backup manager under real faults (docs/design.md §4): SIGKILL of the primary under load, a
 * paused primary (SIGSTOP/SIGCONT) that must not act after it wakes, the primary and a server
 * together, two primaries in a row, nats-server killed and restarted on its store, and a client
 * killed during a failover. Every test checks I1, I2, I3 and I6 on the recorded history and
 * prints the takeover times it measured (measured, not asserted as times).
 */
import { afterEach, describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import { Deployment, until } from "../helpers/deployment.js";
import { checkHistory } from "../helpers/history.js";
import { logLines } from "../helpers/procs.js";
import { recovery } from "../helpers/timing.js";

let d: Deployment | undefined;
afterEach(async (ctx) => {
  // A failing test shows what every process said, for whoever reads CI's output.
  if (d && ctx.task.result?.state === "fail") console.error(d.logs(60));
  await d?.stop();
  d = undefined;
});

function verdict(dep: Deployment): string[] {
  const v = checkHistory(dep.clients.map((c) => c.history()));
  if (!v.ok) console.error(v.problems.slice(0, 20).join("\n"), "\n", dep.logs());
  return v.problems;
}

const answered = (dep: Deployment) => dep.clients.reduce((a, c) => a + c.answered(), 0);

function report(what: string, r: ReturnType<typeof recovery>): void {
  console.log(`${what}: first response ${r.firstMs?.toFixed(0)} ms after the fault, every one of ${r.sessions} sessions serving again after ${r.allMs?.toFixed(0)} ms`);
}

describe("failover with real processes", () => {
  it("failover - SIGKILL of the primary under load: a standby takes over and nothing is lost or duplicated", async () => {
    d = await Deployment.start({ managers: 2, servers: 2 });
    const clients = [d.client("a", 400, 4), d.client("b", 400, 4)];
    for (const c of clients) c.start();
    await until(() => answered(d!) >= 200, "load");
    const old = (await d.status())!.node;
    const t0 = performance.now();
    await (await d.primary())!.kill("SIGKILL");
    const node = await d.waitPrimary(old);
    await until(() => clients.every((c) => c.finished()), "clients to finish", 90_000);
    report(`takeover by ${node} (lease ${d.env.TANDEM_LEASE_MS} ms)`, recovery(clients, t0));
    expect(verdict(d)).toEqual([]);
  });

  it("failover - paused primary cannot act after resume: it steps down and the sessions refuse its epoch (I5)", async () => {
    d = await Deployment.start({ managers: 2, servers: 2 });
    const clients = [d.client("a", 500, 4)];
    for (const c of clients) c.start();
    await until(() => answered(d!) >= 100, "load");
    const paused = (await d.primary())!;
    const oldNode = (await d.status())!.node;
    paused.child.kill("SIGSTOP");
    const t0 = performance.now();
    const node = await d.waitPrimary(oldNode);
    await until(() => answered(d!) >= 250, "service under the new primary");
    const newEpoch = (await d.status())!.epoch;
    paused.child.kill("SIGCONT");
    const woke = performance.now();
    await until(() => logLines(paused).some((l) => l.msg === "stepped down: serving stopped, back to standby"), "the old primary to step down", 15_000);
    console.log(`paused primary stepped down ${Math.round(performance.now() - woke)} ms after SIGCONT; ${node} took over in the meantime`);
    await until(() => clients.every((c) => c.finished()), "clients to finish", 90_000);
    report("takeover from a paused primary", recovery(clients, t0));
    // It acted on nothing after waking: no session handed out, no restart sent, no snapshot kept.
    const after = logLines(paused).filter((l) => Number(l.time) > Date.now() - (performance.now() - woke));
    expect(after.filter((l) => ["session opened", "client session restarted", "server session restarted"].includes(String(l.msg)))).toEqual([]);
    // The snapshot cut in the bucket is the new primary's: the old one's late writes were refused.
    await new Promise((r) => setTimeout(r, 500));
    const ctl = await new Kvm(d.nc).open("tandem_ctl");
    expect((await ctl.get("cursor"))!.json<{ epoch: number }>().epoch).toBe(newEpoch);
    const st = await d.status();
    expect(st!.epoch).toBe(newEpoch);
    expect(st!.node).toBe(node);
    expect(verdict(d)).toEqual([]);
  });

  it("failover - the primary and a server killed together", async () => {
    d = await Deployment.start({ managers: 2, servers: 2 });
    const clients = [d.client("a", 300, 4), d.client("b", 300, 2)];
    for (const c of clients) c.start();
    await until(() => answered(d!) >= 150, "load");
    const old = (await d.status())!.node;
    const t0 = performance.now();
    await Promise.all([(await d.primary())!.kill("SIGKILL"), d.killServer(0)]);
    await d.waitPrimary(old);
    await until(() => clients.every((c) => c.finished()), "clients to finish", 90_000);
    report("takeover with a server lost", recovery(clients, t0));
    expect(verdict(d)).toEqual([]);
  });

  it("failover - two primaries in a row: a standby takes over, dies, and the next standby takes over", async () => {
    d = await Deployment.start({ managers: 3, servers: 2 });
    const clients = [d.client("a", 600, 4)];
    for (const c of clients) c.start();
    await until(() => answered(d!) >= 100, "load");
    const first = (await d.status())!.node;
    const t1 = performance.now();
    await (await d.primary())!.kill("SIGKILL");
    const second = await d.waitPrimary(first);
    await until(() => answered(d!) >= 250, "service under the second primary");
    report(`first takeover (${first} -> ${second})`, recovery(clients, t1));
    const t2 = performance.now();
    await (await d.primary())!.kill("SIGKILL");
    const third = await d.waitPrimary(second);
    expect(new Set([first, second, third]).size).toBe(3);
    await until(() => clients.every((c) => c.finished()), "clients to finish", 90_000);
    report(`second takeover (${second} -> ${third})`, recovery(clients, t2));
    expect(verdict(d)).toEqual([]);
  });

  it("nats-server - killed with SIGKILL and started again on the same store: nothing acknowledged is lost", async () => {
    d = await Deployment.start({ managers: 2, servers: 2 });
    const clients = [d.client("a", 400, 4), d.client("b", 400, 2)];
    for (const c of clients) c.start();
    await until(() => answered(d!) >= 200, "load");
    const t0 = performance.now();
    await d.ns.stop();
    await new Promise((r) => setTimeout(r, 500));
    await d.ns.restart();
    await until(() => clients.every((c) => c.finished()), "clients to finish", 120_000);
    report("nats-server restart (500 ms down)", recovery(clients, t0));
    expect(verdict(d)).toEqual([]);
  });

  it("failover - a client killed during the failover resumes and gets everything once", async () => {
    d = await Deployment.start({ managers: 2, servers: 2 });
    const clients = [d.client("a", 300, 3), d.client("b", 300, 3)];
    for (const c of clients) c.start();
    await until(() => answered(d!) >= 150, "load");
    const old = (await d.status())!.node;
    await Promise.all([(await d.primary())!.kill("SIGKILL"), clients[0]!.kill()]);
    await new Promise((r) => setTimeout(r, 300));
    clients[0]!.start();
    await d.waitPrimary(old);
    await until(() => clients.every((c) => c.finished()), "clients to finish", 90_000);
    expect(clients[0]!.lines.some((l) => l.type === "resumed")).toBe(true);
    expect(verdict(d)).toEqual([]);
  });
});
