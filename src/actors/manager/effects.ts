/**
 * The effect executor: the core's decisions carried out on the wire, for one term. Each effect
 * names what it acts on; what it sends (a request's payload, a response, restart data) is read
 * from the table at the moment it is sent, so an effect run late sends what is current.
 */
import type { DispatchWork, Effect, StoredResponse } from "../../machines/managerCore.js";
import { splitToFit } from "../../machines/parts.js";
import type { ClientRestartAck, DeliverBatchMsg, DeliverBatchReply, DeliverMsg, Reply, RestartMsg, RestartRecord, RestartSession, ServerRestartAck, WorkMsg } from "../../machines/types.js";
import { withBackoff } from "../../runtime/backoff.js";
import { dispatchKey } from "../../runtime/dispatch-key.js";
import { JS_TIMEOUT_MS } from "../../runtime/runtime.js";
import { trace } from "../../runtime/trace.js";
import { decode, encode, encodedSize, Header, makeHeaders } from "../../runtime/wire.js";
import type { HedgeEffects, HedgeRecord } from "../hedgeProxy.js";
import { MANAGER_WRITER, publishDlq, requestIn } from "../protocol.js";
import { batchBytes, chunks } from "../batches.js";
import { now, toWall, type PrimaryTerm, type QueueEntry, type TermEffects } from "./term.js";

export class Effects implements TermEffects {
  private restartWarnedAt = -Infinity;
  /** When a session too large for any restart message was last reported (rate-limits it). */
  private restartOversizeWarnedAt = -Infinity;

  /**
   * Deliveries decided in this turn, per session, until it ends (a microtask: everything one read
   * from the socket applied). One goes alone at once as before; several of a session (a window's
   * pipeline) go as one message: one request and one reply instead of one each (issue 17).
   */
  private readonly outbox = new Map<string, { epoch: number; client: string; service: string; items: Array<{ n: number; response: StoredResponse }> }>();
  /** Dispatches decided in this turn, per server and session, the same way. */
  private readonly workbox = new Map<string, { epoch: number; server: string; session: string; service: string; items: Array<{ n: number; work: DispatchWork; acked: (ok: boolean) => void }> }>();
  private flushing = false;

  constructor(private readonly term: PrimaryTerm) {}

  run(effects: Effect[], source?: QueueEntry): void {
    const epoch = this.term.epoch;
    for (const e of effects) this.exec(e, epoch, source);
  }

