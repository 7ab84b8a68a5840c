/**
 * What the queues say, applied to the table: each entry of the request and response streams is
 * parsed (bad input to the dead-letter stream, with its bytes), turned into a core event on the
 * core's clock, and its effects run. Also the safety net that re-reads one session's queues when
 * its client has sent more than the table holds.
 */
import type { JsMsg } from "@nats-io/jetstream";
import type { Effect } from "../../machines/managerCore.js";
import { ErrorCode, type TandemError } from "../../runtime/errors.js";
import { trace } from "../../runtime/trace.js";
import { encode, encodedSize } from "../../runtime/wire.js";
import { parseRequestMsg, parseResponseMsg, publishDlq, type ParsedOneRequest, type ParsedOneResponse } from "../protocol.js";
import { now, storedAt, toCore, type PrimaryTerm, type QueueEntry, type TermIntake } from "./term.js";

export class QueueIntake implements TermIntake {
  constructor(private readonly term: PrimaryTerm) {}

  onRequestMsg(m: JsMsg, forceReplay = false): void {
    const term = this.term;
    const { core, rt } = term;
    const replaying = forceReplay || m.seq <= term.replayEnd.req;
    const parsed = parseRequestMsg(rt.names, m);
    if ("error" in parsed) {
      core.passed("req", m.seq);
      this.unreadable(`req.${m.seq}`, m.seq, parsed, m, replaying);
      return;
    }
    if (parsed.type === "batch") {
      // Several requests of the session in one record: each applied as if it were a record of
      // its own at the same stream sequence; a refused element is dead-lettered with its own bytes.
      core.passed("req", m.seq);
      // The headers only for a dead letter: decoding them per record was an allocation the
      // manager paid on every batch.
      for (let i = 0; i < parsed.items.length; i++) {
        const item = parsed.items[i]!;
        const source = { subject: m.subject, get headers() { return m.headers; }, get data() { return encode(item.raw); } };
        if ("error" in item) this.unreadable(`req.${m.seq}.${i}`, m.seq, { error: item.error, client: parsed.client, session: parsed.session, ...(item.n !== undefined ? { n: item.n } : {}) }, source, replaying);
        else this.applyRequest(m.seq, item, source, replaying);
      }
      return;
    }
    if (parsed.type === "taken") {
      term.run(core.onTaken({ seq: m.seq, client: parsed.client, session: parsed.session, taken: parsed.taken, ...(parsed.takenAlso ? { also: parsed.takenAlso } : {}) }, now()));
    } else if (parsed.type === "cancel") {
      const { type: _t, ...cancel } = parsed;
      term.run(core.onCancelRecord({ seq: m.seq, ...cancel }, now()));
    } else if (parsed.type === "open") {
      const { type: _t, ...open } = parsed;
      term.run(core.onOpenRecord({ seq: m.seq, ...open }, now(), replaying), m);
    } else {
      this.applyRequest(m.seq, parsed, m, replaying);
    }
  }

  /** A record (or a batch's element) that does not fit: dead-lettered, and its request answered with the error. */
  private unreadable(dedupe: string, seq: number, parsed: { error: TandemError; client?: string; session?: string; n?: number }, source: QueueEntry, replaying: boolean): void {
    const { core, rt } = this.term;
    if (!replaying) void publishDlq(rt, parsed.error, source.subject, source.headers, source.data, dedupe);
    if (parsed.client && parsed.session && parsed.n) {
      const unreadable = { seq, client: parsed.client, session: parsed.session, n: parsed.n, error: parsed.error.toWire() };
      if (core.sessions.has(parsed.session)) this.term.run(core.onUnreadableRequest(unreadable, now()));
      else if (!replaying) this.term.run([{ type: "notify", client: parsed.client, session: parsed.session, n: parsed.n, error: unreadable.error }]);
    }
  }

  /** One request (with the receipts riding on it) applied to the table. */
  private applyRequest(seq: number, parsed: ParsedOneRequest, source: QueueEntry, replaying: boolean): void {
    const term = this.term;
    const { core, rt } = term;
    if (parsed.taken !== undefined) {
      term.run(core.onTaken({ seq, client: parsed.request.client, session: parsed.request.session, taken: parsed.taken, ...(parsed.takenAlso ? { also: parsed.takenAlso } : {}) }, now()));
    }
    trace("manager.request", parsed.request.session, parsed.request.n);
    // The parse gives an upper bound (the message's size): measure exactly only past the limit.
    const restartSize = parsed.restartSize > rt.config.maxPayload ? encodedSize(parsed.request.restart) : 0;
    // One object, its optional fields set one by one: spreads made three copies per request.
    const r = parsed.request;
    const event: Parameters<typeof core.onRequest>[0] = { seq, client: r.client, session: r.session, n: r.n, kind: r.kind, payload: r.payload, size: parsed.size, restartSize };
    if ("restart" in r) event.restart = r.restart;
    if (r.tp !== undefined) event.tp = r.tp;
    if (r.retry !== undefined) event.retry = r.retry;
    if (r.deadline !== undefined) event.deadline = toCore(r.deadline);
    if (r.notBefore !== undefined) event.notBefore = toCore(r.notBefore);
    const effects = core.onRequest(event, now(), replaying);
    if (effects.some((e) => e.type === "notify" && e.error.code === ErrorCode.UnknownSession)) {
      void this.unknownSession(parsed.request.session, effects, source);
    } else {
      term.run(effects, source);
    }
  }

