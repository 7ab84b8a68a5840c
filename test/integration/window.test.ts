/**
 * A window per session (issue 17, item 1) against a real nats-server and real processes: up to
 * `window` requests of one session run at its server at once, never more; the responses reach
 * the application in request order; the CLI's --window does the same from another process.
 * Windows under faults: test/property/faults.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ManagerNode } from "../../src/actors/manager.js";
import { TandemClient } from "../../src/actors/client.js";
import { TandemServer } from "../../src/actors/server.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { fastEnv, primaryManager, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";
import { killAll, tandem } from "../helpers/procs.js";

let ns: NatsServer;
let rt: Runtime;
let mgr: ManagerNode;
let server: TandemServer;
let client: TandemClient;
/** Handlers running now, per session, and the most seen at once. */
const running = new Map<string, number>();
const most = new Map<string, number>();

beforeAll(async () => {
  ns = await startNats();
  rt = await runtimeFor(ns);
  mgr = await primaryManager(rt);
  server = await TandemServer.start(rt, {
    service: "slow",
    handler: async (req) => {
      const now = (running.get(req.session) ?? 0) + 1;
      running.set(req.session, now);
      most.set(req.session, Math.max(most.get(req.session) ?? 0, now));
      // Later requests finish first: answers come back out of order.
      await new Promise((r) => setTimeout(r, 40 + 10 * (7 - (req.n % 8))));
      running.set(req.session, running.get(req.session)! - 1);
      return { n: req.n };
    },
  });
  client = await TandemClient.connect(rt);
}, 60_000);

afterAll(async () => {
  await client?.close();
  await server?.stop();
  await mgr?.stop();
  await rt?.close();
  await killAll();
  await ns?.cleanup();
});

async function sendAll(window: number, count: number): Promise<{ session: string; order: number[] }> {
  const s = await client.open("slow", { window });
  const order: number[] = [];
  const responses = [];
  for (let i = 1; i <= count; i++) {
    const { response } = await s.send({ i });
    responses.push(response.then((r) => order.push((r.value as { n: number }).n)));
  }
  await Promise.all(responses);
  await s.close();
  return { session: s.id, order };
}

describe("a window per session", () => {
  it("runs up to `window` requests of the session at once and never more; responses arrive in request order", async () => {
    const { session, order } = await sendAll(8, 40);
    expect(order).toEqual([...Array(40).keys()].map((k) => k + 1));
    expect(most.get(session)).toBe(8);
  });

  it("window 1 (the default) runs one at a time", async () => {
    const { session, order } = await sendAll(1, 10);
    expect(order).toEqual([...Array(10).keys()].map((k) => k + 1));
    expect(most.get(session)).toBe(1);
  });

  it("a hedged session with a window is refused with TANDEM_HEDGE and what to do instead", async () => {
    await expect(client.open("slow", { window: 4, hedge: { copies: 2, after: 10 } })).rejects.toMatchObject({ code: "TANDEM_HEDGE", message: expect.stringMatching(/one request at a time/) });
  });

  it("tandem client --window W keeps W requests of each session at its server, in order", async () => {
    const p = tandem("windowed", ["client", "--service", "slow", "--requests", "48", "--concurrency", "2", "--window", "4", "--json"], fastEnv(ns.url));
    expect(await p.exited).toBe(0);
    const responses = p.lines.filter((l) => l.type === "response");
    expect(responses).toHaveLength(48);
    const bySession = new Map<string, number[]>();
    for (const r of responses) bySession.set(r.session as string, [...(bySession.get(r.session as string) ?? []), r.n as number]);
    expect([...bySession.values()]).toEqual([[...Array(24).keys()].map((k) => k + 1), [...Array(24).keys()].map((k) => k + 1)]);
    for (const s of bySession.keys()) expect(most.get(s)).toBe(4);
    expect(p.lines.find((l) => l.type === "summary")).toMatchObject({ answered: 48, errors: 0, complete: true });
  });
});