  private exec(e: Effect, epoch: number, source?: QueueEntry): void {
    const { rt, core } = this.term;
    if (!this.term.acting) return;
    switch (e.type) {
      case "dispatch": {
        rt.metrics.forService(e.service).dispatched.inc();
        const acked = (ok: boolean) => (ok ? core.dispatchAcked(e.session, e.n) : this.term.run(core.dispatchFailed(e.session, e.n, now())));
        // A hedged session's proxy sends the copies (the first one to this server).
        if (e.hedged) this.term.proxies.dispatch(e.session, e.n, e.server, acked);
        else {
          // Sent when this turn's effects are all out: several of one session to its server go
          // as one message, as deliveries do.
          const key = `${e.server} ${e.session}`;
          let box = this.workbox.get(key);
          if (!box) {
            box = { epoch, server: e.server, session: e.session, service: e.service, items: [] };
            this.workbox.set(key, box);
          }
          box.items.push({ n: e.n, work: e.work, acked });
          this.flushSoon();
        }
        return;
      }
      case "answered": {
        this.term.proxies?.answered(e.session, e.n, e.server, e.replaying ? [] : e.others);
        return;
      }
      case "cancel": {
        // Its dispatch may still wait for this turn's end: then it is never sent, and a cancel
        // that overtook it cannot leave the server running what its caller gave up.
        const box = this.workbox.get(`${e.server} ${e.session}`);
        const held = box?.items.findIndex((it) => it.n === e.n) ?? -1;
        if (held >= 0) {
          box!.items.splice(held, 1);
          return;
        }
        rt.nc.publish(rt.names.cancel(e.server, e.session), encode({ epoch, session: e.session, n: e.n, reason: e.reason }), {
          headers: makeHeaders({ session: e.session, request: e.n, epoch, kind: "control" }),
        });
        return;
      }
      case "deliver": {
        // Sent when this turn's effects are all out: several of one session go as one message.
        let box = this.outbox.get(e.session);
        if (!box) {
          box = { epoch, client: e.client, service: e.service, items: [] };
          this.outbox.set(e.session, box);
        }
        box.items.push({ n: e.n, response: e.response });
        this.flushSoon();
        return;
      }
      case "putRestart": {
        // Never older over newer (I6), whoever wrote the newer one.
        const mine = e.record;
        this.term.kv.restart
          .write(`${e.session}.${e.side}`, mine, (stored) => {
            const s = stored as RestartRecord | null;
            return !s || mine.n > s.n || (mine.n === s.n && mine.seq >= s.seq) ? "overwrite" : "skip";
          })
          .catch((err) => {
            if (now() - this.restartWarnedAt < 5000) return;
            this.restartWarnedAt = now();
            this.term.log.warn({ err: { message: (err as Error).message }, session: e.session }, "storing restart data in the bucket failed (it stays in the queue); further failures in the next 5 s are not logged");
          });
        return;
      }
      case "storeError": {
        const body = { n: e.n, k: dispatchKey(this.term.secret, e.session, e.n, MANAGER_WRITER), error: e.error };
        void this.storeManagerRecord(epoch, e.session, e.n, encode(body), `${e.session}.${e.n}`, e.error.code);
        return;
      }
      case "notify": {
        const msg: DeliverMsg = { epoch, session: e.session, n: e.n, server: "manager", error: e.error };
        rt.nc.publish(rt.names.deliver(e.client, e.session), encode(msg), { headers: makeHeaders({ session: e.session, request: e.n, epoch, kind: "control", code: e.error.code }) });
        return;
      }
      case "dlq": {
        const dedupe = `${e.context.session ?? ""}.${e.context.n ?? ""}`;
        if (e.reqSeq !== undefined) {
          // The request the entry is about, as it was queued: subject, headers and bytes.
          const n = e.context.n;
          void this.term.store.queues
            .at("req", e.reqSeq)
            .catch(() => null)
            .then((sm) => {
              // A batch record stands for its element n.
              const one = sm && typeof n === "number" ? requestIn(rt.names, sm, n) : null;
              return publishDlq(rt, e, sm?.subject ?? "", sm?.headers, one?.data ?? sm?.data, dedupe);
            });
        } else if (source) {
          void publishDlq(rt, e, source.subject, source.headers, source.data, dedupe);
        } else {
          void publishDlq(rt, e, "", undefined, undefined, dedupe);
        }
        return;
      }
      case "recordAttempt": {
        rt.metrics.failedAttempts.inc({ service: core.sessions.get(e.session)?.service ?? "", code: e.error.code });
        const body = { n: e.n, k: dispatchKey(this.term.secret, e.session, e.n, MANAGER_WRITER), attempt: { server: e.server, error: e.error, at: Math.round(toWall(e.at)) } };
        // Numbered by the attempt it ends: stored once however often it is written.
        const failures = core.sessions.get(e.session)?.attempts.get(e.n)?.failures ?? 0;
        void this.storeManagerRecord(epoch, e.session, e.n, encode(body), `${e.session}.${e.n}.a${failures + 1}`, "attempt");
        return;
      }
      case "restartServer": {
        const sessions: RestartSession[] = [];
        for (const id of e.sessions) {
          const info = core.restartInfo(id);
          const s = core.sessions.get(id);
          if (info && s) sessions.push({ ...info, restart: s.serverRestart });
        }
        this.sendRestart<ServerRestartAck>(rt.names.srv(e.server, "restart"), epoch, sessions).then((acks) => {
          if (!acks) return core.serverRestartFailed(e.server, now());
          const ack: ServerRestartAck = { server: e.server, working: acks.flatMap((a) => a.working), sessions: e.sessions };
          this.term.log.info({ server: e.server, sessions: e.sessions.length, working: ack.working.length, parts: acks.length }, "server session restarted");
          this.term.run(core.serverRestartAcked(ack, now()));
        });
        return;
      }
      case "restartClient": {
        const sessions: RestartSession[] = [];
        for (const id of e.sessions) {
          const info = core.restartInfo(id);
          const s = core.sessions.get(id);
          if (info && s) sessions.push({ ...info, restart: s.clientRestart });
        }
        this.sendRestart<ClientRestartAck>(rt.names.cli(e.client, "restart"), epoch, sessions).then((acks) => {
          if (!acks) return this.term.run(core.clientRestartFailed(e.client, now()));
          const ack: ClientRestartAck = { client: e.client, sessions: acks.flatMap((a) => a.sessions) };
          this.term.log.info({ client: e.client, sessions: e.sessions.length, parts: acks.length }, "client session restarted");
          this.term.run(core.clientRestartAcked(ack, now()));
        });
        return;
      }
      case "served": {
        rt.metrics.workSeconds.labels({ service: e.service }).observe(e.ms / 1000);
        this.term.ctx.recent.add(Date.now(), e.ms, e.ok);
        return;
      }
      case "report": {
        this.term.log[e.level](e.context, e.message);
        return;
      }
    }
  }

