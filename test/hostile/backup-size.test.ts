/**
 * Backups never exceed what NATS carries (regression, hostile-input issue: 13,000 open sessions
 * and one server death made one delta backup larger than max_payload, and the primary exited).
 * A real nats-server with an 8 KiB max_payload makes ordinary use overflow a single message:
 * 60 sessions' records come to more than 8 KiB (asserted below); with 150 sessions the takeover's
 * restart of their client (about 100 bytes a session) does not fit one message either (it was
 * retried forever, and the takeover never finished for that client).
 */
import { afterAll, describe, expect, it } from "vitest";
import type { ClientSession } from "../../src/actors/client.js";
import { NatsServer } from "../../src/runtime/dev/nats-server.js";
import { eventually } from "../helpers/nats.js";
import { primaryAndStandby } from "../helpers/standby.js";

const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

/**
 * A nats-server with an 8 KiB max_payload, a primary (m1) and a standby (m2), one server, and one
 * client with `count` sessions that have each been answered once.
 */
async function smallPayloadDeployment(count: number) {
  const ns = await NatsServer.start({ config: "max_payload: 8192\n" });
  cleanups.push(() => ns.cleanup());
  const { rt1, m1, m2, client } = await primaryAndStandby(ns, cleanups, { maxPayload: 3000 });
  const sessions: ClientSession[] = [];
  for (let i = 0; i < count; i++) sessions.push(await client.open("svc", { restart: { i } }));
  await Promise.all(sessions.map((s, i) => s.request(i)));
  return { rt1, m1, m2, client, sessions };
}

describe("backups and restarts in parts", () => {
  it("with more session records than one message carries, the standby gets them all and takes over with every session", { timeout: 90_000 }, async () => {
    const { rt1, m1, m2, client, sessions } = await smallPayloadDeployment(60);
    // The premise: the table's records do not fit one message of this server.
    let recordBytes = 0;
    for await (const k of await rt1.kv.sessions.keys()) recordBytes += (await rt1.kv.sessions.get(k))?.value.length ?? 0;
    expect(recordBytes).toBeGreaterThan(8192);
    // The standby acknowledges backups of the whole table: a full one and deltas, in parts.
    await eventually(() => {
      const st = m1.status().standbys.find((s) => s.node === "m2");
      return st && st.lastBackupAgeMs < 1000 && st.seq > 3;
    }, "the standby to keep up with the backups");
    expect(m1.isPrimary()).toBe(true); // still alive: no backup was too large to send
    // The primary dies without a word (its connection cut): the standby takes over from its backup.
    await rt1.nc.close();
    await m2.waitPrimary(30_000);
    expect(m2.status().sessions).toBe(60);
    const answers = await Promise.all(sessions.map((s, i) => s.request(i + 1000)));
    expect(answers).toEqual(sessions.map((_, i) => i + 1000));
    await client.close();
  });

  it("a takeover restarts a client whose sessions do not fit one restart message", { timeout: 90_000 }, async () => {
    const { rt1, m1, m2, client, sessions } = await smallPayloadDeployment(150);
    await eventually(() => (m1.status().standbys.find((s) => s.node === "m2")?.seq ?? 0) > 3, "the standby to keep up");
    await rt1.nc.close();
    await m2.waitPrimary(30_000);
    // Every session serves again: the client's restart went out in parts and was acknowledged.
    const answers = await Promise.all(sessions.map((s, i) => s.request(i + 1000)));
    expect(answers).toEqual(sessions.map((_, i) => i + 1000));
    await client.close();
  });
});
