/**
 * A client session's delivery rules, pure (docs/design.md §5, I2 and I3): which responses the
 * session holds, which go to whom and when, which receipt to commit, and how a resume resets the
 * watermarks. The actor (actors/client.ts) feeds it what happens, carries out what it decides
 * (resolve a waiting request, feed `responses()`, publish a TAKEN receipt) and gives it the
 * time; this file has no I/O, no clock and no timers, so every path is tested without NATS.
 *
 * Watermarks, each a request number of the session:
 *   taken <= carrying, taken <= handed <= accepted <= lastReq (once deliveries arrive in order)
 * - lastReq:  the last request number taken by a send (or known from a resume)
 * - accepted: the last delivery accepted (deliveries arrive in order; a repeat is ignored)
 * - handed:   the last response handed to the application (or taken for a caller who gave up)
 * - carrying: the highest receipt a publish in flight (a request, or a TAKEN record) commits
 * - taken:    the last receipt committed (durable in the request queue)
 */

import type { MarksWire } from "./marks.js";

/** Where a response goes: its waiting request, a `responses()` reader, or nobody (its caller gave up). */
export type HandTo = "waiter" | "reader" | "nobody";

export interface HandOver<D> {
  n: number;
  delivery: D;
  to: HandTo;
}

export type AcceptOutcome = { accepted: true } | { accepted: false; duplicate: true } | { accepted: false; duplicate: false; expected: number };

/** A receipt as it travels on a request or a TAKEN record (`takenAlso`: pools only). */
export interface ReceiptBody {
  taken: number;
  takenAlso?: number[];
}

/** What the manager says of a session on resume. */
export interface ManagerView {
  lastReq: number;
  taken: number;
  takenAlso?: number[];
}

/**
 * The delivery rules of a session as the actor uses them: in order (DeliveryCore) or as they
 * complete (PoolDeliveryCore, machines/poolDelivery.ts). A receipt is named by a token, a number
 * that grows with every new receipt; `receipt(token)` is what it says on the wire.
 */
export interface SessionDelivery<D> {
  readonly ordered: boolean;
  lastReq: number;
  lastDelivery: number;
  /** Floors: every n up to these is accepted, handed, committed (a pool may have more above). */
  readonly accepted: number;
  readonly handed: number;
  readonly taken: number;
  /** How many responses were handed (for `pending`). */
  readonly handedCount: number;
  sent(n: number, now: number, notBefore?: number): void;
  carryable(): number;
  carry(token: number): void;
  receipt(token: number): ReceiptBody;
  accept(n: number, delivery: D, now: number): AcceptOutcome;
  wantRead(): void;
  abandon(n: number): boolean;
  answeredElsewhere(n: number): boolean;
  isWaiting(n: number): boolean;
  handOvers(): Array<HandOver<D>>;
  handable(): boolean;
  receiptDue(): number | null;
  receiptFailed(): void;
  committed(token: number): boolean;
  resumed(manager: ManagerView): void;
  unclaimed(): number;
  outstanding(): number;
  stalled(now: number, stallMs: number): boolean;
  finish(): void;
  /** What the session accepted, for a manager's restart (its deliveries restart from there). */
  acceptedBody(): ReceiptBody;
  /** What is committed: the watermark, and a pool's numbers above it. */
  takenMarks(): MarksWire;
}

/**
 * Who waits for a session's responses, in either kind of session: the requests of this process,
 * callers that gave up, `responses()` readers; and the stall rule over them.
 */
export abstract class Callers {
  /** When the manager last delivered, or the session last started waiting (for the stall rule). */
  lastDelivery: number;
  /** Requests of this process waiting for their response. */
  protected readonly waiting = new Set<number>();
  /** Requests whose caller gave up and was answered locally: taken when delivered, handed to nobody. */
  protected readonly abandoned = new Set<number>();
  /** `responses()` reads waiting for a response no request of this process waits for. */
  protected readers = 0;

  constructor(now: number) {
    this.lastDelivery = now;
  }

  /** Responses someone is waiting for (a request of this process, or a reader of earlier ones). */
  abstract outstanding(): number;

  /** A `responses()` read is waiting. */
  wantRead(): void {
    this.readers++;
  }

  /** The caller of request n gave up and was told so: its delivery, when it comes, is taken for nobody. */
  abandon(n: number): boolean {
    if (!this.waiting.delete(n)) return false;
    this.abandoned.add(n);
    return true;
  }

  /** Request n was answered without a delivery (the manager refused it): nobody waits any more. */
  answeredElsewhere(n: number): boolean {
    return this.waiting.delete(n);
  }

  isWaiting(n: number): boolean {
    return this.waiting.has(n);
  }

  /**
   * The stall rule: something is awaited and nothing was delivered for `stallMs`. The actor then
   * re-syncs with the manager (a safety net: never expected; logged when it happens).
   */
  stalled(now: number, stallMs: number): boolean {
    return this.outstanding() > 0 && now - this.lastDelivery >= stallMs;
  }

  /** The session is finished in this process: nobody waits or reads any more. */
  finish(): void {
    this.waiting.clear();
    this.abandoned.clear();
    this.readers = 0;
  }
}

