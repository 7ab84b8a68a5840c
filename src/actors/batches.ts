/**
 * Batches on the hot path (docs/design.md §6): what is ready at once for one session travels as
 * one message, bounded in count and bytes, and nothing waits when there is only one.
 */
import { MAX_BATCH } from "./schemas.js";

/** Bytes one batch carries at most: 256 kB, or half of what the NATS server takes (one larger item goes alone). */
export function batchBytes(maxPayload: number | undefined): number {
  return Math.min(256 * 1024, Math.floor((maxPayload ?? 1024 * 1024) / 2));
}

/** Items cut into batches of at most MAX_BATCH and about `maxBytes`, in order. */
export function chunks<T>(items: T[], bytes: (t: T) => number, maxBytes: number): T[][] {
  const out: T[][] = [];
  let chunk: T[] = [];
  let sum = 0;
  for (const it of items) {
    const b = bytes(it);
    if (chunk.length > 0 && (chunk.length >= MAX_BATCH || sum + b > maxBytes)) {
      out.push(chunk);
      chunk = [];
      sum = 0;
    }
    chunk.push(it);
    sum += b;
  }
  if (chunk.length) out.push(chunk);
  return out;
}

/**
 * Publishes coalesced per turn of the event loop, by session (`key`). A push that is `alone` (its
 * session has nothing else in flight: one request at a time) and the first of its session in the
 * turn goes out at once, so it pays no wait. Any other is held until the turn ends (a window
 * refilled by a batch of deliveries, a batch of work finished together: its neighbours come in
 * the same turn) and goes in a batch. Each push settles when the message carrying it was
 * acknowledged, or fails with its error. What it holds is at most one turn's pushes.
 */
export class TurnBatcher<T> {
  private scheduled = false;
  private readonly open = new Set<string>();
  private held = new Map<string, Array<{ item: T; resolve: () => void; reject: (err: unknown) => void }>>();

  constructor(
    private readonly sendOne: (item: T) => Promise<void>,
    private readonly sendMany: (items: T[]) => Promise<void>,
    private readonly bytes: (item: T) => number,
    private readonly maxBytes: () => number,
    private readonly key: (item: T) => string = () => "",
  ) {}

  push(item: T, alone = true): Promise<void> {
    const k = this.key(item);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
    if (!this.open.has(k)) {
      this.open.add(k);
      if (alone) return this.sendOne(item);
    }
    return new Promise<void>((resolve, reject) => {
      const list = this.held.get(k);
      if (list) list.push({ item, resolve, reject });
      else this.held.set(k, [{ item, resolve, reject }]);
    });
  }

  private flush(): void {
    this.scheduled = false;
    this.open.clear();
    if (this.held.size === 0) return;
    const held = this.held;
    this.held = new Map();
    for (const list of held.values()) {
      for (const chunk of chunks(list, (h) => this.bytes(h.item), this.maxBytes())) {
        const sent = chunk.length === 1 ? this.sendOne(chunk[0]!.item) : this.sendMany(chunk.map((h) => h.item));
        sent.then(
          () => chunk.forEach((h) => h.resolve()),
          (err: unknown) => chunk.forEach((h) => h.reject(err)),
        );
      }
    }
  }
}

const BATCH_OPEN = new TextEncoder().encode('{"batch":[');
const COMMA = new TextEncoder().encode(",");
const BATCH_CLOSE = new TextEncoder().encode("]}");

/** `{"batch":[...]}` of encoded JSON bodies, without decoding them again. */
export function batchRecord(bodies: Uint8Array[]): Uint8Array {
  const parts: Uint8Array[] = [BATCH_OPEN];
  bodies.forEach((b, i) => (i ? parts.push(COMMA, b) : parts.push(b)));
  parts.push(BATCH_CLOSE);
  return Buffer.concat(parts);
}