  private flushSoon(): void {
    if (this.flushing) return;
    this.flushing = true;
    queueMicrotask(() => this.flush());
  }

  private flush(): void {
    this.flushing = false;
    const work = [...this.workbox.values()];
    this.workbox.clear();
    const deliveries = [...this.outbox];
    this.outbox.clear();
    if (!this.term.acting) return;
    for (const box of work) {
      if (box.items.length === 0) continue; // cancelled before it went
      if (box.items.length === 1) {
        const it = box.items[0]!;
        void this.send(box.epoch, box.server, box.session, it.n, box.service, it.work).then(it.acked);
      } else void this.sendBatch(box.epoch, box.server, box.session, box.service, box.items);
    }
    const maxBytes = batchBytes(this.term.rt.nc.info?.max_payload);
    for (const [session, box] of deliveries) {
      for (const chunk of chunks(box.items, (it) => it.response.bytes ?? 0, maxBytes)) {
        if (chunk.length === 1) this.deliverOne(box.epoch, box.client, box.service, session, chunk[0]!.n, chunk[0]!.response);
        else this.deliverBatch(box.epoch, box.client, box.service, session, chunk);
      }
    }
  }

  private deliverOne(epoch: number, client: string, service: string, session: string, n: number, resp: StoredResponse): void {
    const { rt, core } = this.term;
    const msg: DeliverMsg = { epoch, session, n, server: resp.server, ...(resp.error ? { error: resp.error } : { ok: resp.ok }) };
    if (resp.tp !== undefined) msg.tp = resp.tp;
    const headers = makeHeaders({ session, request: n, epoch, kind: "response", ...(resp.tp !== undefined ? { traceparent: resp.tp } : {}) });
    trace("manager.deliver", session, n);
    rt.requester
      .request(rt.names.deliver(client, session), encode(msg), { timeout: rt.config.ackTimeoutMs, headers, to: client })
      .then((r) => {
        const rep = decode(r.data) as Reply<unknown>;
        if (rep.ok) {
          rt.metrics.forService(service).delivered.inc();
          this.term.run(core.deliverAcked(session, n, now()));
        } else this.term.run(core.deliverFailed(session, n, now()));
      })
      .catch(() => this.term.run(core.deliverFailed(session, n, now())));
  }

