/**
 * The manager's store (docs/design.md §3, §4): everything the manager keeps in JetStream, in
 * the manager's words. The lease, the cursors on the queues, the queues and the session and
 * restart records each have a small interface here; the parts of the manager (lease.ts,
 * rebuild.ts, consumers.ts, intake.ts, calls.ts, effects.ts, backups.ts) go through it and
 * never name a stream, a bucket or a JetStream call themselves. One implementation,
 * `JetStreamStore`, over the runtime's connection: its tests run it against a real nats-server
 * (test/integration/manager-store.test.ts).
 */
import { AckPolicy, DeliverPolicy, type Consumer, type JsMsg, type MsgRequest } from "@nats-io/jetstream";
import type { MsgHdrs } from "@nats-io/transport-node";
import type { CursorRecord } from "../../machines/managerCore.js";
import { loadDispatchSecret } from "../../runtime/dispatch-key.js";
import { FencedKv } from "../../runtime/fenced-kv.js";
import { newId } from "../../runtime/ids.js";
import { dropCursors, openCursor, readLastPerSubject } from "../../runtime/jetstream.js";
import { publishToQueue } from "../../runtime/queue-publish.js";
import type { Runtime } from "../../runtime/runtime.js";
import { encode } from "../../runtime/wire.js";

/** The two queue streams: requests (with opens and checkpoints) and responses (with attempts). */
export type Queue = "req" | "resp";

/** A record with the revision it was read at; `value` null: deleted (the key has a marker). */
export interface Versioned<T> {
  value: T | null;
  revision: number;
}

/** What the lease (the `leader` key) is made of. */
export interface LeaseRecord {
  epoch: number;
  node: string;
  since: string;
}

/** A queue entry as stored: what the intake applies (the shape of a consumer's JsMsg). */
export interface StoredEntry {
  seq: number;
  subject: string;
  data: Uint8Array;
  headers?: MsgHdrs;
  time: Date;
}

/** The lease: read, and written only by compare-and-set (docs/design.md §4). */
export interface LeaseStore {
  /** The lease as stored; null when it was never written. */
  read(): Promise<Versioned<LeaseRecord> | null>;
  /**
   * Write the lease if it still is at `revision` (null: only if it was never written); the
   * new revision. Throws JetStream's wrong-last-sequence when someone else moved it.
   */
  write(record: LeaseRecord, revision: number | null, timeoutMs?: number): Promise<number>;
}

/** The table's cursors: the bucket's cut and the consumers that read the queues from it. */
export interface CursorStore {
  /** The last cut written to the bucket (where a cold takeover starts); null when none. */
  read(): Promise<Versioned<CursorRecord> | null>;
  /** A new cursor on a queue named by `tag`, delivering from `fromSeq`, ack-none. */
  open(queue: Queue, tag: string, fromSeq: number): Promise<Consumer>;
  /** Drop every cursor on a queue but the one of `keepTag` (best effort, bounded). */
  drop(queue: Queue, keepTag: string | null): Promise<number>;
}

/** The queue streams. */
export interface QueueStore {
  /** The last sequence stored in a queue. */
  lastSeq(queue: Queue): Promise<number>;
  /** The entry at `seq`; null when there is none (trimmed, purged, never). */
  at(queue: Queue, seq: number): Promise<StoredEntry | null>;
  /** The first entry at or after `seq`; null when there is none. */
  next(queue: Queue, seq: number): Promise<StoredEntry | null>;
  /** Store an entry of the manager's own (a session's open, a response the manager writes). */
  append(subject: string, data: Uint8Array, opts: { msgID: string; headers: MsgHdrs; timeout: number }): Promise<void>;
  /** Every entry of one session's queue, in order, to `each`; how many there were. */
  readSession(queue: Queue, client: string, session: string, each: (m: JsMsg) => void): Promise<number>;
  /** Drop every entry below `fromSeq` (a cut's: never read again). */
  trim(queue: Queue, fromSeq: number): Promise<void>;
  /** Drop a closed session's entries from both queues. */
  forgetSession(client: string, session: string): Promise<void>;
  /** Entries in the dead-letter stream (metrics). */
  deadLetters(): Promise<number>;
}

/** The session and restart records, in their buckets. */
export interface RecordStore {
  /** Fenced writers for one term (fresh revision maps: I5). */
  fencedWriters(): { sessions: FencedKv; ctl: FencedKv; restart: FencedKv };
  /** The deployment's dispatch secret (created by the first manager). */
  dispatchSecret(): Promise<Buffer>;
  /** Is there a record of this session in the bucket? */
  hasSession(session: string): Promise<{ client: string } | null>;
  /** The last value of every key of a bucket, with the sequence it was stored at. */
  readAll(bucket: "sessions" | "restart"): Promise<Array<{ key: string; seq: number; data: Uint8Array }>>;
  /** A hedged request's outcome (`<session>.hedge.<n>`), unfenced: it is a log, not a cut. */
  putHedge(session: string, n: number, record: unknown): Promise<void>;
  /** Drop a closed session's records (and its hedge records) from the buckets' streams. */
  forgetSession(session: string, what: "hedges" | "records"): Promise<void>;
}

export interface ManagerStore {
  readonly lease: LeaseStore;
  readonly cursors: CursorStore;
  readonly queues: QueueStore;
  readonly records: RecordStore;
}

/** Bytes a session's replay pulls at once (at least the largest message NATS carries). */
const PULL_MAX_BYTES = 8 * 1024 * 1024;

const toEntry = (sm: { seq: number; subject: string; data: Uint8Array; header?: MsgHdrs; time: Date }): StoredEntry => ({
  seq: sm.seq,
  subject: sm.subject,
  data: sm.data,
  headers: sm.header,
  time: sm.time,
});

