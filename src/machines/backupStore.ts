/**
 * What a standby keeps of the primary's backups (DESIGN.md §4): the session table as records
 * and the cursor of the cut they belong to. Pure: messages in, an acknowledgement out.
 *
 * The primary sends a delta (records changed since the last backup, sessions removed) every
 * backupMs, numbered by `seq`; a full backup (possibly in parts) when a standby asks for one.
 * A standby that joined late, missed a delta, or sees a new epoch asks for a full backup.
 */
import type { CursorRecord, SessionRecord } from "./managerCore.js";

export interface BackupMsg {
  epoch: number;
  node: string;
  seq: number;
  full: boolean;
  /** 1-based part number of a full backup, and how many parts it has. */
  part: number;
  parts: number;
  records: SessionRecord[];
  removed: string[];
  cursor: CursorRecord;
}

export interface BackupAck {
  node: string;
  seq: number;
  /** The standby cannot apply deltas: send a full backup. */
  needFull: boolean;
}

export class BackupStore {
  epoch = 0;
  seq = 0;
  primary: string | null = null;
  complete = false;
  records = new Map<string, SessionRecord>();
  cursor: CursorRecord | null = null;
  private staging: { seq: number; records: Map<string, SessionRecord>; next: number } | null = null;

  /** Apply a backup; null when it comes from an older epoch than one already seen (ignore it). */
  apply(msg: BackupMsg, self: string): BackupAck | null {
    if (msg.epoch < this.epoch) return null;
    if (msg.epoch > this.epoch) {
      this.epoch = msg.epoch;
      this.primary = msg.node;
      this.complete = false;
      this.staging = null;
    }
    if (msg.full) {
      if (msg.part === 1) this.staging = { seq: msg.seq, records: new Map(), next: 1 };
      const st = this.staging;
      if (!st || st.seq !== msg.seq || st.next !== msg.part) {
        this.staging = null;
        return { node: self, seq: this.seq, needFull: true };
      }
      for (const r of msg.records) st.records.set(r.session, r);
      st.next++;
      if (msg.part === msg.parts) {
        this.records = st.records;
        this.cursor = msg.cursor;
        this.seq = msg.seq;
        this.complete = true;
        this.staging = null;
      }
      return { node: self, seq: msg.seq, needFull: false };
    }
    if (!this.complete || msg.seq !== this.seq + 1) {
      this.complete = false;
      return { node: self, seq: this.seq, needFull: true };
    }
    for (const r of msg.records) this.records.set(r.session, r);
    for (const id of msg.removed) this.records.delete(id);
    this.cursor = msg.cursor;
    this.seq = msg.seq;
    return { node: self, seq: msg.seq, needFull: false };
  }
}

/** Split a full backup into parts that fit a NATS message. */
export function fullBackup(base: Omit<BackupMsg, "full" | "part" | "parts" | "records" | "removed">, records: SessionRecord[], perPart = 400): BackupMsg[] {
  const parts = Math.max(1, Math.ceil(records.length / perPart));
  const out: BackupMsg[] = [];
  for (let i = 0; i < parts; i++) {
    out.push({ ...base, full: true, part: i + 1, parts, records: records.slice(i * perPart, (i + 1) * perPart), removed: [] });
  }
  return out;
}
