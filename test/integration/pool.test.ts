/**
 * Unordered pools (issue 17, item 2) against a real nats-server and real processes: one session's
 * requests spread over every server of the service, responses arrive as they complete (a long
 * one holds nobody back), each once; a server killed with SIGKILL mid-run and a client killed and
 * resumed from its state file lose nothing and repeat nothing (the history checker judges).
 * Pools under the fault schedules: test/property/faults.test.ts (client c).
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ManagerNode } from "../../src/actors/manager.js";
import { TandemClient } from "../../src/actors/client.js";
import { TandemServer } from "../../src/actors/server.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { fastEnv, primaryManager, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";
import { killAll, logLines, tandem } from "../helpers/procs.js";
import { checkHistory, type Line } from "../helpers/history.js";
import { until } from "../helpers/deployment.js";

let ns: NatsServer;
let rt: Runtime;
let mgr: ManagerNode;
const servers: TandemServer[] = [];
let client: TandemClient;
/** Per server: requests it ran, and the most it ran at once. */
const ran = new Map<string, number>();
const busy = new Map<string, number>();
const most = new Map<string, number>();

beforeAll(async () => {
  ns = await startNats();
  rt = await runtimeFor(ns);
  mgr = await primaryManager(rt);
  for (let i = 0; i < 4; i++) {
    const id = `pool-${i}`;
    servers.push(
      await TandemServer.start(rt, {
        id,
        service: "pooled",
        capacity: 2,
        handler: async (req) => {
          const p = req.payload as { ms?: number };
          busy.set(id, (busy.get(id) ?? 0) + 1);
          most.set(id, Math.max(most.get(id) ?? 0, busy.get(id)!));
          ran.set(id, (ran.get(id) ?? 0) + 1);
          await new Promise((r) => setTimeout(r, p.ms ?? 20));
          busy.set(id, busy.get(id)! - 1);
          return { n: req.n, by: id };
        },
      }),
    );
  }
  client = await TandemClient.connect(rt);
}, 60_000);

afterAll(async () => {
  await client?.close();
  for (const s of servers) await s.stop();
  await mgr?.stop();
  await rt?.close();
  await killAll();
  await ns?.cleanup();
});

describe("an unordered pool", () => {
  it("spreads one session's requests over every server, each answered once, as they complete", async () => {
    for (const k of ran.keys()) ran.set(k, 0);
    const s = await client.open("pooled", { ordered: false, window: 16 });
    expect(s.ordered).toBe(false);
    const order: number[] = [];
    const sends = [];
    for (let i = 1; i <= 64; i++) {
      const { n, response } = await s.send({ ms: 10 + ((i * 37) % 50) });
      sends.push(response.then((r) => (expect(r.ok).toBe(true), expect((r.value as { n: number }).n).toBe(n), order.push(n))));
    }
    await Promise.all(sends);
    expect([...order].sort((a, b) => a - b)).toEqual([...Array(64).keys()].map((k) => k + 1));
    expect(order).not.toEqual([...order].sort((a, b) => a - b)); // as they completed, not in order
    // Every server took a share; none ran more than its capacity at once.
    for (const v of ran.values()) expect(v).toBeGreaterThanOrEqual(6);
    for (const v of most.values()) expect(v).toBeLessThanOrEqual(2);
    await s.close();
  });

  it("a long request holds back none of the others", async () => {
    const s = await client.open("pooled", { ordered: false, window: 8 });
    const order: number[] = [];
    const long = s.request({ ms: 1500 }).then(() => order.push(1));
    const rest = [];
    for (let i = 2; i <= 20; i++) rest.push(s.request({ ms: 5 }).then(() => order.push(i)));
    await Promise.all([long, ...rest]);
    expect(order[order.length - 1]).toBe(1);
    expect(order).toHaveLength(20);
    await s.close();
  });

  it("an unordered pool cannot be hedged", async () => {
    await expect(client.open("pooled", { ordered: false, hedge: { copies: 2, after: 10 } })).rejects.toMatchObject({ code: "TANDEM_HEDGE" });
  });

  it("a server SIGKILLed and a client SIGKILLed and resumed mid-run: every request once, nothing lost (CLI, real processes)", async () => {
    const env = fastEnv(ns.url);
    const procs = [0, 1, 2].map((i) => tandem(`pool-srv${i}`, ["server", "--service", "procpool", "--work", "sleep", "--sleep-ms", "30", "--id", `procpool-${i}`, "--capacity", "2"], env));
    await until(() => procs.every((p) => logLines(p).some((l) => l.msg === "registered with the manager")), "pool servers to register", 30_000);
    const state = join(mkdtempSync(join(tmpdir(), "tandem-pool-")), "client.json");
    const args = ["client", "--service", "procpool", "--requests", "150", "--concurrency", "2", "--unordered", "--window", "12", "--json", "--state", state];
    const lines: Line[] = [];
    const first = tandem("pool-client#1", args, env);
    await until(() => first.lines.filter((l) => l.type === "response").length >= 30, "30 responses", 30_000);
    await procs[1]!.kill("SIGKILL");
    await until(() => first.lines.filter((l) => l.type === "response").length >= 60, "60 responses", 30_000);
    await first.kill("SIGKILL");
    lines.push(...first.lines);
    const second = tandem("pool-client#2", args, env);
    expect(await second.exited).toBe(0);
    lines.push(...second.lines);
    const v = checkHistory([{ name: "pool", expected: 150, lines, unordered: true }]);
    expect(v.problems).toEqual([]);
    expect(lines.some((l) => l.type === "resumed" && l.unordered === true)).toBe(true);
    for (const p of procs) await p.kill("SIGKILL");
  }, 120_000);
});
