/**
 * Waiting is never silent (issue 16, item 5): a server with no manager says so within seconds,
 * with what to check, and a standby says whom it stands by for.
 */
import { afterAll, describe, expect, it } from "vitest";
import { ManagerNode } from "../../src/actors/manager.js";
import { TandemServer } from "../../src/actors/server.js";
import { eventually, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";
import { logLines, tandem } from "../helpers/procs.js";

const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

describe("waiting says what for", () => {
  it("a server without a manager warns within seconds; a standby names its primary", async () => {
    const ns: NatsServer = await startNats();
    cleanups.push(() => ns.cleanup());
    const srvRt = await runtimeFor(ns, {}, "server");
    cleanups.push(() => srvRt.close());
    const t0 = performance.now();
    const starting = TandemServer.start(srvRt, { service: "svc", handler: (r) => r.payload });
    const warned = await eventually(() => srvRt.logs().find((l) => l.level === 40 && String(l.msg).startsWith("no manager answers this server's registration")), "the server's warning", 10_000);
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(String(warned.msg)).toContain("tandem manager");
    // A manager comes: the server registers; a second one stands by and says for whom.
    const aRt = await runtimeFor(ns, { node: "mA" }, "a");
    cleanups.push(() => aRt.close());
    const a = new ManagerNode(aRt);
    a.start();
    cleanups.push(() => a.stop());
    await a.waitPrimary();
    const server = await starting;
    cleanups.push(() => server.stop());
    const bRt = await runtimeFor(ns, { node: "mB" }, "b");
    cleanups.push(() => bRt.close());
    const b = new ManagerNode(bRt);
    b.start();
    cleanups.push(() => b.stop());
    const standing = await eventually(() => bRt.logs().find((l) => l.msg === "standing by: another manager is primary; taking over if its lease lapses"), "the standby's line");
    expect(standing.primary).toBe("mA");
  }, 60_000);

  it("a process whose NATS does not answer says which one within seconds", async () => {
    // Port 1 on loopback: nothing listens there.
    const p = tandem("manager-no-nats", ["manager"], { NATS_URL: "nats://127.0.0.1:1", TANDEM_LOG_JSON: "1" });
    cleanups.push(() => p.kill("SIGKILL"));
    const t0 = performance.now();
    const line = await eventually(() => logLines(p).find((l) => String(l.msg).startsWith("no NATS server answers at nats://127.0.0.1:1")), "the warning naming the URL", 10_000);
    expect(performance.now() - t0).toBeLessThan(6000);
    expect(String(line.msg)).toContain("tandem nats");
  }, 30_000);
});
