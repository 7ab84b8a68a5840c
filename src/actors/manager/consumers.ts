/**
 * A term's cursors on the two queue streams (docs/design.md §3): ack-none consumers that
 * deliver every entry to the intake, in stream order. A jump past a sequence is checked against
 * the stream (heal), never taken on trust; a consumer that ends or stops moving while its queue
 * moves is resumed from the table's own cursors, which the core owns.
 */
import type { Consumer, ConsumerMessages, JsMsg } from "@nats-io/jetstream";
import { pollUntil } from "../../runtime/backoff.js";
import { ErrorCode, TandemError } from "../../runtime/errors.js";
import { now, pullMessages, type PrimaryTerm, type TermConsumers } from "./term.js";

type Which = "req" | "resp";

export class QueueConsumers implements TermConsumers {
  private messages: ConsumerMessages[] = [];
  /** Current consumer generation per stream: an older loop that ends is not a fencing. */
  private gen = { req: 0, resp: 0 };
  private refs: { req: Consumer | null; resp: Consumer | null } = { req: null, resp: null };
  /** Messages the current consumer of each stream delivered and the table applied. */
  private applied = { req: 0, resp: 0 };
  private healing: Record<Which, Promise<void>> = { req: Promise.resolve(), resp: Promise.resolve() };
  private healWarnedAt = -Infinity;
  private resuming = false;
  /** Cursor consumers opened by resumes in this term (part of their names). */
  private cursorGen = 0;
  /** Queue entries a cursor skipped and heal applied (status, tests). */
  readonly healed = { req: 0, resp: 0 };
  /** Pulls nats-server refused (409: message size exceeds max bytes, limits exceeded). */
  readonly refusedPulls = { req: 0, resp: 0 };
  private refusedWarnedAt = -Infinity;

  constructor(private readonly term: PrimaryTerm) {}

  /**
   * Take the queues over at the start of the term: delete the predecessor's cursors (its pulls
   * fail: I5), open ours from the cut's sequences, and consume.
   */
  async takeOver(reqFrom: number, respFrom: number, js: <T>(what: string, fn: () => Promise<T>) => Promise<T>): Promise<void> {
    const { store, epoch, ctx } = this.term;
    const { cursors } = store;
    await Promise.all([cursors.drop("req", null), cursors.drop("resp", null)]);
    // A new name per attempt: a cursor whose creation timed out may have been placed on a
    // server that just died, and asking again for the same name waits on it (seen: a minute).
    let attempt = 0;
    const req = await js("open the request cursor", () => cursors.open("req", `e${epoch}_${ctx.node}_r${attempt++}`, reqFrom));
    const resp = await js("open the response cursor", () => cursors.open("resp", `e${epoch}_${ctx.node}_r${attempt++}`, respFrom));
    await this.consume(req, "req", reqFrom);
    await this.consume(resp, "resp", respFrom);
  }

  /** The consumer of a stream (metrics read its lag). */
  consumer(which: Which): Consumer | null {
    return this.refs[which];
  }

  private async consume(consumer: Consumer, which: Which, fromSeq: number): Promise<void> {
    const term = this.term;
    const gen = ++this.gen[which];
    this.applied[which] = 0;
    // The last stream sequence this cursor delivered: a jump past the next one is checked
    // against the stream (heal), never taken on trust.
    let last = fromSeq - 1;
    const current = () => term.acting && this.gen[which] === gen;
    // Callback mode: each message is applied in the subscription's own callback, with no
    // async iterator between the socket and the table (one queue hop less per message).
    const messages = await consumer.consume({
      // Bounded by what the largest messages would weigh: 512 requests of 200 kB once sat in
      // the pull buffer at once (100 MB), which a manager under a small heap could not hold
      // while it replayed them. In messages, not bytes: see pullMessages.
      max_messages: pullMessages(term.rt.nc.info?.max_payload),
      expires: 2000,
      abort_on_missing_resource: true,
      callback: (m) => {
        if (!current()) return;
        if (m.seq > last + 1) this.heal(which, last + 1, m.seq - 1);
        if (m.seq > last) last = m.seq;
        try {
          if (which === "req") term.intake.onRequestMsg(m);
          else term.intake.onResponseMsg(m);
        } catch (err) {
          term.log.error({ err, subject: m.subject, seq: m.seq }, "failed to apply a queue message");
        }
        this.applied[which]++;
        // A seq with nothing for us (deleted session) still moves the cursor.
        term.core.passed(which, m.seq);
      },
    });
    this.refs[which] = consumer;
    this.messages.push(messages);
    // A refused pull leaves the cursor idle until consume() pulls again (two missed heartbeats):
    // counted and said, as none should happen with pulls by count (pullMessages).
    void (async () => {
      for await (const s of messages.status()) {
        if (s.type !== "exceeded_limits" || !current()) continue;
        this.refusedPulls[which]++;
        if (now() - this.refusedWarnedAt > 10_000) {
          this.refusedWarnedAt = now();
          term.log.warn({ queue: which, code: s.code, description: s.description }, "nats-server refused a pull of the queue cursor; it pulls again after two missed heartbeats (further ones in the next 10 s are not logged)");
        }
      }
    })().catch(() => {});
    void messages.closed().then((err) => {
      if (!current()) return;
      if (err) term.log.warn({ err, which }, "consumer ended");
      // Our consumer was deleted (a newer primary took it over) or ended: we must stop acting.
      term.ctx.fenced(term, `${which} consumer lost`);
    });
  }

