/**
 * Fenced commit on JetStream KV (the embedded default, no database needed).
 *
 * The fence is a key `<session>.<request>` in `tandem_fence`, created by the duplicate that may
 * commit (create fails for everyone else). The holder records its result in the fence, then
 * writes ONE data key: a compare-and-set on the revision the handler read, published with the
 * request's id as Nats-Msg-Id, and marks the fence done. If the holder dies between its write
 * and "done", whoever takes the stale claim over writes with the same message id: JetStream
 * drops it as a duplicate (de-duplication is checked before the expected revision), so the
 * update is applied once. The written value also keeps the last RECENT requests' results, so
 * the one that takes over answers with the applied result.
 *
 * Limits, stated: an update may set one key (two keys are two writes and not atomic in KV; use
 * the PostgreSQL store for those, or keep related data in one key). Keys it only reads are not
 * checked at commit. A claim whose holder died is taken over after `claimTimeoutMs` with no
 * change to it, which must be well inside the data bucket's duplicate window (10 minutes).
 */
import type { KV, KvEntry } from "@nats-io/kv";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamClient } from "@nats-io/jetstream";
import { ErrorCode, TandemError } from "../errors.js";
import { isWrongLastSequence } from "../jetstream.js";
import { fenceKey, type FenceId, type FenceOutcome, type FencedStore } from "./store.js";
import { decode, encode } from "../wire.js";

export const RECENT = 64;

/** What a data key holds: the value and the requests that last changed it. */
interface Envelope {
  v: unknown;
  recent: Array<{ id: string; result: unknown; by: string }>;
}

type FenceRecord =
  | { state: "claimed"; server: string; at: number }
  | { state: "applying"; server: string; result: unknown; at: number }
  | { state: "done"; server: string; result: unknown; at: number };

/** The de-duplication window the data bucket needs: longer than any claim takeover. */
export const DATA_DUPLICATE_WINDOW_MS = 10 * 60_000;

/**
 * Create a store's data bucket, or fix its de-duplication window (the re-application guard):
 * what only a user allowed to create streams may do.
 */
export async function ensureStoreBucket(nc: NatsConnection, bucket: string, replicas: number): Promise<KV> {
  const kvm = new Kvm(nc);
  let data: KV;
  try {
    data = await kvm.create(bucket, { history: 1, replicas, allow_direct: false });
  } catch {
    data = await kvm.open(bucket, { allow_direct: false });
  }
  const jsm = await jetstreamManager(nc);
  const stream = `KV_${bucket}`;
  const info = await jsm.streams.info(stream);
  const want = DATA_DUPLICATE_WINDOW_MS * 1_000_000;
  if ((info.config.duplicate_window ?? 0) < want) await jsm.streams.update(stream, { ...info.config, duplicate_window: want });
  return data;
}

/** What an update handler gets from the KV store. */
export interface KvTx {
  /** The key's current value (undefined when absent). */
  get<T = unknown>(key: string): Promise<T | undefined>;
  /** The new value of the one key this update changes. */
  set(key: string, value: unknown): void;
}

export interface KvStoreOptions {
  /** Bucket of the data keys; created when missing. */
  bucket: string;
  /** Bucket of the fence records (the deployment's `tandem_fence`). */
  fence: KV;
  /** A claim unchanged this long is taken over (its holder is presumed dead). */
  claimTimeoutMs?: number;
  replicas?: number;
}

/** Someone took our claim over (we were too slow): start again and learn its outcome. */
class ClaimLost extends Error {}

/** The update already reached the key (a previous holder of the claim wrote it). */
class AlreadyApplied {
  constructor(
    readonly result: unknown,
    readonly by: string,
  ) {}
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function envelope(e: KvEntry | null): { env: Envelope | null; rev: number } {
  if (!e || e.operation !== "PUT") return { env: null, rev: e ? e.revision : 0 };
  return { env: decode(e.value) as Envelope, rev: e.revision };
}

export class KvStore implements FencedStore<KvTx> {
  readonly kind = "kv";
  private readonly claimTimeoutMs: number;

