/**
 * What a standby keeps of the primary's backups (docs/design.md §4): the session table as records
 * and the cursor of the cut they belong to. Pure: messages in, an acknowledgement out.
 *
 * The primary sends a delta (records changed since the last backup, sessions removed) every
 * backupMs, numbered by `seq`; a full backup when a standby asks for one. Either comes in as many
 * parts as it takes for each to fit a NATS message (13,000 changed records once made one delta
 * too large to send, and the primary exited); a standby applies a backup when its last part is in.
 * A standby that joined late, missed a part, or sees a new epoch asks for a full backup.
 */
import type { CursorRecord, SessionRecord } from "./managerCore.js";
import { splitToFit } from "./parts.js";

export interface BackupMsg {
  epoch: number;
  node: string;
  seq: number;
  full: boolean;
  /** 1-based part number of this backup, and how many parts it has. */
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
  private staging: { seq: number; full: boolean; records: Map<string, SessionRecord>; removed: string[]; next: number } | null = null;

  /** Apply a backup; null when it comes from an older epoch than one already seen (ignore it). */
  apply(msg: BackupMsg, self: string): BackupAck | null {
    if (msg.epoch < this.epoch) return null;
    if (msg.epoch > this.epoch) {
      this.epoch = msg.epoch;
      this.primary = msg.node;
      this.complete = false;
      this.staging = null;
    }
    // A delta builds on the backup before it; a full backup on nothing.
    if (msg.part === 1) {
      if (!msg.full && (!this.complete || msg.seq !== this.seq + 1)) {
        this.complete = false;
        this.staging = null;
        return { node: self, seq: this.seq, needFull: true };
      }
      this.staging = { seq: msg.seq, full: msg.full, records: new Map(), removed: [], next: 1 };
    }
    const st = this.staging;
    if (!st || st.seq !== msg.seq || st.next !== msg.part || st.full !== msg.full) {
      this.staging = null;
      this.complete = false;
      return { node: self, seq: this.seq, needFull: true };
    }
    for (const r of msg.records) st.records.set(r.session, r);
    st.removed.push(...msg.removed);
    st.next++;
    if (msg.part === msg.parts) {
      if (st.full) this.records = st.records;
      else {
        for (const r of st.records.values()) this.records.set(r.session, r);
        for (const id of st.removed) this.records.delete(id);
      }
      this.cursor = msg.cursor;
      this.seq = msg.seq;
      this.complete = true;
      this.staging = null;
    }
    return { node: self, seq: msg.seq, needFull: false };
  }
}

/**
 * Split a backup into parts whose encoded size stays within `maxBytes` (the bytes of each part's
 * JSON, as `measure` counts them). A record that alone exceeds what a part may hold cannot be
 * sent at all: it is returned in `oversized` (for the caller to report), never sent.
 */
export function splitBackup(
  base: Omit<BackupMsg, "full" | "part" | "parts" | "records" | "removed">,
  full: boolean,
  records: SessionRecord[],
  removed: string[],
  maxBytes: number,
  measure: (v: unknown) => number,
): { parts: BackupMsg[]; oversized: SessionRecord[] } {
  // What every part carries besides its records: the cursor, the numbers (generously counted).
  const overhead = measure({ ...base, full, part: 999_999, parts: 999_999, records: [], removed: [] }) + 16;
  type Item = { record: SessionRecord } | { removed: string };
  const items: Item[] = [...records.map((record) => ({ record })), ...removed.map((id) => ({ removed: id }))];
  const split = splitToFit(items, (it) => ("record" in it ? measure(it.record) : it.removed.length + 2), maxBytes - overhead);
  const parts = split.parts.map((chunk, i) => ({
    ...base,
    full,
    part: i + 1,
    parts: split.parts.length,
    records: chunk.flatMap((it) => ("record" in it ? [it.record] : [])),
    removed: chunk.flatMap((it) => ("removed" in it ? [it.removed] : [])),
  }));
  return { parts, oversized: split.oversized.flatMap((it) => ("record" in it ? [it.record] : [])) };
}

/** Split a full backup into parts of at most `perPart` records (tests; the manager splits by bytes). */
export function fullBackup(base: Omit<BackupMsg, "full" | "part" | "parts" | "records" | "removed">, records: SessionRecord[], perPart = 400): BackupMsg[] {
  const parts = Math.max(1, Math.ceil(records.length / perPart));
  const out: BackupMsg[] = [];
  for (let i = 0; i < parts; i++) {
    out.push({ ...base, full: true, part: i + 1, parts, records: records.slice(i * perPart, (i + 1) * perPart), removed: [] });
  }
  return out;
}
