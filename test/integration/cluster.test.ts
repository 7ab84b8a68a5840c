/**
 * Beyond one machine (docs/design.md §6): a real three-server NATS cluster on loopback, streams and
 * buckets with three replicas, and real faults: SIGKILL of the nats-server that leads
 * TANDEM_REQ under load (restarted later), and SIGKILL of a nats-server together with the
 * primary manager. I1, I2, I3 and I6 are checked on the recorded history; each test prints the
 * pause the fault caused, and the first test measures the broker's own floor beside it: a bare
 * JetStream client publishing through a SIGKILL of its stream's leader (a follower waits 4-9 s
 * before it stands for election, in every version from 2.9 to 2.15: measured, not assumed).
 */
import { afterEach, describe, expect, it } from "vitest";
import { Deployment, until } from "../helpers/deployment.js";
import { checkHistory } from "../helpers/history.js";
import { recovery } from "../helpers/timing.js";

let d: Deployment | undefined;
afterEach(async (ctx) => {
  if (d && (ctx.task.result?.state === "fail" || process.env.TANDEM_TEST_LOGS)) console.error(d.logs(80));
  await d?.stop();
  d = undefined;
});

const answered = (dep: Deployment) => dep.clients.reduce((a, c) => a + c.answered(), 0);

function verdict(dep: Deployment): string[] {
  const v = checkHistory(dep.clients.map((c) => c.history()));
  if (!v.ok) console.error(v.problems.slice(0, 20).join("\n"));
  return v.problems;
}

/** The index of the server leading a stream (retried: during an election there is none). */
async function leaderOf(dep: Deployment, stream: string): Promise<number> {
  const { jetstreamManager } = await import("@nats-io/jetstream");
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const jsm = await jetstreamManager(dep.nc, { timeout: 2000 });
      const i = dep.cluster!.indexOf((await jsm.streams.info(stream)).cluster?.leader ?? "");
      if (i >= 0) return i;
    } catch {
      /* electing */
    }
    if (Date.now() > deadline) throw new Error(`no leader for ${stream} within 60 s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe("a three-server NATS cluster", () => {
  it("the broker's floor - a bare JetStream client's publishes through a SIGKILL of the stream leader (no Tandem)", { timeout: 120_000 }, async () => {
    const { NatsCluster } = await import("../../src/runtime/dev/nats-cluster.js");
    const { connect } = await import("@nats-io/transport-node");
    const { jetstream, jetstreamManager } = await import("@nats-io/jetstream");
    const cluster = await NatsCluster.start({ size: 3 });
    try {
      await cluster.waitReady(30_000);
      const nc = await connect({ servers: cluster.urls, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: "FLOOR", subjects: ["floor.>"], num_replicas: 3 });
      const js = jetstream(nc, { timeout: 1000 });
      for (let i = 0; i < 20; i++) await js.publish("floor.x", "warm");
      const leader = cluster.indexOf((await jsm.streams.info("FLOOR")).cluster?.leader ?? "");
      expect(leader).toBeGreaterThanOrEqual(0);
      const t0 = performance.now();
      await cluster.kill(leader);
      // Publish until one is acknowledged again: the gap is what any JetStream client waits.
      let acked = false;
      while (!acked && performance.now() - t0 < 60_000) {
        acked = await js.publish("floor.x", "after").then(() => true, () => false);
      }
      const gapMs = Math.round(performance.now() - t0);
      console.log(`broker floor: a bare JetStream client's first acknowledged publish ${gapMs} ms after SIGKILL of the stream leader`);
      expect(acked).toBe(true);
      const newLeader = cluster.indexOf((await jsm.streams.info("FLOOR")).cluster?.leader ?? "");
      expect(newLeader).not.toBe(leader);
      await nc.close();
    } finally {
      await cluster.cleanup();
    }
  });

  it("cluster - SIGKILL of the nats-server leading TANDEM_REQ under load, restarted later: nothing lost or duplicated", { timeout: 240_000 }, async () => {
    d = await Deployment.start({ cluster: 3, managers: 2, servers: 2 });
    const jsm = await (await import("@nats-io/jetstream")).jetstreamManager(d.nc);
    for (const s of [d.names.streamReq, d.names.streamResp, `KV_${d.names.bucketCtl}`]) {
      expect((await jsm.streams.info(s)).config.num_replicas).toBe(3); // replicas: auto
    }
    const clients = [d.client("a", 300, 3), d.client("b", 300, 3)];
    for (const c of clients) c.start();
    await until(() => answered(d!) >= 150, "load");
    const victim = await leaderOf(d, d.names.streamReq);
    expect(victim).toBeGreaterThanOrEqual(0);
    const t0 = performance.now();
    await d.cluster!.kill(victim);
    await until(() => recovery(clients, t0).allMs !== null, "every session serving again", 60_000);
    const r = recovery(clients, t0);
    const newLeader = await leaderOf(d, d.names.streamReq);
    console.log(`nats-server ${d.cluster!.names[victim]} (leader of TANDEM_REQ) killed: first response ${r.firstMs} ms after, every one of ${r.sessions} sessions serving again after ${r.allMs} ms; new leader ${d.cluster!.names[newLeader]}`);
    expect(newLeader).not.toBe(victim);
    await d.cluster!.restart(victim);
    await until(() => clients.every((c) => c.finished()), "every client to finish", 120_000);
    expect(verdict(d)).toEqual([]);
  });

  it("cluster - SIGKILL of a nats-server and the primary manager together: a standby takes over, nothing lost or duplicated", { timeout: 240_000 }, async () => {
    d = await Deployment.start({ cluster: 3, managers: 2, servers: 2 });
    const clients = [d.client("a", 300, 3), d.client("b", 300, 3)];
    for (const c of clients) c.start();
    await until(() => answered(d!) >= 150, "load");
    const primary = (await d.primary())!;
    const before = (await d.status())!.node;
    // The leader of the lease bucket: the primary's renewals and the standby's takeover both need it.
    const victim = await leaderOf(d, `KV_${d.names.bucketCtl}`);
    const t0 = performance.now();
    await Promise.all([primary.kill("SIGKILL"), d.cluster!.kill(victim)]);
    await until(() => recovery(clients, t0).allMs !== null, "every session serving again", 90_000);
    const r = recovery(clients, t0);
    // The test's own connection may still be reconnecting from the killed nats-server, or the
    // status request may time out during the elections: ask until the primary answers
    // (the sessions serving again proved it runs; regression: a null status failed here).
    let after: string | undefined;
    await until(async () => (after = (await d!.status())?.node) !== undefined, "the primary to answer status", 30_000);
    console.log(`nats-server ${d.cluster!.names[victim]} (leader of the lease bucket) and the primary manager killed together: first response ${r.firstMs} ms after, every one of ${r.sessions} sessions serving again after ${r.allMs} ms`);
    expect(after).not.toBe(before);
    await d.cluster!.restart(victim);
    d.startManager();
    await until(() => clients.every((c) => c.finished()), "every client to finish", 120_000);
    expect(verdict(d)).toEqual([]);
  });
});