export class DeliveryCore<D> extends Callers implements SessionDelivery<D> {
  readonly ordered = true;
  lastReq = 0;
  accepted = 0;
  handed = 0;
  carrying = 0;
  taken = 0;
  private readonly held = new Map<number, D>();

  /** A request of this process took number n; its caller waits for the response (from `notBefore`, when delayed). */
  sent(n: number, now: number, notBefore?: number): void {
    // The stall rule measures silence while waiting: an idle session starts waiting now, and a
    // delayed request's wait starts when its time comes.
    if (this.lastReq === this.handed) this.lastDelivery = now;
    if (notBefore !== undefined && notBefore > this.lastDelivery) this.lastDelivery = notBefore;
    this.lastReq = Math.max(this.lastReq, n);
    this.waiting.add(n);
  }

  get handedCount(): number {
    return this.handed;
  }

  /** In order, a receipt's token is its watermark. */
  receipt(token: number): ReceiptBody {
    return { taken: token };
  }

  acceptedBody(): ReceiptBody {
    return { taken: this.accepted };
  }

  takenMarks(): MarksWire {
    return { upTo: this.taken };
  }

  /** The receipt a request about to be sent could carry (0: none); `carry` marks it carried. */
  carryable(): number {
    return this.handed > this.taken && this.handed > this.carrying ? this.handed : 0;
  }

  /** A request is on its way with receipt `upTo` (from carryable()). */
  carry(upTo: number): void {
    if (upTo > this.carrying) this.carrying = upTo;
  }

  /** A delivery from the manager. Only the next one in order is accepted; a repeat is harmless. */
  accept(n: number, delivery: D, now: number): AcceptOutcome {
    this.lastDelivery = now;
    if (n <= this.accepted) return { accepted: false, duplicate: true };
    if (n !== this.accepted + 1) return { accepted: false, duplicate: false, expected: this.accepted + 1 };
    this.accepted = n;
    this.held.set(n, delivery);
    return { accepted: true };
  }

  /**
   * The responses to hand over now, in order, up to the first one nobody can take yet (I3: a
   * later response never overtakes an earlier one). `handed` moves past each.
   */
  handOvers(): Array<HandOver<D>> {
    const out: Array<HandOver<D>> = [];
    for (let n = this.handed + 1; this.held.has(n); n++) {
      let to: HandTo;
      if (this.abandoned.has(n)) to = "nobody";
      else if (this.waiting.has(n)) to = "waiter";
      else if (this.readers > 0) to = "reader";
      else break;
      const delivery = this.held.get(n)!;
      this.held.delete(n);
      this.handed = n;
      if (to === "nobody") this.abandoned.delete(n);
      else if (to === "waiter") this.waiting.delete(n);
      else this.readers--;
      out.push({ n, delivery, to });
    }
    return out;
  }

  /** Is the next response here with someone to take it? (Then handOvers() has work.) */
  handable(): boolean {
    const n = this.handed + 1;
    return this.held.has(n) && (this.waiting.has(n) || this.abandoned.has(n) || this.readers > 0);
  }

  /**
   * The receipt to commit on its own now (a TAKEN record), or null: nothing handed beyond what
   * is committed or being carried by a publish in flight.
   */
  receiptDue(): number | null {
    if (this.handed <= this.taken || this.handed <= this.carrying) return null;
    this.carrying = this.handed;
    return this.handed;
  }

  /** A receipt publish failed for good (the connection is closed): it is not being carried. */
  receiptFailed(): void {
    this.carrying = this.taken;
  }

  /** Receipts up to `upTo` are durable; true when that moved the committed watermark. */
  committed(upTo: number): boolean {
    if (upTo <= this.taken) return false;
    this.taken = upTo;
    return true;
  }

  /**
   * The manager's view after a resume: its lastReq and committed receipts. A live session (it has
   * sent or handed something) keeps what it handed: the manager delivers again from its
   * committed watermark and what was handed already is dropped as a repeat (I2). A session new
   * in this process starts from the committed watermark: responses handed to an earlier process
   * but not committed are handed again.
   */
  resumed(manager: ManagerView): void {
    const live = this.handed > 0 || this.lastReq > 0;
    this.lastReq = Math.max(this.lastReq, manager.lastReq);
    this.taken = Math.max(this.taken, manager.taken);
    this.handed = live ? Math.max(this.handed, manager.taken) : manager.taken;
    this.carrying = Math.max(this.carrying, manager.taken);
    this.accepted = this.handed;
    this.held.clear();
  }

  /** Requests without a response taken that no request of this process waits for (an earlier process's). */
  unclaimed(): number {
    let c = 0;
    for (let n = this.handed + 1; n <= this.lastReq; n++) if (!this.waiting.has(n)) c++;
    return c;
  }

  /** Responses someone is waiting for (a request of this process, or a reader of earlier ones). */
  outstanding(): number {
    let c = 0;
    for (const n of this.waiting) if (n > this.handed) c++;
    return c + (this.unclaimed() > 0 ? this.readers : 0);
  }
}
