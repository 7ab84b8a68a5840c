import { describe, expect, it } from "vitest";
import { BackupStore, fullBackup, type BackupMsg } from "../../src/machines/backupStore.js";
import type { CursorRecord, SessionRecord } from "../../src/machines/managerCore.js";

const cursor = (reqSeq: number, epoch = 1): CursorRecord => ({ v: 1, epoch, reqSeq, respSeq: reqSeq, reqFrom: 1, respFrom: 1, services: ["svc"], servers: [] });
const rec = (session: string, taken = 0, epoch = 1): SessionRecord => ({
  v: 1, session, client: "c", service: "svc", ordered: true, maxPending: 10, server: null, status: "open", lastReq: taken, answered: taken, taken, epoch,
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