  private constructor(
    readonly data: KV,
    private readonly fence: KV,
    private readonly js: JetStreamClient,
    private readonly opts: KvStoreOptions,
  ) {
    this.claimTimeoutMs = opts.claimTimeoutMs ?? 10_000;
  }

  /**
   * Bind to the data bucket. A user allowed to create streams (unsecured, the manager, an admin)
   * provisions it when missing; a server of a secured deployment may only bind to it: the
   * manager provisions the deployment's ledger bucket at start (runtime.ts).
   */
  static async open(nc: NatsConnection, opts: KvStoreOptions): Promise<KvStore> {
    let data: KV;
    try {
      data = await new Kvm(nc).open(opts.bucket, { allow_direct: false, bindOnly: true });
      const info = await (await jetstreamManager(nc)).streams.info(`KV_${opts.bucket}`);
      if ((info.config.duplicate_window ?? 0) < DATA_DUPLICATE_WINDOW_MS * 1_000_000) data = await ensureStoreBucket(nc, opts.bucket, opts.replicas ?? 1);
    } catch (err) {
      try {
        data = await ensureStoreBucket(nc, opts.bucket, opts.replicas ?? 1);
      } catch (e) {
        throw new TandemError(ErrorCode.Store, `KV store bucket ${opts.bucket} is not provisioned and this user may not create it: start a manager first (it provisions ${opts.bucket}), or run once as the admin user`, { cause: e, context: { bucket: opts.bucket, first: String(err) } });
      }
    }
    return new KvStore(data, opts.fence, jetstream(nc), opts);
  }

  /** Read a data key's value (outside any update). */
  async read<T = unknown>(key: string): Promise<T | undefined> {
    const { env } = envelope(await this.data.get(key));
    return env ? (env.v as T) : undefined;
  }

  /** Set a data key directly (seeding; not fenced). */
  async seed(key: string, value: unknown): Promise<void> {
    await this.data.put(key, encode({ v: value, recent: [] } satisfies Envelope));
  }

  async commit<R>(f: FenceId, signal: AbortSignal, fn: (tx: KvTx) => Promise<R>): Promise<FenceOutcome<R>> {
    const key = fenceKey(f);
    for (;;) {
      const claim = await this.claim(key, f.server, signal);
      if ("done" in claim) return { won: false, result: claim.done.result as R, by: claim.done.server };
      const held = { rev: claim.rev };
      let outcome: FenceOutcome<R>;
      try {
        outcome = await this.apply(key, f.server, signal, fn, held, claim.prior);
      } catch (err) {
        if (err instanceof ClaimLost) continue; // taken over while we were slow: learn its outcome
        // Not applied: free the claim so another duplicate need not wait for it to go stale.
        await this.fence.delete(key, { previousSeq: held.rev }).catch(() => {});
        throw err;
      }
      // Done. If someone took the claim over meanwhile, its write was a duplicate of ours.
      const done: FenceRecord = { state: "done", server: outcome.by, result: outcome.result, at: Date.now() };
      await this.fence.update(key, encode(done), held.rev).catch(() => {});
      return outcome;
    }
  }

  async close(): Promise<void> {}

