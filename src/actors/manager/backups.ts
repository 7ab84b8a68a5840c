/**
 * Backups and snapshots of one term (docs/design.md §4): every backupMs a cut of the table goes
 * to the standbys (full to any that asked), and at most once a second to the bucket, cursor
 * last; the queues are trimmed behind the cut written 10 s ago. The standbys' acknowledgements
 * come back on the term's own inbox.
 */
import type { Subscription } from "@nats-io/transport-node";
import { splitBackup, type BackupAck, type BackupMsg } from "../../machines/backupStore.js";
import type { CursorRecord, SessionRecord } from "../../machines/managerCore.js";
import { byEpoch, FencedError } from "../../runtime/fenced-kv.js";
import { decode, encode, encodedSize } from "../../runtime/wire.js";
import { now, type PrimaryTerm, type TermBackups } from "./term.js";

/** Queues are trimmed behind the bucket cut written this long ago (see trimQueues; tests shorten it). */
const trimLagMs = () => Number(process.env.TANDEM_TRIM_LAG_MS ?? 10_000);

/** The bucket gets the manager's cut at most this often (standbys get every backup). */
const KV_EVERY_MS = 1000;

export class Backups implements TermBackups {
  /** Standby managers that acknowledged backups, with when and what they asked for. */
  readonly standbys = new Map<string, { at: number; seq: number; needFull: boolean }>();
  private acks: Subscription | null = null;
  private backupSeq = 0;
  /** The cut the bucket has not got yet, and when it last got one. */
  private kvPending = new Map<string, SessionRecord>();
  private kvWrittenAt = 0;
  private snapshotWarnedAt = -Infinity;
  private running: Promise<void> | null = null;

  constructor(private readonly term: PrimaryTerm) {}

  private get inbox(): string {
    return `_INBOX.tandem-backup.${this.term.ctx.node}.${this.term.epoch}`;
  }

  /** Serving begins: listen for the standbys' acknowledgements, back up every backupMs. */
  start(): void {
    const term = this.term;
    this.acks = term.rt.nc.subscribe(this.inbox, {
      callback: (err, m) => {
        if (err) return;
        try {
          const ack = decode(m.data) as BackupAck;
          this.standbys.set(ack.node, { at: now(), seq: ack.seq, needFull: ack.needFull });
        } catch {
          /* ignore */
        }
      },
    });
    term.timers.push(
      setInterval(() => {
        if (term.acting && !this.running) this.running = this.snapshot().finally(() => (this.running = null));
      }, term.rt.config.backupMs),
    );
  }

  /** The snapshot in progress, if any (a close waits for it: it must not write a record back). */
  get inProgress(): Promise<void> | null {
    return this.running;
  }

  /** The last cut, to the bucket at once (a drain). */
  async flush(): Promise<void> {
    await this.running;
    await this.snapshot(true);
  }

  stop(): void {
    this.acks?.unsubscribe();
    this.acks = null;
    this.kvPending.clear();
  }

  /**
   * Every backupMs: take a cut of the table and send it to the standbys. The bucket gets the
   * latest cut at most once a second (KV_EVERY_MS): standbys hold the fresh one in memory, the
   * bucket is for a manager started cold, and a write per active session per backup would cost
   * more than the round trips it protects. Records merge into the pending cut, so the bucket
   * always holds a consistent cut (every record as of its cursor, or newer).
   */
  async snapshot(flush = false): Promise<void> {
    const term = this.term;
    const { core, epoch } = term;
    const kvSessions = term.kv.sessions;
    const kvCtl = term.kv.ctl;
    if (!term.acting) return;
    const { records, removed, cursor } = core.snapshot();
    for (const r of records) this.kvPending.set(r.session, r);
    for (const id of removed) this.kvPending.delete(id);
    this.sendBackup(records, removed, cursor);
    if (!flush && now() - this.kvWrittenAt < KV_EVERY_MS) return;
    const pending = [...this.kvPending.values()];
    this.kvPending.clear();
    try {
      await Promise.all(pending.map((r) => kvSessions.write(r.session, r, byEpoch(epoch))));
      // The cursor is written last: every record of this cut is stored before it.
      if (term.acting) await kvCtl.write("cursor", cursor, byEpoch(epoch));
      this.kvWrittenAt = now();
      this.trimQueues(cursor);
    } catch (err) {
      if (err instanceof FencedError) {
        term.ctx.fenced(term, err.message);
        return;
      }
      // Keep them for the next write (newer records of the same session win).
      for (const r of pending) if (!this.kvPending.has(r.session) && core.sessions.has(r.session)) this.kvPending.set(r.session, r);
      // During a NATS election this fails every backupMs: say it once every few seconds.
      if (now() - this.snapshotWarnedAt > 5000) {
        this.snapshotWarnedAt = now();
        this.term.log.warn({ err: { message: (err as Error).message } }, "snapshot to the bucket failed; retrying (the standbys have it)");
      }
    }
  }