  /**
   * Several deliveries of one session, in order, as one message on the session's deliver subject
   * (so `nats sub` by session still follows it; every request number is a Tandem-Request header).
   * The client answers per element; what it accepted in order counts, the first it refused is
   * sent again with everything after it, as a refused single delivery is.
   */
  private deliverBatch(epoch: number, client: string, service: string, session: string, chunk: Array<{ n: number; response: StoredResponse }>): void {
    const { rt, core } = this.term;
    const msg: DeliverBatchMsg = {
      epoch,
      session,
      batch: chunk.map(({ n, response: r }) => ({ n, server: r.server, ...(r.error ? { error: r.error } : { ok: r.ok }), ...(r.tp !== undefined ? { tp: r.tp } : {}) })),
    };
    const first = chunk[0]!;
    const headers = makeHeaders({ session, request: first.n, epoch, kind: "response", ...(first.response.tp !== undefined ? { traceparent: first.response.tp } : {}) });
    for (const { n } of chunk.slice(1)) headers.append(Header.Request, String(n));
    trace("manager.deliver", session, first.n);
    rt.requester
      .request(rt.names.deliver(client, session), encode(msg), { timeout: rt.config.ackTimeoutMs, headers, to: client })
      .then((r) => {
        const rep = decode(r.data) as Reply<DeliverBatchReply>;
        const results = rep.ok && Array.isArray(rep.value?.results) ? rep.value.results : [];
        if (core.sessions.get(session)?.ordered === false) {
          // A pool takes each on its own: the accepted ones count, a refused one comes again.
          let refused = 0;
          const accepted: number[] = [];
          for (const [i, { n }] of chunk.entries()) {
            const x = results[i];
            if (!x || x.n !== n || x.error !== undefined) refused ||= n;
            else accepted.push(n);
          }
          if (accepted.length) rt.metrics.forService(service).delivered.inc(accepted.length);
          this.term.run(core.poolDeliveries(session, accepted, refused, now()));
          return;
        }
        let upTo = 0;
        for (const [i, { n }] of chunk.entries()) {
          const x = results[i];
          if (!x || x.n !== n || x.error !== undefined) {
            this.term.run(core.deliverPartly(session, upTo, n, now()));
            return;
          }
          rt.metrics.forService(service).delivered.inc();
          upTo = n;
        }
        this.term.run(core.deliverAcked(session, upTo, now()));
      })
      .catch(() => this.term.run(core.deliverFailed(session, first.n, now())));
  }

  /**
   * Send request n of a session to a server as the table holds it now (a hedged copy, sent
   * after the decision); true when the server acknowledged it.
   */
  async sendWork(epoch: number, server: string, session: string, n: number, copy?: number): Promise<boolean> {
    const s = this.term.core.sessions.get(session);
    const req = s?.requests.get(n);
    if (!s || !req) return false;
    const work: DispatchWork = { client: s.client, kind: req.kind, payload: req.payload, seq: req.seq, restart: s.serverRestart, attempt: (s.attempts.get(n)?.failures ?? 0) + 1 };
    if (req.evicted) work.evicted = true;
    if (req.tp !== undefined) work.tp = req.tp;
    if (req.deadline !== undefined) work.deadline = req.deadline;
    return this.send(epoch, server, session, n, s.service, work, copy);
  }

  /** The work message of a dispatch, to its server; true when the server acknowledged it. */
  private async send(epoch: number, server: string, session: string, n: number, service: string, w: DispatchWork, copy?: number): Promise<boolean> {
    const { rt } = this.term;
    const work = await this.workMessage(epoch, server, session, n, service, w, copy);
    if (!work) return false;
    const headers = makeHeaders({ session, request: n, epoch, kind: w.kind, ...(w.tp !== undefined ? { traceparent: w.tp } : {}) });
    trace("manager.dispatch", session, n);
    return rt.requester
      .request(rt.names.work(server, session), encode(work), { timeout: rt.config.ackTimeoutMs, headers, to: server })
      .then((r) => (decode(r.data) as Reply<unknown>).ok, () => false);
  }

