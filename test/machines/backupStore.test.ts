import { describe, expect, it } from "vitest";
import { BackupStore, fullBackup, splitBackup, type BackupMsg } from "../../src/machines/backupStore.js";
import type { CursorRecord, SessionRecord } from "../../src/machines/managerCore.js";

const cursor = (reqSeq: number, epoch = 1): CursorRecord => ({ v: 1, epoch, reqSeq, respSeq: reqSeq, reqFrom: 1, respFrom: 1, services: ["svc"], servers: [] });
const rec = (session: string, taken = 0, epoch = 1): SessionRecord => ({
  v: 1, session, client: "c", service: "svc", maxPending: 10, server: null, status: "open", lastReq: taken, answered: taken, taken, epoch,
});
const delta = (seq: number, records: SessionRecord[], removed: string[] = [], epoch = 1): BackupMsg => ({
  epoch, node: "p", seq, full: false, part: 1, parts: 1, records, removed, cursor: cursor(seq, epoch),
});

describe("backup store (standby side)", () => {
  it("a standby that joins late asks for a full backup, then applies deltas in order", () => {
    const b = new BackupStore();
    expect(b.apply(delta(5, [rec("a")]), "s")).toEqual({ node: "s", seq: 0, needFull: true });
    const full = fullBackup({ epoch: 1, node: "p", seq: 6, cursor: cursor(6) }, [rec("a", 1), rec("b", 2)], 1);
    expect(full).toHaveLength(2);
    for (const m of full) expect(b.apply(m, "s")?.needFull).toBe(false);
    expect(b.complete).toBe(true);
    expect(b.apply(delta(7, [rec("a", 3)], ["b"]), "s")?.needFull).toBe(false);
    expect([...b.records.keys()]).toEqual(["a"]);
    expect(b.records.get("a")?.taken).toBe(3);
    expect(b.cursor?.reqSeq).toBe(7);
  });

  it("a missed delta makes it ask for a full backup instead of applying a gap", () => {
    const b = new BackupStore();
    for (const m of fullBackup({ epoch: 1, node: "p", seq: 1, cursor: cursor(1) }, [rec("a")])) b.apply(m, "s");
    expect(b.apply(delta(3, [rec("a", 9)]), "s")?.needFull).toBe(true);
    expect(b.records.get("a")?.taken).toBe(0);
    expect(b.complete).toBe(false);
  });

  it("ignores backups from an older epoch and starts over on a newer one", () => {
    const b = new BackupStore();
    for (const m of fullBackup({ epoch: 2, node: "p2", seq: 1, cursor: cursor(1, 2) }, [rec("a", 0, 2)])) b.apply(m, "s");
    expect(b.apply(delta(2, [rec("a", 5)], [], 1), "s")).toBeNull(); // a paused old primary
    expect(b.records.get("a")?.taken).toBe(0);
    expect(b.apply(delta(2, [rec("a", 5, 3)], [], 3), "s")?.needFull).toBe(true);
    expect([b.epoch, b.primary]).toEqual([3, "p"]); // the new primary of epoch 3
  });

  it("a full backup with a missing part is not taken as complete", () => {
    const b = new BackupStore();
    const parts = fullBackup({ epoch: 1, node: "p", seq: 4, cursor: cursor(4) }, [rec("a"), rec("b"), rec("c")], 1);
    b.apply(parts[0]!, "s");
    expect(b.apply(parts[2]!, "s")?.needFull).toBe(true);
    expect(b.complete).toBe(false);
  });
});

describe("backups in parts that fit a NATS message (regression: 13,000 changed records made one delta too large to send)", () => {
  const measure = (v: unknown) => Buffer.byteLength(JSON.stringify(v), "utf8");
  const sized = (session: string, bytes: number): SessionRecord => ({ ...rec(session), service: "s".repeat(bytes) });

  it("every part of a full backup or a delta fits, and the standby ends with exactly the primary's table", async () => {
    const fc = await import("fast-check");
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.tuple(fc.stringMatching(/^[a-z]{1,8}$/), fc.integer({ min: 0, max: 3000 })), { selector: (t) => t[0], maxLength: 60 }),
        fc.uniqueArray(fc.tuple(fc.stringMatching(/^[a-z]{1,8}$/), fc.integer({ min: 0, max: 3000 })), { selector: (t) => t[0], maxLength: 60 }),
        fc.integer({ min: 4000, max: 20_000 }),
        (first, second, maxBytes) => {
          const b = new BackupStore();
          const table = new Map(first.map(([id, n]) => [id, sized(id, n)]));
          const full = splitBackup({ epoch: 1, node: "p", seq: 1, cursor: cursor(1) }, true, [...table.values()], [], maxBytes, measure);
          expect(full.oversized).toEqual([]);
          for (const m of full.parts) {
            expect(measure(m)).toBeLessThanOrEqual(maxBytes);
            expect(b.apply(m, "s")?.needFull).toBe(false);
          }
          // A delta: some records changed or added, some removed.
          const changed = second.map(([id, n]) => sized(id, n));
          const removed = first.filter(([id]) => !second.some(([x]) => x === id)).map(([id]) => id).slice(0, 20);
          for (const r of changed) table.set(r.session, r);
          for (const id of removed) table.delete(id);
          const d = splitBackup({ epoch: 1, node: "p", seq: 2, cursor: cursor(2) }, false, changed, removed, maxBytes, measure);
          for (const m of d.parts) {
            expect(measure(m)).toBeLessThanOrEqual(maxBytes);
            expect(b.apply(m, "s")?.needFull).toBe(false);
          }
          expect(b.complete).toBe(true);
          expect(new Map([...b.records].sort())).toEqual(new Map([...table].sort()));
        },
      ),
      { numRuns: 200 },
    );
  });

  it("a record that can never fit is left out and named, the rest still go", () => {
    const out = splitBackup({ epoch: 1, node: "p", seq: 1, cursor: cursor(1) }, true, [rec("a"), sized("huge", 600_000), rec("b")], [], 256 * 1024, measure);
    expect(out.oversized.map((r) => r.session)).toEqual(["huge"]);
    expect(out.parts.flatMap((p) => p.records.map((r) => r.session))).toEqual(["a", "b"]);
  });

  it("a delta whose middle part is lost is not half applied: the standby asks for a full backup", () => {
    const b = new BackupStore();
    for (const m of fullBackup({ epoch: 1, node: "p", seq: 1, cursor: cursor(1) }, [rec("a")])) b.apply(m, "s");
    const d = splitBackup({ epoch: 1, node: "p", seq: 2, cursor: cursor(2) }, false, [sized("x", 3000), sized("y", 3000), sized("z", 3000)], ["a"], 5000, measure);
    expect(d.parts.length).toBe(3);
    expect(b.apply(d.parts[0]!, "s")?.needFull).toBe(false);
    expect(b.apply(d.parts[2]!, "s")?.needFull).toBe(true);
    expect([...b.records.keys()]).toEqual(["a"]); // nothing of the broken delta applied
    expect(b.complete).toBe(false);
  });
});
