/**
 * The calls a primary answers (docs/design.md §2): open, resume and close from clients,
 * register and heartbeat from servers. Who calls is read from the subject (NATS permissions
 * confine each user to its own), never from the body; bad calls are refused with a stable code
 * and dead-lettered with their bytes.
 */
import type { Msg } from "@nats-io/transport-node";
import type { HedgeOptions, HeartbeatReply, OpenReply, Reply, ResumeReply, RetryOptions } from "../../machines/types.js";
import { ErrorCode, TandemError } from "../../runtime/errors.js";
import { newId } from "../../runtime/ids.js";
import { JS_TIMEOUT_MS } from "../../runtime/runtime.js";
import { decode, encode, encodedSize, makeHeaders, malformed, type ClientCall } from "../../runtime/wire.js";
import { MANAGER_WRITER, parseHedge, publishDlq, replyError, replyOk } from "../protocol.js";
import { MAX_WINDOW, parse, V } from "../schemas.js";
import { now, type PrimaryTerm, type TermCalls } from "./term.js";

/** A client that re-syncs while its request has been at a server this long gets it checked. */
const STUCK_DISPATCH_MS = 4000;

export class Calls implements TermCalls {
  private epochClaimCheckedAt = -Infinity;
  private epochClaimReportedAt = -Infinity;

  constructor(private readonly term: PrimaryTerm) {}

  private get rt() {
    return this.term.rt;
  }

  /**
   * The client a call comes from: its subject's token, which NATS lets only that client's user
   * publish on. A body naming another client is refused (alice once opened, read and closed
   * bob's sessions by writing "client":"bob").
   */
  private callerOf(op: ClientCall, m: Msg, body: Record<string, unknown>): string {
    const client = this.rt.names.clientOfCall(op, m.subject);
    if (!client) throw malformed(`${op}: subject ${m.subject} is not ${this.rt.names.clientCall(op, "<client>")}`);
    if (body.client !== undefined && body.client !== client) {
      throw malformed(`${op}: the body names client ${JSON.stringify(body.client)} but the call comes from ${client}`, { field: "client", subject: m.subject });
    }
    return client;
  }