  /**
   * Several dispatches of one session to its server as one message (`{batch}`, each element a
   * whole work message, checked on its own by the server), cut to fit; each is acknowledged by
   * its own element of the reply.
   */
  private async sendBatch(epoch: number, server: string, session: string, service: string, items: Array<{ n: number; work: DispatchWork; acked: (ok: boolean) => void }>): Promise<void> {
    const { rt } = this.term;
    const built: Array<{ n: number; json: string; kind: DispatchWork["kind"]; tp: string | undefined; acked: (ok: boolean) => void }> = [];
    for (const it of items) {
      // Awaited only when its payload must be read back from the queue (a microtask per element was not free).
      const made = this.workMessage(epoch, server, session, it.n, service, it.work);
      const work = made instanceof Promise ? await made : made;
      if (!work) it.acked(false);
      else built.push({ n: it.n, json: JSON.stringify(work), kind: it.work.kind, tp: it.work.tp, acked: it.acked });
    }
    if (!this.term.acting) return;
    for (const chunk of chunks(built, (b) => b.json.length, batchBytes(rt.nc.info?.max_payload))) {
      const first = chunk[0]!;
      const headers = makeHeaders({ session, request: first.n, epoch, kind: first.kind, ...(first.tp !== undefined ? { traceparent: first.tp } : {}) });
      for (const { n } of chunk.slice(1)) headers.append(Header.Request, String(n));
      trace("manager.dispatch", session, first.n);
      const data = chunk.length === 1 ? first.json : `{"batch":[${chunk.map((b) => b.json).join(",")}]}`;
      rt.requester.request(rt.names.work(server, session), utf8.encode(data), { timeout: rt.config.ackTimeoutMs, headers, to: server }).then(
        (r) => {
          const rep = decode(r.data) as Reply<{ results?: Array<{ n: number; error?: unknown }> }>;
          if (chunk.length === 1) return first.acked(rep.ok);
          const results = rep.ok && Array.isArray(rep.value?.results) ? rep.value.results : [];
          chunk.forEach((b, i) => b.acked(results[i]?.n === b.n && results[i]?.error === undefined));
        },
        () => chunk.forEach((b) => b.acked(false)),
      );
    }
  }

  /**
   * The work message of request n for `server`; a promise only when its payload must be read back
   * from the queue, and then null when it cannot be.
   */
  private workMessage(epoch: number, server: string, session: string, n: number, service: string, w: DispatchWork, copy?: number): WorkMsg | Promise<WorkMsg | null> {
    if (!w.evicted) return this.buildWork(epoch, server, session, n, service, w, w.payload, copy);
    const { rt } = this.term;
    // Not held in memory (read on replay past the byte bounds): the queue has it.
    return this.term.store.queues
      .at("req", w.seq)
      .catch(() => null)
      .then((stored) => {
        const parsed = stored ? requestIn(rt.names, stored, n)?.parsed : null;
        if (!parsed || !("type" in parsed) || parsed.type !== "request" || parsed.request.n !== n) {
          this.term.log.warn({ session, n, seq: w.seq }, "could not read a request back from its queue; retrying");
          return null;
        }
        return this.buildWork(epoch, server, session, n, service, w, parsed.request.payload, copy);
      });
  }

  /** The optional fields set only when present (no spread per dispatch). */
  private buildWork(epoch: number, server: string, session: string, n: number, service: string, w: DispatchWork, payload: unknown, copy: number | undefined): WorkMsg {
    const work: WorkMsg = { epoch, session, client: w.client, service, n, kind: w.kind, payload, restart: w.restart, k: this.term.keys.give(session, n, server), attempt: w.attempt };
    if (copy !== undefined) work.copy = copy;
    if (w.tp !== undefined) work.tp = w.tp;
    if (w.deadline !== undefined) work.deadline = Math.round(toWall(w.deadline));
    return work;
  }