  /**
   * Take the claim, or learn the outcome of whoever holds it. Taking over a stale claim that
   * was applying keeps its recorded result (`prior`): if its write went through, ours is
   * dropped as a duplicate and that is the applied result.
   */
  private async claim(
    key: string,
    server: string,
    signal: AbortSignal,
  ): Promise<{ rev: number; prior?: { server: string; result: unknown } } | { done: { server: string; result: unknown } }> {
    const mine = (): Uint8Array => encode({ state: "claimed", server, at: Date.now() } satisfies FenceRecord);
    let seenRev = -1;
    let seenAt = 0;
    for (let wait = 10; ; wait = Math.min(wait * 2, 100)) {
      if (signal.aborted) throw signal.reason;
      try {
        return { rev: await this.fence.create(key, mine()) };
      } catch (err) {
        if (!isWrongLastSequence(err)) throw err;
      }
      const e = await this.fence.get(key);
      if (!e || e.operation !== "PUT") continue; // released meanwhile: try to create again
      const rec = decode(e.value) as FenceRecord;
      if (rec.state === "done") return { done: { server: rec.server, result: rec.result } };
      // Claimed by another duplicate: wait for it, unless it has stopped moving.
      if (e.revision !== seenRev) {
        seenRev = e.revision;
        seenAt = Date.now();
      } else if (Date.now() - seenAt > this.claimTimeoutMs) {
        try {
          const rev = await this.fence.update(key, mine(), e.revision);
          return rec.state === "applying" ? { rev, prior: { server: rec.server, result: rec.result } } : { rev };
        } catch (err) {
          if (!isWrongLastSequence(err)) throw err;
        }
      }
      await sleep(wait);
    }
  }

  /** Run fn and compare-and-set its one key; re-run on conflict. */
  private async apply<R>(
    id: string,
    server: string,
    signal: AbortSignal,
    fn: (tx: KvTx) => Promise<R>,
    held: { rev: number },
    prior?: { server: string; result: unknown },
  ): Promise<FenceOutcome<R>> {
    for (let attempt = 0; ; attempt++) {
      if (signal.aborted) throw signal.reason;
      const reads = new Map<string, { env: Envelope | null; rev: number }>();
      let write: { key: string; value: unknown } | null = null;
      const read = async (k: string) => {
        let r = reads.get(k);
        if (!r) {
          r = envelope(await this.data.get(k));
          reads.set(k, r);
          const done = r.env?.recent.find((x) => x.id === id);
          if (done) throw new AlreadyApplied(done.result, done.by);
        }
        return r;
      };
      const tx: KvTx = {
        get: async <T>(k: string) => (await read(k)).env?.v as T | undefined,
        set: (k, value) => {
          if (write && write.key !== k) {
            throw new TandemError(ErrorCode.FenceMultiKey, `a KV update may set one key; it set "${write.key}" and "${k}". Keep related data in one key or use the PostgreSQL store`, {
              context: { keys: [write.key, k] },
            });
          }
          write = { key: k, value };
        },
      };
      let result: R;
      try {
        result = await fn(tx);
        const w = write as { key: string; value: unknown } | null;
        if (!w) return { won: true, result, by: server }; // nothing to change
        const { env, rev } = await read(w.key);
        if (signal.aborted) throw signal.reason;
        const next: Envelope = { v: w.value, recent: [...(env?.recent ?? []).slice(-(RECENT - 1)), { id, result, by: server }] };
        // The result goes to the fence first, so whoever takes over can answer with it.
        try {
          held.rev = await this.fence.update(id, encode({ state: "applying", server, result, at: Date.now() } satisfies FenceRecord), held.rev);
        } catch (err) {
          if (isWrongLastSequence(err)) throw new ClaimLost();
          throw err;
        }
        const ack = await this.js.publish(`$KV.${this.opts.bucket}.${w.key}`, encode(next), { msgID: id, expect: { lastSubjectSequence: rev } });
        if (ack.duplicate) {
          // A holder before us wrote this request's update (and died before "done").
          const mark = envelope(await this.data.get(w.key)).env?.recent.find((x) => x.id === id);
          if (mark) return { won: mark.by === server, result: mark.result as R, by: mark.by };
          if (prior) return { won: false, result: prior.result as R, by: prior.server };
          return { won: true, result, by: server };
        }
        return { won: true, result, by: server };
      } catch (err) {
        if (err instanceof AlreadyApplied) return { won: err.by === server, result: err.result as R, by: err.by };
        if (!isWrongLastSequence(err)) throw err;
        // Another update changed the key between our read and write: read and run again.
        if (attempt > 0 && attempt % 50 === 0) await sleep(5);
      }
    }
  }
}