  /**
   * Before telling a client its session is unknown, make sure the bucket agrees: a session the
   * bucket has but the table lacks means the table is wrong (a cut read while NATS was
   * restarting, say). Then nothing is answered: this manager steps down and the next takeover
   * rebuilds from the bucket.
   */
  private async unknownSession(session: string, effects: Effect[], m: QueueEntry): Promise<void> {
    const term = this.term;
    try {
      if (await term.store.records.hasSession(session)) {
        term.ctx.rebuildFromBucket(term, session);
        return;
      }
    } catch {
      return; // cannot tell now; the client retries its request
    }
    term.run(effects, m);
  }

  onResponseMsg(m: JsMsg): void {
    const term = this.term;
    const { core, rt } = term;
    const parsed = parseResponseMsg(rt.names, m, term.keys);
    if ("error" in parsed) {
      core.passed("resp", m.seq);
      if (m.seq > term.replayEnd.resp) void publishDlq(rt, parsed.error, m.subject, m.headers, m.data, `resp.${m.seq}`);
      return;
    }
    // The session's client is the table's: the subject names the server that wrote it.
    const client = core.sessions.get(parsed.type === "batch" ? parsed.session : parsed.body.session)?.client;
    if (client === undefined) {
      core.passed("resp", m.seq);
      return; // closed (or not yet replayed: a response of a session opened later in the queue)
    }
    // Also while the request queue's replay is behind: a response stored after the takeover
    // began may belong to a request the table has not read yet (refused, it would be lost).
    const replaying = m.seq <= term.replayEnd.resp || core.reqSeq < term.replayEnd.req;
    if (parsed.type === "attempt") {
      const { at, ...attempt } = parsed.body;
      term.run(core.onAttemptRecord({ seq: m.seq, client, ...attempt, at: at !== undefined ? toCore(at) : storedAt(m) }, now()));
      return;
    }
    if (parsed.type === "batch") {
      // Several responses of the session from its server in one record: each applied as a record
      // of its own at the same sequence, a refused element dead-lettered with its own bytes.
      core.passed("resp", m.seq);
      for (let i = 0; i < parsed.items.length; i++) {
        const item = parsed.items[i]!;
        const source = { subject: m.subject, get headers() { return m.headers; }, get data() { return encode(item.raw); } };
        if ("error" in item) {
          if (m.seq > term.replayEnd.resp) void publishDlq(rt, item.error, m.subject, m.headers, source.data, `resp.${m.seq}.${i}`);
        } else {
          this.applyResponse(m, item, client, item.size, source, replaying);
        }
      }
      return;
    }
    this.applyResponse(m, parsed, client, m.data.length, m, replaying);
  }

  /** One response or checkpoint (a record, or a batch's element) applied to the table. */
  private applyResponse(m: JsMsg, parsed: ParsedOneResponse, client: string, size: number, source: QueueEntry, replaying: boolean): void {
    const term = this.term;
    const { core, rt } = term;
    // The restart data's size is measured (see above) only for responses and checkpoints.
    if (parsed.body.restartSize > rt.config.maxPayload) parsed.body.restartSize = encodedSize(parsed.body.restart);
    else parsed.body.restartSize = 0;
    if (parsed.type === "checkpoint") {
      term.run(core.onCheckpoint({ seq: m.seq, client, ...parsed.body }, replaying), source);
    } else {
      trace("manager.response", parsed.body.session, parsed.body.n);
      const body = parsed.body;
      // When it was stored matters only to a failure or a request with a deadline (the time is
      // read from the message's reply subject: not paid on the hot path).
      const timed = body.error !== undefined || core.sessions.get(body.session)?.requests.get(body.n)?.deadline !== undefined;
      term.run(core.onResponse({ seq: m.seq, client, ...body, size, ...(timed ? { at: storedAt(m) } : {}) }, now(), replaying), source);
    }
  }

  /**
   * Safety net: re-read one session's request and response queues from the streams and apply
   * them (idempotently) when its client has sent more than the table holds.
   */
  async replaySession(client: string, session: string, tableLastReq: number, clientLastReq: number, quiet = false): Promise<void> {
    const term = this.term;
    const { core } = term;
    let applied = 0;
    for (const queue of ["req", "resp"] as const) {
      try {
        // A targeted replay moves no cursor.
        applied += await term.store.queues.readSession(queue, client, session, (msg) =>
          core.offCursor(() => (queue === "req" ? this.onRequestMsg(msg, true) : this.onResponseMsg(msg))),
        );
      } catch (err) {
        term.log.warn({ err, session }, "re-reading a session's queue failed");
      }
    }
    const s = core.sessions.get(session);
    if (quiet) return;
    term.log.error(
      { session, client, tableLastReq, clientLastReq, nowLastReq: s?.lastReq, applied },
      "the table lacked requests its client had sent; re-read the session's queues (please report this)",
    );
  }
}