  /**
   * A record of the manager's own in a session's response queue (an error in a request's place,
   * a failed attempt) must reach the queue, or the request is never answered: retry while this
   * epoch acts (same message id, so it is stored once). Under a flood of refused requests the
   * publishes once timed out and were given up.
   */
  private async storeManagerRecord(epoch: number, session: string, n: number, data: Uint8Array, msgID: string, code: string): Promise<void> {
    const { rt } = this.term;
    const headers = makeHeaders({ session, request: n, epoch, kind: code === "attempt" ? "control" : "response", code });
    await withBackoff(() => this.term.store.queues.append(rt.names.resp(MANAGER_WRITER, session), data, { msgID, headers, timeout: JS_TIMEOUT_MS }), {
      maxMs: 2000,
      while: () => this.term.acting,
      onFailure: (err, attempt) => attempt === 6 && this.term.log.warn({ err, session, n, code }, "storing a record in a response queue keeps failing; retrying"),
    }).catch(() => {}); // this epoch ended: the next primary answers the request
  }

  /**
   * A restart to one client or server, in as many messages as it takes for each to fit the
   * server's max_payload (a client with thousands of sessions, or large restart data, once made
   * one restart too large to send, retried forever: the takeover never finished for it). Each
   * part is acknowledged on its own, as the sessions it names are restarted independently;
   * resolves with every part's acknowledgement, or null when any part failed (retried whole).
   */
  private async sendRestart<A>(subject: string, epoch: number, sessions: RestartSession[]): Promise<A[] | null> {
    const { rt } = this.term;
    const maxBytes = (rt.nc.info?.max_payload ?? 1024 * 1024) - 1024;
    const overhead = encodedSize({ epoch, sessions: [] }) + 16;
    const { parts, oversized } = splitToFit(sessions, encodedSize, maxBytes - overhead);
    if (oversized.length > 0 && now() - this.restartOversizeWarnedAt > 5000) {
      this.restartOversizeWarnedAt = now();
      this.term.log.error({ subject, sessions: oversized.map((s) => s.session).slice(0, 10), maxBytes }, "sessions whose restart (restart data and queues) cannot fit any message are left out of the restart");
    }
    const headers = makeHeaders({ epoch, kind: "control" });
    try {
      const replies = await Promise.all(
        parts.map((p) => rt.requester.request(subject, encode({ epoch, sessions: p } satisfies RestartMsg), { timeout: rt.config.ackTimeoutMs, headers })),
      );
      const acks: A[] = [];
      for (const r of replies) {
        const rep = decode(r.data) as Reply<A>;
        if (!rep.ok) return null;
        acks.push(rep.value);
      }
      return acks;
    } catch {
      return null;
    }
  }

  /** What the hedging proxies of the term do on the wire. */
  hedgeEffects(): HedgeEffects {
    const epoch = this.term.epoch;
    const { rt } = this.term;
    const timeout = rt.config.ackTimeoutMs;
    const ok = (r: { data: Uint8Array }) => (decode(r.data) as Reply<unknown>).ok;
    return {
      sendCopy: (server: string, session: string, n: number, copy: number): Promise<boolean> =>
        this.term.acting ? this.sendWork(epoch, server, session, n, copy) : Promise.resolve(false),
      cancel: async (server: string, session: string, n: number): Promise<boolean> => {
        if (!this.term.acting) return true; // not ours to finish any more
        const headers = makeHeaders({ session, request: n, epoch, kind: "control" });
        return this.term.rt.requester.request(rt.names.cancel(server, session), encode({ epoch, session, n }), { timeout, headers }).then(ok, () => false);
      },
      record: (rec: HedgeRecord): void => {
        // A closed session's records are purged: do not write one back.
        if (!this.term.acting || !this.term.core.sessions.has(rec.session)) return;
        this.term.store.records.putHedge(rec.session, rec.n, rec).catch((err) => this.term.log.warn({ err, session: rec.session }, "could not record a hedge outcome"));
      },
    };
  }
}

const utf8 = new TextEncoder();
