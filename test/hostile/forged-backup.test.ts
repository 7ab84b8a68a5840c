/**
 * A standby takes backups only from the lease holder (regression, hostile-input issue: a forged
 * <p>.mgr.backup poisoned a standby's table, 15.8 s without service after the primary was
 * killed, and, repeated, kept the standby from ever taking over, since a backup counted as the
 * primary's sign of life).
 */
import { afterAll, describe, expect, it } from "vitest";
import { encode } from "../../src/runtime/wire.js";
import { startNats, type NatsServer } from "../helpers/nats.js";
import { primaryAndStandby } from "../helpers/standby.js";

const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

describe("forged backups", () => {
  it("a standby ignores backups that do not come from the lease holder, and takes over with the real table", { timeout: 60_000 }, async () => {
    const ns: NatsServer = await startNats();
    cleanups.push(() => ns.cleanup());
    const { rt, rt1, m1, m2, client } = await primaryAndStandby(ns, cleanups);
    const sessions = await Promise.all([0, 1, 2].map(() => client.open("svc")));
    for (const s of sessions) await s.request("before");
    const epoch = m1.status().epoch;
    // An attacker's "full backup" of an empty table, as another node and as m1 at a later epoch.
    const rtX = await rt("x");
    const cursor = { v: 1, epoch, reqSeq: 999_999, respSeq: 999_999, reqFrom: 999_999, respFrom: 999_999, services: [], servers: [] };
    const forged = (node: string, e: number) => encode({ epoch: e, node, seq: 1, full: true, part: 1, parts: 1, records: [], removed: [], cursor: { ...cursor, epoch: e } });
    // And malformed ones as the holder itself: refused by the schema, dead-lettered.
    const malformed = encode({ epoch, node: "m1", seq: 1, full: true, part: 1, parts: 1, records: [{ session: "x".repeat(100) }], removed: [], cursor: { ...cursor, epoch } });
    const forging = setInterval(() => {
      rtX.nc.publish(rtX.names.backup, forged("evil", epoch));
      rtX.nc.publish(rtX.names.backup, forged("m1", epoch + 5));
      rtX.nc.publish(rtX.names.backup, malformed);
    }, 100);
    try {
      await new Promise((r) => setTimeout(r, 800));
      const dead = await rtX.jsm.streams.getMessage(rtX.names.streamDlq, { last_by_subj: rtX.names.dlq("malformed", "unsecured") });
      expect(dead?.json()).toMatchObject({ subject: rtX.names.backup, message: expect.stringMatching(/^backup: \/records\/0/) });
      // The primary dies without a word; the forgeries go on.
      await rt1.nc.close();
      await m2.waitPrimary(15_000);
      expect(m2.status().sessions).toBe(3); // the real table, not the forged empty one
      for (const s of sessions) await expect(s.request("after")).resolves.toBe("after");
    } finally {
      clearInterval(forging);
    }
    await client.close();
  });
});
