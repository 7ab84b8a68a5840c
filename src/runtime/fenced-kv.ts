/**
 * Compare-and-set writes for the manager's records, so a primary that was only paused cannot
 * write over a newer primary's state when it wakes (I5). Each writer remembers the revision it
 * last saw per key; a write whose revision moved on re-reads the key and lets `decide` say
 * whether to overwrite (the stored value is older), skip (it is newer data, not a conflict), or
 * give up because a newer epoch owns the key (Fenced).
 */
import type { KV } from "@nats-io/kv";
import { ErrorCode, TandemError } from "./errors.js";
import { isWrongLastSequence } from "./jetstream.js";
import { decode, encode } from "./wire.js";

export type Decision = "overwrite" | "skip" | "fenced";

export class FencedError extends TandemError {
  constructor(key: string, detail: string) {
    super(ErrorCode.NotLeader, `record ${key} belongs to a newer manager epoch (${detail}); stepping down`, { context: { key } });
  }
}

export class FencedKv {
  private readonly revisions = new Map<string, number>();

  constructor(private readonly kv: KV) {}

  /** Remember a revision read elsewhere (e.g. while rebuilding from the bucket's stream). */
  saw(key: string, revision: number): void {
    this.revisions.set(key, revision);
  }

  forget(key: string): void {
    this.revisions.delete(key);
  }

  /** Create a key that must not exist (a new session). */
  async create(key: string, value: unknown): Promise<void> {
    this.revisions.set(key, await this.kv.create(key, encode(value)));
  }

  async write(key: string, value: unknown, decide: (stored: unknown) => Decision): Promise<"written" | "skipped"> {
    const data = encode(value);
    for (let attempt = 0; attempt < 4; attempt++) {
      let rev = this.revisions.get(key);
      if (rev === undefined) {
        const e = await this.kv.get(key);
        rev = e ? e.revision : 0;
        if (e && e.operation === "PUT") {
          const d = decide(decode(e.value));
          if (d === "fenced") throw new FencedError(key, "seen on read");
          if (d === "skip") {
            this.revisions.set(key, e.revision);
            return "skipped";
          }
        }
      }
      try {
        const next = rev === 0 ? await this.kv.create(key, data) : await this.kv.update(key, data, rev);
        this.revisions.set(key, next);
        return "written";
      } catch (err) {
        if (!isWrongLastSequence(err)) throw err;
        this.revisions.delete(key); // someone else wrote it: read and decide again
      }
    }
    throw new TandemError(ErrorCode.NotLeader, `record ${key} keeps changing under this manager; stepping down`, { context: { key } });
  }
}

/** For records that carry the epoch of the manager that wrote them. */
export function byEpoch(mine: number): (stored: unknown) => Decision {
  return (stored) => {
    const e = (stored as { epoch?: unknown })?.epoch;
    return typeof e === "number" && e > mine ? "fenced" : "overwrite";
  };
}