  async onOpen(m: Msg): Promise<void> {
    const term = this.term;
    const { core, epoch } = term;
    let body: Record<string, unknown>;
    try {
      body = parse(V.open, decode(m.data));
      body.client = this.callerOf("open", m, body);
      if (m.data.length > term.rt.config.maxPayload && encodedSize(body.restart) > term.rt.config.maxPayload) {
        const size = encodedSize(body.restart);
        throw new TandemError(ErrorCode.PayloadTooLarge, `restart data is ${size} bytes; the limit is ${term.rt.config.maxPayload}`, { context: { size, limit: term.rt.config.maxPayload } });
      }
      if (body.hedge !== undefined) body.hedge = parseHedge(body.hedge);
    } catch (err) {
      return this.reject(m, err as TandemError);
    }
    const client = body.client as string;
    const service = body.service as string;
    if (!core.isKnownService(service) && now() - term.servingAt < term.rt.config.serverTimeoutMs) {
      // Just took over: servers of this service may not have registered again yet. Retryable.
      replyError(m, new TandemError(ErrorCode.Unavailable, `manager is starting; service "${service}" not seen yet, retry`, { context: { service } }));
      return;
    }
    if (!core.isKnownService(service)) {
      return this.reject(
        m,
        new TandemError(ErrorCode.UnknownService, `no server has registered for service "${service}"; start one with: tandem server --service ${service}`, {
          context: { service },
        }),
      );
    }
    const open = core.sessionsOf(client);
    if (open >= term.rt.config.maxSessionsPerClient) {
      return this.reject(
        m,
        new TandemError(ErrorCode.SessionLimit, `client ${client} has ${open} sessions open; the limit is ${term.rt.config.maxSessionsPerClient}. Close sessions it no longer uses`, {
          context: { client, open, limit: term.rt.config.maxSessionsPerClient },
        }),
      );
    }
    // And across clients: unsecured, anyone can make up client ids (issue 13: no limit across ids).
    if (core.sessions.size >= term.rt.config.maxSessions) {
      return this.reject(
        m,
        new TandemError(ErrorCode.SessionLimit, `the manager has ${core.sessions.size} sessions open, its limit (TANDEM_MAX_SESSIONS); close sessions or raise the limit`, {
          context: { open: core.sessions.size, limit: term.rt.config.maxSessions, scope: "manager" },
        }),
      );
    }
    const session = newId();
    const pool = body.ordered === false;
    // A pool's receipts name what it took above its floor: at most 1,024 pending keeps them small.
    const maxPending = Math.min((body.maxPending as number | undefined) ?? term.rt.config.maxPending, term.rt.config.maxPending, pool ? MAX_WINDOW : Infinity);
    const hedge = body.hedge as HedgeOptions | undefined;
    const retry = body.retry as RetryOptions | undefined;
    // An unordered pool (docs/design.md §6): its window defaults to as many as may be pending.
    if (hedge && pool) {
      return this.reject(m, new TandemError(ErrorCode.Hedge, "a hedged session races copies of one request at a time; an unordered pool cannot be hedged", { context: { ordered: false } }));
    }
    // At most the pending limit: more could never be at a server at once.
    const window = Math.min((body.window as number | undefined) ?? (pool ? Math.min(maxPending, MAX_WINDOW) : 1), maxPending);
    if (hedge && window > 1) {
      return this.reject(m, new TandemError(ErrorCode.Hedge, "a hedged session runs one request at a time (its copies race); open it without a window, or open an unhedged session with one", { context: { window } }));
    }
    const { entry, effects } = core.open({ session, client, service, maxPending, window, pool, restart: body.restart, ...(hedge ? { hedge } : {}), ...(retry ? { retry } : {}) }, now());
    try {
      // The session's existence goes into its own request queue first: a standby that takes
      // over from a backup older than this open recreates the session when it replays it.
      await term.store.queues.append(
        term.rt.names.req(client, session),
        encode({ open: { service, maxPending, ...(window > 1 ? { window } : {}), ...(pool ? { pool: true } : {}), ...(body.restart !== undefined ? { restart: body.restart } : {}), ...(hedge ? { hedge } : {}), ...(retry ? { retry } : {}) } }),
        { msgID: `${session}.open`, headers: makeHeaders({ session, epoch, kind: "control", client }), timeout: JS_TIMEOUT_MS },
      );
      await term.kv.sessions.create(session, core.record(entry));
    } catch (err) {
      core.close(client, session);
      return this.reject(m, new TandemError(ErrorCode.Unavailable, "could not store the session; try again", { cause: err }));
    }
    // A primary that was paused must not hand out a session a newer primary will not know.
    if (!term.acting || !(await term.ctx.verifyLease(term))) {
      replyError(m, new TandemError(ErrorCode.NotLeader, "this manager lost its lease; retry the open"));
      return;
    }
    replyOk<OpenReply>(m, { session, epoch, maxPending, window, ...(pool ? { pool: true } : {}), maxPayload: term.rt.config.maxPayload });
    term.log.debug({ session, client, service, server: entry.server }, "session opened");
    term.run(effects);
  }