  /**
   * A cursor jumped from one stream sequence past the next (issue 14): purged sessions leave
   * such holes, and so did a nats-server bug that moved every consumer past a filtered purge,
   * silently skipping other sessions' entries. Read the stream for what is there in the hole and
   * apply it (every queue event is idempotent, so applying one late or twice is safe), one hole
   * after another per stream, off the delivery path.
   */
  private heal(which: Which, from: number, to: number): void {
    const term = this.term;
    const { queues } = term.store;
    this.healing[which] = this.healing[which].then(async () => {
      const missed: JsMsg[] = [];
      for (let seq = from; seq <= to && term.acting; ) {
        const sm = await queues.next(which, seq);
        if (!sm || sm.seq > to) break;
        // The intake reads of a message what a stored entry has.
        missed.push(sm as unknown as JsMsg);
        seq = sm.seq + 1;
      }
      if (missed.length === 0 || !term.acting) return;
      if (now() - this.healWarnedAt > 10_000) {
        this.healWarnedAt = now();
        term.log.warn({ queue: which, from, to, missed: missed.length }, "the cursor skipped queue entries that are still there; applied them (further ones in the next 10 s are not logged)");
      }
      this.healed[which] += missed.length;
      for (const m of missed) {
        if (which === "req") term.intake.onRequestMsg(m);
        else term.intake.onResponseMsg(m);
      }
    });
  }

  /**
   * Wait until the table has applied the queues up to these stream sequences. A sequence may
   * belong to a message since purged (a closed session), which no consumer will deliver: a
   * consumer with nothing pending, whose last delivery we applied, is caught up as well.
   */
  async caughtUpTo(req: number, resp: number, timeoutMs: number): Promise<void> {
    const core = this.term.core;
    const deadline = now() + timeoutMs;
    const done = async (which: Which, target: number): Promise<boolean> => {
      if ((which === "req" ? core.reqSeq : core.respSeq) >= target) return true;
      const c = this.refs[which];
      if (!c) return false;
      const info = await c.info().catch(() => null);
      // Caught up: nothing left to deliver, and we applied every message it delivered.
      if (!info || info.num_pending !== 0 || info.delivered.consumer_seq > this.applied[which]) return false;
      // Nothing left to deliver below the target: only purged sequences remain.
      core.passed(which, target);
      return true;
    };
    await pollUntil(async () => (await done("req", req)) && (await done("resp", resp)), "the table to catch up with the queues", Math.max(0, deadline - now()), 10).catch((err: unknown) => {
      throw new TandemError(ErrorCode.Unavailable, `manager did not catch up with the queues in ${timeoutMs} ms`, { cause: err });
    });
  }

  /**
   * Start consuming again from what the table has applied (after a reconnect, or when the
   * queues move and our consumer does not). Safe: consumers are ack-none and every queue
   * event is applied idempotently, so re-reading from our own cursor loses and doubles nothing.
   */
  async resume(why: string): Promise<void> {
    const term = this.term;
    const { core, store } = term;
    if (!term.acting || this.resuming) return;
    this.resuming = true;
    try {
      // Never take the consumers back from a newer primary.
      if (!(await term.ctx.verifyLease(term))) return;
      this.gen.req++;
      this.gen.resp++;
      const old = this.messages;
      this.messages = [];
      for (const c of old) await c.close().catch(() => {});
      // New cursors under new names: opening them never waits on the old ones, which may sit on
      // a nats-server that just died. The old ones are ours; drop them in the background.
      const tag = `e${term.epoch}_${term.ctx.node}_${++this.cursorGen}`;
      const req = await store.cursors.open("req", tag, core.reqSeq + 1);
      const resp = await store.cursors.open("resp", tag, core.respSeq + 1);
      if (!term.acting) return;
      await this.consume(req, "req", core.reqSeq + 1);
      await this.consume(resp, "resp", core.respSeq + 1);
      void store.cursors.drop("req", tag);
      void store.cursors.drop("resp", tag);
      term.log.info({ why, reqFrom: core.reqSeq + 1, respFrom: core.respSeq + 1 }, "consumers resumed from the table's cursors");
    } catch (err) {
      term.log.warn({ err: { message: (err as Error).message }, why }, "could not resume the consumers yet (JetStream electing a leader?); retrying");
      // Elections take seconds: try again soon rather than after the next progress check.
      term.timers.push(setTimeout(() => void this.resume(why), 500));
    } finally {
      this.resuming = false;
    }
  }

  async close(): Promise<void> {
    for (const c of this.messages) await c.close().catch(() => {});
    this.messages = [];
    this.refs = { req: null, resp: null };
  }
}