  /** Cuts written to the bucket, oldest first, for trimming the queues behind them. */
  private cuts: Array<{ at: number; reqFrom: number; respFrom: number }> = [];
  private trimmed = { req: 0, resp: 0 };

  /**
   * Storage that does not grow (issue 14): entries below a cut's `reqFrom`/`respFrom` are never
   * read again (every request below is answered, every response below taken, in every session),
   * so the queues are purged up to the cut written 10 s ago. The lag leaves time for a
   * cursor that skipped an entry to find it (healSkipped) before it could go. Before, a live
   * session's queues grew by a message per request and per response for as long as it lived.
   */
  private trimQueues(cursor: CursorRecord): void {
    const t = now();
    this.cuts.push({ at: t, reqFrom: cursor.reqFrom, respFrom: cursor.respFrom });
    let cut: (typeof this.cuts)[number] | undefined;
    const lag = trimLagMs();
    while (this.cuts.length > 0 && t - this.cuts[0]!.at >= lag) cut = this.cuts.shift();
    if (!cut || !this.term.acting) return;
    const { queues } = this.term.store;
    for (const [which, from] of [["req", cut.reqFrom], ["resp", cut.respFrom]] as const) {
      if (from <= this.trimmed[which] + 1) continue;
      this.trimmed[which] = from - 1;
      queues.trim(which, from).catch((err: Error) => this.term.log.debug({ err: { message: err.message }, queue: which }, "trimming a queue failed; the next cut retries"));
    }
  }

  /** When a record too large for any backup part was last reported (rate-limits the report). */
  private oversizeWarnedAt = -Infinity;

  /** Backup to the standbys: the same cut as the snapshot, full to any that asked for it. */
  private sendBackup(records: SessionRecord[], removed: string[], cursor: CursorRecord): void {
    const { core, epoch, rt } = this.term;
    if (!this.acks) return;
    const reply = this.inbox;
    const stale = now() - 10 * rt.config.backupMs - 2000;
    for (const [node, a] of this.standbys) if (a.at < stale) this.standbys.delete(node);
    const wantFull = this.backupSeq === 0 || [...this.standbys.values()].some((a) => a.needFull);
    const seq = ++this.backupSeq;
    const base = { epoch, node: this.term.ctx.node, seq, cursor };
    if (wantFull) for (const a of this.standbys.values()) a.needFull = false;
    // What this NATS server carries (its INFO's max_payload), with headroom for headers.
    const maxBytes = (rt.nc.info?.max_payload ?? 1024 * 1024) - 1024;
    const all = wantFull ? core.allRecords() : records;
    const gone = wantFull ? [] : removed;
    // The usual backup fits one message: encode it once and send it, as before parts existed.
    const whole = encode({ ...base, full: wantFull, part: 1, parts: 1, records: all, removed: gone } satisfies BackupMsg);
    if (whole.length <= maxBytes) {
      rt.nc.publish(rt.names.backup, whole, { reply });
      return;
    }
    const { parts, oversized } = splitBackup(base, wantFull, all, gone, maxBytes, encodedSize);
    if (oversized.length > 0 && now() - this.oversizeWarnedAt > 5000) {
      this.oversizeWarnedAt = now();
      this.term.log.error({ sessions: oversized.map((r) => r.session).slice(0, 10), maxBytes }, "session records too large for any backup message are left out of the backups (the bucket and the queues still have them)");
    }
    for (const m of parts) rt.nc.publish(rt.names.backup, encode(m), { reply });
  }
}
