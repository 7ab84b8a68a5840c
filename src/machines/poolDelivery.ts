/**
 * The delivery rules of an unordered pool session, pure (docs/design.md §6, pools): responses
 * reach the application as they complete, each once (I2), with no order among them. The same
 * duties as the ordered DeliveryCore (machines/clientDelivery.ts), with sets where it has
 * numbers: accepted, handed and committed are Marks (a floor and the numbers above it).
 *
 * A receipt names the whole handed set, so the manager never has to guess which responses above
 * the floor were taken; its token is the set's count, which grows with every new receipt.
 */
import { Callers, type AcceptOutcome, type HandOver, type HandTo, type ManagerView, type ReceiptBody, type SessionDelivery } from "./clientDelivery.js";
import { Marks, type MarksWire } from "./marks.js";

export class PoolDeliveryCore<D> extends Callers implements SessionDelivery<D> {
  readonly ordered = false;
  lastReq = 0;
  private acceptedSet = new Marks();
  private handedSet = new Marks();
  private readonly takenSet = new Marks();
  /** The token of the newest receipt a publish in flight commits (0: none). */
  private carrying = 0;
  /** Receipts handed out and not yet committed, by token. */
  private readonly receipts = new Map<number, MarksWire>();
  /** Accepted and not handed yet, in arrival order. */
  private readonly held = new Map<number, D>();

  get accepted(): number {
    return this.acceptedSet.floor;
  }
  get handed(): number {
    return this.handedSet.floor;
  }
  get taken(): number {
    return this.takenSet.floor;
  }
  get handedCount(): number {
    return this.handedSet.count;
  }

  /** What is committed, as the wire says it. */
  takenMarks(): MarksWire {
    return this.takenSet.toWire();
  }

  /** Was response n handed to the application (or to nobody, its caller having given up)? */
  wasHanded(n: number): boolean {
    return this.handedSet.has(n);
  }

  sent(n: number, now: number, notBefore?: number): void {
    if (this.handedSet.count >= this.lastReq) this.lastDelivery = now;
    if (notBefore !== undefined && notBefore > this.lastDelivery) this.lastDelivery = notBefore;
    this.lastReq = Math.max(this.lastReq, n);
    this.waiting.add(n);
  }

  private newReceipt(): number {
    const token = this.handedSet.count;
    this.receipts.set(token, this.handedSet.toWire());
    return token;
  }

  carryable(): number {
    const c = this.handedSet.count;
    return c > this.takenSet.count && c > this.carrying ? this.newReceipt() : 0;
  }

  carry(token: number): void {
    if (token > this.carrying) this.carrying = token;
  }

  receipt(token: number): ReceiptBody {
    const w = this.receipts.get(token) ?? this.takenSet.toWire();
    return w.also ? { taken: w.upTo, takenAlso: w.also } : { taken: w.upTo };
  }

  acceptedBody(): ReceiptBody {
    const w = this.acceptedSet.toWire();
    return w.also ? { taken: w.upTo, takenAlso: w.also } : { taken: w.upTo };
  }

  /** Any delivery not accepted yet is accepted, in whatever order they come; a repeat is harmless. */
  accept(n: number, delivery: D, now: number): AcceptOutcome {
    this.lastDelivery = now;
    if (!this.acceptedSet.add(n)) return { accepted: false, duplicate: true };
    this.held.set(n, delivery);
    return { accepted: true };
  }

  private whoTakes(n: number): HandTo | null {
    if (this.abandoned.has(n)) return "nobody";
    if (this.waiting.has(n)) return "waiter";
    if (this.readers > 0) return "reader";
    return null;
  }

  /** Every held response someone can take, in the order they came; the rest wait for a reader. */
  handOvers(): Array<HandOver<D>> {
    const out: Array<HandOver<D>> = [];
    for (const [n, delivery] of this.held) {
      const to = this.whoTakes(n);
      if (to === null) continue;
      this.held.delete(n);
      this.handedSet.add(n);
      if (to === "nobody") this.abandoned.delete(n);
      else if (to === "waiter") this.waiting.delete(n);
      else this.readers--;
      out.push({ n, delivery, to });
    }
    return out;
  }

  handable(): boolean {
    for (const n of this.held.keys()) if (this.whoTakes(n) !== null) return true;
    return false;
  }

  receiptDue(): number | null {
    const c = this.handedSet.count;
    if (c <= this.takenSet.count || c <= this.carrying) return null;
    this.carrying = c;
    return this.newReceipt();
  }

  receiptFailed(): void {
    this.carrying = this.takenSet.count;
  }

  committed(token: number): boolean {
    const w = this.receipts.get(token);
    if (!w) return false;
    for (const t of this.receipts.keys()) if (t <= token) this.receipts.delete(t);
    return this.takenSet.merge(w);
  }

  /** As DeliveryCore.resumed, with the manager's committed set in place of its watermark. */
  resumed(manager: ManagerView): void {
    const live = this.handedSet.count > 0 || this.lastReq > 0;
    const theirs: MarksWire = { upTo: manager.taken, ...(manager.takenAlso?.length ? { also: manager.takenAlso } : {}) };
    this.lastReq = Math.max(this.lastReq, manager.lastReq);
    this.takenSet.merge(theirs);
    if (live) this.handedSet.merge(theirs);
    else this.handedSet = Marks.of(theirs);
    this.carrying = Math.max(this.carrying, this.takenSet.count);
    this.acceptedSet = this.handedSet.copy();
    this.held.clear();
  }

  unclaimed(): number {
    let c = 0;
    for (let n = this.handedSet.floor + 1; n <= this.lastReq; n++) if (!this.handedSet.has(n) && !this.waiting.has(n)) c++;
    return c;
  }

  outstanding(): number {
    let c = 0;
    for (const n of this.waiting) if (!this.handedSet.has(n)) c++;
    return c + (this.unclaimed() > 0 ? this.readers : 0);
  }
}