/** The manager's store over JetStream: the runtime's streams and buckets. */
export class JetStreamStore implements ManagerStore {
  readonly lease: LeaseStore;
  readonly cursors: CursorStore;
  readonly queues: QueueStore;
  readonly records: RecordStore;

  constructor(rt: Runtime) {
    const { js, jsm, kv, names } = rt;
    const stream = (q: Queue) => (q === "req" ? names.streamReq : names.streamResp);
    const prefix = rt.config.prefix.replace(/-/g, "_");
    const cursorBase = (q: Queue) => `${prefix}_mgr_${q}`;
    const read = async <T>(key: string): Promise<Versioned<T> | null> => {
      const e = await kv.ctl.get(key);
      if (!e) return null;
      return { value: e.operation === "PUT" ? e.json<T>() : null, revision: e.revision };
    };

    this.lease = {
      read: () => read<LeaseRecord>("leader"),
      write: (record, revision, timeoutMs) =>
        revision === null ? kv.ctl.create("leader", encode(record)) : kv.ctl.update("leader", encode(record), revision, timeoutMs),
    };

    this.cursors = {
      read: () => read<CursorRecord>("cursor"),
      open: (q, tag, fromSeq) => openCursor(js, jsm, stream(q), cursorBase(q), tag, fromSeq),
      drop: (q, keepTag) => dropCursors(jsm, stream(q), cursorBase(q), keepTag === null ? null : `${cursorBase(q)}_${keepTag}`),
    };

    this.queues = {
      lastSeq: async (q) => (await jsm.streams.info(stream(q))).state.last_seq,
      at: async (q, seq) => {
        const sm = await jsm.streams.getMessage(stream(q), { seq }).catch(() => null);
        return sm ? toEntry(sm) : null;
      },
      next: async (q, seq) => {
        // STREAM.MSG.GET's next_by_subj: nats.js's type names it only for direct gets; the
        // server takes it on both.
        const req = { seq, next_by_subj: q === "req" ? names.reqAll : names.respAll } as unknown as MsgRequest;
        const sm = await jsm.streams.getMessage(stream(q), req).catch(() => null);
        return sm ? toEntry(sm) : null;
      },
      append: async (subject, data, opts) => {
        await publishToQueue(rt.requester, subject, data, opts);
      },
      readSession: async (q, client, session, each) => {
        const subject = q === "req" ? names.req(client, session) : names.respOf(session);
        const info = await jsm.streams.info(stream(q), { subjects_filter: subject });
        // (The response filter is a wildcard: one subject per server that answered.)
        if (Object.keys(info.state.subjects ?? {}).length === 0) return 0;
        const name = `replay_${newId(6)}`;
        await jsm.consumers.add(stream(q), { name, ack_policy: AckPolicy.None, filter_subject: subject, deliver_policy: DeliverPolicy.All, inactive_threshold: 30_000_000_000 });
        const c = await js.consumers.get(stream(q), name);
        let read = 0;
        try {
          for (;;) {
            // At least two of the largest message NATS carries: a fetch whose first message
            // does not fit returns none, and the replay would stop there.
            const batch = await c.fetch({ max_bytes: Math.max(PULL_MAX_BYTES, 2 * (rt.nc.info?.max_payload ?? 0)), expires: 1000 });
            let got = 0;
            let last = -1;
            for await (const msg of batch) {
              got++;
              last = msg.info.pending;
              each(msg);
              read++;
              if (msg.info.pending === 0) break;
            }
            if (got === 0 || last === 0) break;
          }
        } finally {
          await c.delete().catch(() => {});
        }
        return read;
      },
      // Purge by sequence: every message below `fromSeq` (by subject would cost one per session).
      trim: async (q, fromSeq) => void (await jsm.streams.purge(stream(q), { seq: fromSeq })),
      forgetSession: async (client, session) => {
        await Promise.all([jsm.streams.purge(names.streamReq, { filter: names.req(client, session) }), jsm.streams.purge(names.streamResp, { filter: names.respOf(session) })]);
      },
      deadLetters: async () => (await jsm.streams.info(names.streamDlq)).state.messages,
    };

    const bucketStream = (b: "sessions" | "restart") => `KV_${b === "sessions" ? names.bucketSessions : names.bucketRestart}`;
    this.records = {
      fencedWriters: () => ({ sessions: new FencedKv(kv.sessions), ctl: new FencedKv(kv.ctl), restart: new FencedKv(kv.restart) }),
      dispatchSecret: () => loadDispatchSecret(kv.ctl),
      hasSession: async (session) => {
        const e = await kv.sessions.get(session);
        return e && e.operation === "PUT" ? { client: String(e.json<{ client?: unknown }>().client) } : null;
      },
      readAll: async (b) =>
        (await readLastPerSubject(js, jsm, bucketStream(b))).map((m) => ({ key: m.subject.split(".").slice(2).join("."), seq: m.seq, data: m.data })),
      putHedge: async (session, n, record) => void (await kv.sessions.put(`${session}.hedge.${n}`, encode(record))),
      // From the buckets' streams, not with kv.purge: that leaves a marker per key for good
      // (6 MiB after 3,000 closed sessions with none live).
      forgetSession: async (session, what) => {
        const s = names.bucketSessions;
        if (what === "hedges") {
          // `<session>.hedge.<n>`, `<session>.took.<n>.<server>`
          await jsm.streams.purge(`KV_${s}`, { filter: `$KV.${s}.${session}.>` });
          return;
        }
        await Promise.all([
          jsm.streams.purge(`KV_${s}`, { filter: `$KV.${s}.${session}` }),
          jsm.streams.purge(`KV_${names.bucketRestart}`, { filter: `$KV.${names.bucketRestart}.${session}.*` }),
        ]);
      },
    };
  }
}