  async onResume(m: Msg): Promise<void> {
    const term = this.term;
    const { core } = term;
    let client: string;
    let session: string;
    let clientLastReq = 0;
    let clientTaken = 0;
    try {
      const v = parse(V.resume, decode(m.data));
      client = this.callerOf("resume", m, v);
      session = v.session;
      clientLastReq = v.lastReq ?? 0;
      clientTaken = v.taken ?? 0;
    } catch (err) {
      return this.reject(m, err as TandemError);
    }
    // I6: everything the client saw acknowledged in its request queue must be applied first.
    try {
      await term.consumers.caughtUpTo(await term.store.queues.lastSeq("req"), 0, 5000);
    } catch (err) {
      return this.reject(m, new TandemError(ErrorCode.Unavailable, "manager is catching up with the queues; retry the resume", { cause: err }));
    }
    const known = core.sessions.get(session);
    if (known && known.client === client && (clientLastReq > known.lastReq || clientTaken > known.taken)) {
      // The client has sent requests, or committed receipts, that the table does not hold: its
      // `taken` comes from the session's queue, not only from the table (a receipt the cursor
      // skipped once made a resumed client get committed responses again). Read them again.
      await term.intake.replaySession(client, session, known.lastReq, clientLastReq);
    }
    // Running at its server, as the server's heartbeats say: long work, not lost (docs/design.md §9).
    // (The head of the session: the request its client waits for first.)
    const headN = known ? known.answered + 1 : 0;
    const head = known && known.client === client ? known.inFlight.get(headN) : undefined;
    const running = head && now() - head.runningAt < term.rt.config.serverTimeoutMs ? { n: headN, ...head } : null;
    if (head && !running && now() - head.at > STUCK_DISPATCH_MS) {
      // A request at a server for long with its client waiting: its response may be in the queue
      // unseen (a cursor that skipped it in a NATS election), or the work lost. Re-read the
      // session's queues, and if it is still unanswered send it again (a server still running
      // it says so; a handler runs at least once anyway).
      const n = headN;
      const answered = known!.answered;
      await term.intake.replaySession(client, session, known!.lastReq, clientLastReq, true);
      const s = core.sessions.get(session);
      if (s && s.answered > answered) {
        term.log.error({ session, client, n }, "the table missed a stored response; re-read the session's queues (please report this)");
      } else if (s && s.inFlight.get(n) === head) {
        term.log.warn({ session, client, n, server: head.server, waitedMs: Math.round(now() - head.at) }, "a request has been at its server long with its client waiting; sending it again");
        term.run(core.redispatch(session, n, now()));
      }
    }
    if (known && known.client === client) {
      const d = core.diagnose(session, now());
      if (d) {
        term.log.warn({ session, client, answered: known.answered, lastReq: known.lastReq, server: known.server, why: d.reason }, "client re-synced while its session had nothing at a server");
        if (d.reason === "request missing from the table") await term.intake.replaySession(client, session, known.lastReq, clientLastReq);
        term.run(d.effects);
      }
    }
    const { entry, effects } = core.resume(client, session, now());
    if (!entry) {
      const rec = await term.store.records.hasSession(session).catch(() => null);
      if (rec && rec.client === client) {
        term.ctx.rebuildFromBucket(term, session);
        replyError(m, new TandemError(ErrorCode.Unavailable, "manager is rebuilding; retry the resume"));
        return;
      }
      return this.reject(
        m,
        new TandemError(ErrorCode.UnknownSession, `session ${session} is not open (closed, or never opened by client ${client}); open a new session`, {
          context: { session, client },
        }),
      );
    }
    const info = core.restartInfo(session)!;
    replyOk<ResumeReply>(m, {
      session,
      service: entry.service,
      epoch: term.epoch,
      restart: entry.clientRestart,
      lastReq: entry.lastReq,
      taken: entry.taken,
      ...(entry.ordered ? {} : { pool: true, ...(entry.takenAlso.size > 0 ? { takenAlso: [...entry.takenAlso].sort((a, b) => a - b) } : {}) }),
      requests: info.requests,
      responses: info.responses,
      maxPending: entry.maxPending,
      ...(running ? { running: { n: running.n, server: running.server, forMs: Math.round(now() - running.at) } } : {}),
      maxPayload: term.rt.config.maxPayload,
    });
    term.log.info({ session, client, taken: entry.taken, lastReq: entry.lastReq }, "session resumed");
    term.run(effects);
  }

  async onClose(m: Msg): Promise<void> {
    const term = this.term;
    const { core } = term;
    let client: string;
    let session: string;
    try {
      const v = parse(V.close, decode(m.data));
      client = this.callerOf("close", m, v);
      session = v.session;
    } catch (err) {
      return this.reject(m, err as TandemError);
    }
    const { closed, effects } = core.close(client, session);
    if (!closed) {
      return this.reject(m, new TandemError(ErrorCode.UnknownSession, `session ${session} is not open`, { context: { session } }));
    }
    term.run(effects);
    term.proxies.close(session);
    // A snapshot taken before the close must not write the record back after the purge.
    await term.backups.inProgress;
    const { store } = term;
    // Purge the queues first, then the record: a crash in between leaves an empty record,
    // never queue entries without one.
    await Promise.all([store.queues.forgetSession(client, session), store.records.forgetSession(session, "hedges")]).catch((err) =>
      term.log.warn({ err, session }, "purge of a closed session's queues failed"),
    );
    term.kv.sessions.forget(session);
    term.kv.restart.forget(`${session}.client`);
    term.kv.restart.forget(`${session}.server`);
    await store.records.forgetSession(session, "records").catch((err) => term.log.warn({ err, session }, "removing a closed session's records failed"));
    replyOk(m, { session, closed: true });
    term.log.debug({ session, client }, "session closed");
  }

