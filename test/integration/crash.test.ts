import { afterEach, describe, expect, it } from "vitest";
import { createHash } from "node:crypto";
import { Deployment, until } from "../helpers/deployment.js";
import { checkHistory } from "../helpers/history.js";
import { logLines } from "../helpers/procs.js";

let d: Deployment | undefined;
afterEach(async (ctx) => {
  // A failing test shows what every process said, for whoever reads CI's output.
  if (d && ctx.task.result?.state === "fail") console.error(d.logs(60));
  await d?.stop();
  d = undefined;
});

function verdict(dep: Deployment) {
  const v = checkHistory(dep.clients.map((c) => c.history()));
  if (!v.ok) console.error(v.problems.slice(0, 20).join("\n"), "\n", dep.logs());
  return v;
}

describe("crashes of real processes", () => {
  it("client - killed with SIGKILL mid-run and started again on its state file, it gets every response once, in order (I1, I2, I3, I6)", async () => {
    d = await Deployment.start({ servers: 1 });
    const c = d.client("client", 200, 2);
    c.start();
    await until(() => c.answered() >= 50, "50 responses");
    await c.kill();
    const before = c.answered();
    c.start();
    await until(() => c.finished(), "the resumed client to finish", 60_000);
    expect(c.lines.some((l) => l.type === "resumed")).toBe(true);
    const v = verdict(d);
    expect(v.problems).toEqual([]);
    expect(before).toBeLessThan(200);
  });

  it("server - killed with SIGKILL under load, its sessions move and the new server continues from the server restart data", async () => {
    // hash work: each request does 400k sha256 rounds and checkpoints its progress 4 times.
    d = await Deployment.start({ servers: 2, work: ["--work", "hash", "--rounds", "400000"] });
    const c = d.client("client", 12, 4, ["--payload", '{"job":"same"}']);
    c.start();
    // Kill server 0 right after it recorded progress of work still under way (a checkpoint at
    // round 100k of 400k, seen in the response queue).
    const victim = d.servers[0]!;
    let checkpointed = false;
    const sub = d.nc.subscribe("tandem.resp.>", {
      callback: (_e, m) => {
        const server = m.headers?.get("Tandem-Server") ?? "";
        const body = JSON.parse(new TextDecoder().decode(m.data)) as { restart?: { round?: number } };
        if (m.headers?.get("Tandem-Kind") === "control" && server.startsWith("srv0-") && body.restart?.round === 100_000) {
          if (!checkpointed) void victim.kill("SIGKILL");
          checkpointed = true;
        }
      },
    });
    await until(() => checkpointed && !victim.running(), "server 0 killed mid-work");
    sub.unsubscribe();
    await until(() => c.finished(), "the client to finish", 90_000);
    const v = verdict(d);
    expect(v.problems).toEqual([]);
    // Every digest is what 400k rounds give, also for work continued from a checkpoint.
    const want = expectedDigest({ job: "same" }, 400_000);
    for (const l of c.lines.filter((x) => x.type === "response")) {
      expect(l.response).toEqual({ rounds: 400_000, digest: want });
    }
    const continued = logLines(d.servers[1]!).filter((x) => x.msg === "continuing hash work from server restart data");
    console.log(`the surviving server continued ${continued.length} request(s) from server restart data`);
    expect(continued.length).toBeGreaterThan(0);
  });

  it("manager - killed with SIGKILL under load and started again, nothing is lost or duplicated (I1, I2, I3)", async () => {
    d = await Deployment.start({ servers: 2 });
    const a = d.client("a", 300, 3);
    const b = d.client("b", 300, 3);
    a.start();
    b.start();
    await until(() => a.answered() + b.answered() >= 150, "150 responses");
    const t0 = performance.now();
    await d.manager!.kill("SIGKILL");
    d.startManager();
    const at = a.answered() + b.answered();
    await until(() => a.answered() + b.answered() > at + 5, "service again after the manager restart");
    console.log(`manager restart: first responses again ${Math.round(performance.now() - t0)} ms after SIGKILL (includes lease expiry ${d.env.TANDEM_LEASE_MS} ms)`);
    await until(() => a.finished() && b.finished(), "both clients to finish", 90_000);
    expect(verdict(d).problems).toEqual([]);
  });
});

describe("restarts after sessions closed", () => {
  it("manager - killed after every session closed, a new one becomes primary at once (regression: it waited for purged sequences)", async () => {
    d = await Deployment.start({ servers: 1 });
    const c = d.client("client", 40, 4);
    c.start();
    await until(() => c.finished(), "the client to finish (its sessions are closed and purged)");
    const old = (await d.status())!.node;
    await d.manager!.kill("SIGKILL");
    const t0 = performance.now();
    d.startManager();
    await d.waitPrimary(old, 15_000);
    console.log(`new primary after ${Math.round(performance.now() - t0)} ms (lease ${d.env.TANDEM_LEASE_MS} ms)`);
    // And it serves: a new client's sessions open, resume after a kill, and finish.
    const c2 = d.client("client2", 40, 2);
    c2.start();
    await until(() => c2.answered() >= 10, "the new client to be served");
    await c2.kill();
    c2.start();
    await until(() => c2.finished(), "the resumed client to finish");
    expect(verdict(d).problems).toEqual([]);
  });
});

// The hash handler's digest, recomputed here: the same for work restarted from a checkpoint.
function expectedDigest(payload: unknown, rounds: number): string {
  let digest = createHash("sha256").update(JSON.stringify(payload ?? null)).digest("hex");
  for (let r = 0; r < rounds; r++) digest = createHash("sha256").update(digest).digest("hex");
  return digest;
}