  /**
   * A registration counts once the server answers on its own subject (`<p>.srv.<id>.ping`,
   * which only that server's user may receive on when secured) and names the same service:
   * registrations of servers that did not exist once drew new sessions that then timed out, and
   * one under a real server's id for another service drew that service's work to the real server.
   */
  onRegister(m: Msg): void {
    const term = this.term;
    const { core, epoch } = term;
    let server: string;
    let service: string;
    let capacity: number;
    let incarnation: string | undefined;
    try {
      // Who registers for what is in the subject (NATS permissions enforce it when secured);
      // a body that says otherwise is refused.
      const where = term.rt.names.parseSrvSubject(m.subject);
      if (!where || where.op !== "register") throw malformed(`register: subject ${m.subject} is not ${term.rt.names.register("<server>", "<service>")}`);
      const v = parse(V.register, decode(m.data));
      if ((v.server !== undefined && v.server !== where.server) || (v.service !== undefined && v.service !== where.service)) {
        throw malformed(`register: the body names server ${JSON.stringify(v.server)} of ${JSON.stringify(v.service)} but the subject ${m.subject}`, { field: "server" });
      }
      server = where.server;
      service = where.service!;
      if (server === MANAGER_WRITER) throw malformed(`register: "${MANAGER_WRITER}" is not a server id (the manager writes under it)`, { field: "server" });
      capacity = v.capacity ?? 1;
      incarnation = v.incarnation;
    } catch (err) {
      return this.reject(m, err as TandemError);
    }
    const { rt } = this;
    void rt.requester
      .request(rt.names.srv(server, "ping"), encode({ epoch }), { timeout: rt.config.ackTimeoutMs, headers: makeHeaders({ epoch, kind: "control" }) })
      .then(
        (r) => {
          const rep = decode(r.data) as Reply<{ server?: unknown; service?: unknown }>;
          return rep.ok && rep.value.server === server && rep.value.service === service ? null : `it answered for ${JSON.stringify(rep.ok ? rep.value.service : rep.error.code)}`;
        },
        () => "nothing answered on its own subject",
      )
      .then((problem) => {
        if (!term.acting) return; // no longer ours to act on
        if (problem) {
          return this.reject(m, new TandemError(ErrorCode.ServerUnverified, `registration of server ${server} for service ${service} refused: ${problem} (${rt.names.srv(server, "ping")})`, { context: { server, service } }));
        }
        const effects = core.registerServer(server, service, capacity, now(), incarnation);
        replyOk(m, { epoch: term.epoch });
        term.log.info({ server, service }, "server registered");
        term.run(effects);
      });
  }

  onHeartbeat(m: Msg): void {
    const term = this.term;
    const { core } = term;
    try {
      const where = term.rt.names.parseSrvSubject(m.subject);
      if (!where || where.op !== "heartbeat") throw malformed(`heartbeat: subject ${m.subject} is not ${term.rt.names.heartbeat("<server>")}`);
      const v = parse(V.heartbeat, decode(m.data));
      if (v.server !== undefined && v.server !== where.server) {
        throw malformed(`heartbeat: the body names server ${JSON.stringify(v.server)} but the subject ${m.subject}`, { field: "server" });
      }
      const server = where.server;
      const epoch = v.epoch ?? 0;
      if (epoch > term.epoch) {
        // A server says it has seen a newer manager. Only the lease moves an epoch: check it
        // (at most once a second) and step down if it is no longer ours; a claim the lease does
        // not back is refused and reported, never a step-down (a server reporting a higher
        // epoch three times a second once made the managers step down 14 times in 15 s).
        this.checkEpochClaim(server, epoch, m);
        return;
      }
      const known = core.heartbeat(server, now(), v.running);
      replyOk<HeartbeatReply>(m, known ? { epoch: term.epoch } : { epoch: term.epoch, reregister: true });
    } catch (err) {
      this.reject(m, err as TandemError);
    }
  }

  private checkEpochClaim(source: string, claimed: number, m: Msg): void {
    const term = this.term;
    const acting = term.epoch;
    const err = new TandemError(ErrorCode.StaleEpoch, `epoch ${claimed} is not the lease's (this manager holds epoch ${acting})`, {
      context: { source, claimed, acting },
    });
    replyError(m, err);
    const t = now();
    if (t - this.epochClaimCheckedAt < 1000) return;
    this.epochClaimCheckedAt = t;
    void term.ctx.verifyLease(term).then((ours) => {
      if (!ours || now() - this.epochClaimReportedAt < 10_000) return;
      this.epochClaimReportedAt = now();
      term.ctx.baseLog.warn({ source, claimed, epoch: acting }, "a peer claims an epoch the lease does not back; refused (further claims in the next 10 s are not logged)");
      void publishDlq(term.rt, err, m.subject, m.headers, m.data);
    });
  }


  private reject(m: Msg, err: TandemError | Error): void {
    const te = err instanceof TandemError ? err : new TandemError(ErrorCode.Malformed, String(err.message ?? err));
    replyError(m, te);
    void publishDlq(this.rt, te, m.subject, m.headers, m.data);
  }
}
