/**
 * The client side: TandemClient (one client id, its subscriptions) and ClientSession (one
 * client-server session, driven by clientSessionMachine). Requests go durably into the
 * session's request queue with the client's restart data; responses come back in request order
 * (I3); a response is recorded as taken in the queue before the application gets it (I2).
 */
import type { Msg, Subscription } from "@nats-io/transport-node";
import { createActor, fromPromise, waitFor, type Actor, type Snapshot } from "xstate";
import { DeliveryCore, type HandOver, type ReceiptBody, type SessionDelivery } from "../machines/clientDelivery.js";
import { PoolDeliveryCore } from "../machines/poolDelivery.js";
import { clientSessionMachine } from "../machines/clientSessionMachine.js";
import type {
  ClientRestartAck,
  DeliverBatchReply,
  DeliverMsg,
  HedgeOptions,
  OpenReply,
  RequestKind,
  RestartMsg,
  ResumeReply,
  RetryOptions,
  WireErr,
} from "../machines/types.js";
import { ErrorCode, TandemError } from "../runtime/errors.js";
import type { Logger } from "../runtime/logger.js";
import { JS_TIMEOUT_MS, type Runtime } from "../runtime/runtime.js";
import { readSessionInfo, type SessionInfo } from "./sessionInfo.js";
import { decode, encode, Header, isObject, isToken, makeHeaders, malformed } from "../runtime/wire.js";
import { newId } from "../runtime/ids.js";
import { publishToQueue } from "../runtime/queue-publish.js";
import { withBackoff } from "../runtime/backoff.js";
import { trace } from "../runtime/trace.js";
import { isTraceParent, newTraceParent } from "../runtime/trace-context.js";
import { fits, parse, V } from "./schemas.js";
import { batchBytes, batchRecord, TurnBatcher } from "./batches.js";
import { offWhenRefused, ReplyBatcher } from "./reply-batcher.js";
import { checkAddressed, epochProblem, flushed, parseHedge, publishDlq, replyError, replyOk, unwrap } from "./protocol.js";

/** A request on its way into the session's queue. */
interface OutgoingRequest {
  n: number;
  data: Uint8Array;
  kind: RequestKind;
  tp: string;
}

export interface OpenOptions {
  /** Initial client restart data. */
  restart?: unknown;
  /** Requests outstanding before request() throws TANDEM_BACKPRESSURE (capped by the manager). */
  maxPending?: number;
  /**
   * Requests of the session that may be at its server at once (default 1, at most maxPending
   * and 1024). Responses still arrive in request order; handlers of one session then run
   * concurrently at the session's server. Not with `hedge`.
   */
  window?: number;
  /**
   * false: an unordered pool (README: Pools). Requests of the session go to any server of the
   * service with room (up to `window` at once, by default as many as may be pending) and
   * responses reach the application as they complete, each once. Not with `hedge`.
   */
  ordered?: boolean;
  /**
   * Hedged requests (docs/design.md §5): each request goes to one server and, with no response after
   * `after` ms (0 = at once, "p95" = the service's learned 95th percentile), to up to
   * `copies` − 1 others. The first stored response wins; the other copies are cancelled. Use
   * `kind: "update"` with a fenced store on the servers for requests that change a store.
   */
  hedge?: HedgeOptions;
  /**
   * How failed work of this session is retried (README: When work fails): attempts in all
   * (default 3), back-off (200 ms doubling to 30 s, 20 % jitter). Each request may override it.
   */
  retry?: RetryOptions;
}

export interface RequestOptions {
  /** New client restart data, stored with this request's queue position. */
  restart?: unknown;
  /** `update` requests change an external store (see the hedging docs). */
  kind?: RequestKind;
  /** The caller's W3C traceparent; without one the request gets a new trace id. */
  traceparent?: string;
  /** Give up after this many ms: the request is answered TANDEM_DEADLINE and its handler's signal fires. */
  timeoutMs?: number;
  /** An absolute deadline (a Date or ms since the epoch), as timeoutMs. */
  deadline?: Date | number;
  /** Abort it: the request is answered TANDEM_CANCELLED and its handler's signal fires. */
  signal?: AbortSignal;
  /** This request's retry policy, over the session's. */
  retry?: RetryOptions;
  /**
   * A delayed request: stored now, dispatched no earlier than this (a Date or ms since the
   * epoch), across failovers. In its session it holds its place: requests sent after it wait.
   * A deadline (timeoutMs) counts from the send, the delay included.
   */
  notBefore?: Date | number;
  /** As notBefore, this many ms from now. */
  delayMs?: number;
}

/**
 * How long a caller who gave up waits for the manager to record it (the recorded answer is what
 * it gets, so a resumed session sees the same) before it is told so locally.
 */
const GIVE_UP_GRACE_MS = 1000;

export interface Response {
  n: number;
  ok: boolean;
  value?: unknown;
  error?: TandemError;
  server: string;
  /** The request's W3C traceparent (the same id on every hop). */
  traceparent?: string;
}

/** What a client process keeps to restart a session after it dies. */
export interface PersistedSession {
  client: string;
  session: string;
  service: string;
  machine: Snapshot<unknown>;
}

const REQUEST_TIMEOUT = 5000;

export interface ClientOptions {
  /** Client id (a subject token); default a random one. */
  id?: string;
  /**
   * nats-server message tracing (2.11+): every request publish carries `Nats-Trace-Dest` with
   * this subject, and the server sends there how it handled the publish (`nats trace` shows the
   * same for one message). For following requests with the NATS CLI; not for production load.
   */
  traceDest?: string;
}

export class TandemClient {
  readonly id: string;
  /** @internal Nats-Trace-Dest of this client's request publishes (ClientOptions.traceDest). */
  traceDest: string | undefined;
  private readonly log: Logger;
  private readonly sessions = new Map<string, ClientSession>();
  private subs: Subscription[] = [];
  private maxEpoch = 0;
  private watchdog: NodeJS.Timeout | undefined;
  private unwatch: Array<() => void> = [];
  /** Acknowledgements of deliveries, those of one turn for one manager as one message (docs/design.md §6). */
  private readonly replies: ReplyBatcher;

  private constructor(
    readonly rt: Runtime,
    id?: string,
  ) {
    if (id !== undefined && !isToken(id)) throw new TandemError(ErrorCode.Config, `client id "${id}" must be 1-64 letters, digits, _ or -`);
    this.id = id ?? `c${newId(8)}`;
    this.log = rt.logger.child({ role: "client", client: this.id });
    this.replies = ReplyBatcher.on(rt, this.id);
  }

  static async connect(rt: Runtime, opts: ClientOptions = {}): Promise<TandemClient> {
    const c = new TandemClient(rt, opts.id);
    if (opts.traceDest !== undefined) {
      if (!/^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*$/.test(opts.traceDest)) {
        throw new TandemError(ErrorCode.Config, `traceDest "${opts.traceDest}" must be a plain NATS subject (no wildcards)`);
      }
      c.traceDest = opts.traceDest;
    }
    const names = rt.names;
    const sub = (subject: string, handler: (m: Msg) => void) => {
      c.subs.push(
        rt.nc.subscribe(subject, {
          callback: (err, m) => {
            if (err) return;
            try {
              handler(m);
            } catch (e) {
              c.log.error({ err: e }, "client handler failed");
            }
          },
        }),
      );
    };
    sub(names.hopAll("deliver", c.id), (m) => c.onDeliver(m));
    sub(names.cli(c.id, "restart"), (m) => c.onRestart(m));
    await flushed(rt);
    // Safety net: a session whose deliveries stop while it waits re-syncs (never expected;
    // logged when it happens). Longer than a takeover plus its restart round trips.
    const stallMs = Math.max(rt.config.stallMs, rt.config.leaseMs * 5);
    c.watchdog = setInterval(() => {
      for (const s of c.sessions.values()) void s.resyncIfStalled(stallMs);
    }, 1000);
    c.watchdog.unref();
    c.unwatch.push(
      offWhenRefused(rt.nc, c.replies, c.id, c.log),
      rt.health.add(`client ${c.id}`, () => {
        const waiting = [...c.sessions.values()].filter((s) => !s.ready).length;
        return waiting === 0 ? { ready: true, why: `${c.sessions.size} session(s) open` } : { ready: false, why: `${waiting} of ${c.sessions.size} session(s) opening or re-syncing with the manager` };
      }),
      rt.metrics.addCollector(() => rt.metrics.clientSessions.set({ client: c.id }, c.sessions.size)),
      () => rt.metrics.clientSessions.remove({ client: c.id }),
    );
    void (async () => {
      for await (const st of rt.nc.status()) {
        if (st.type === "reconnect") for (const s of c.sessions.values()) void s.resyncIfStalled(0, true);
      }
    })().catch(() => {});
    return c;
  }

  /** Open a new session with a server of `service`. */
  async open(service: string, opts: OpenOptions = {}): Promise<ClientSession> {
    if (opts.hedge !== undefined) opts = { ...opts, hedge: parseHedge(opts.hedge) };
    const s = new ClientSession(this, service, opts, null);
    await s.start(undefined);
    this.sessions.set(s.id, s);
    return s;
  }

  /** Resume a session of this client id by its id, or from a persisted snapshot. */
  async resume(from: string | PersistedSession): Promise<ClientSession> {
    const persisted = typeof from === "string" ? null : from;
    const id = typeof from === "string" ? from : from.session;
    const s = new ClientSession(this, persisted?.service ?? "", {}, id);
    this.sessions.set(id, s);
    try {
      await s.start(persisted?.machine);
    } catch (err) {
      this.sessions.delete(id);
      throw err;
    }
    return s;
  }

  /** What the session records say of a session: for hedged requests, who took and who won. */
  async sessionInfo(session: string): Promise<SessionInfo> {
    return readSessionInfo(this.rt, session);
  }

  /** @internal */
  forget(session: string): void {
    this.sessions.delete(session);
  }

  /** @internal */
  seeEpoch(epoch: number): void {
    this.maxEpoch = Math.max(this.maxEpoch, epoch);
  }

  async close(): Promise<void> {
    clearInterval(this.watchdog);
    for (const u of this.unwatch.splice(0)) u();
    for (const s of [...this.sessions.values()]) await s.detach();
    for (const s of this.subs) s.unsubscribe();
    this.subs = [];
  }

  private stale(m: Msg, epoch: number, seen: number): boolean {
    const problem = epochProblem(epoch, Math.max(seen, 0));
    if (!problem) return false;
    const err = new TandemError(
      ErrorCode.StaleEpoch,
      problem === "stale"
        ? `message from manager epoch ${epoch} but this client has seen ${seen}`
        : `message claims manager epoch ${String(epoch)}, more than one past the ${seen} this client knows; only the manager's replies move it further`,
      { context: { epoch: Number.isFinite(epoch) ? epoch : String(epoch), seen, client: this.id } },
    );
    replyError(m, err);
    void publishDlq(this.rt, err, m.subject, m.headers, m.data);
    return true;
  }

  private onDeliver(m: Msg): void {
    let d: DeliverMsg;
    try {
      const raw = decode(m.data);
      if (isObject(raw) && "batch" in raw) return this.onDeliverBatch(m, raw);
      d = parse(V.deliver, raw) as DeliverMsg;
      checkAddressed(this.rt.names, m.subject, d.session, "a delivery");
      trace("client.delivered", d.session, d.n);
    } catch (err) {
      const te = err instanceof TandemError ? err : malformed(String(err));
      replyError(m, te);
      void publishDlq(this.rt, te, m.subject, m.headers, m.data);
      return;
    }
    const s = this.attachedOrWait(m, d.session, (s) => this.deliverTo(s, m, d));
    if (s) this.deliverTo(s, m, d);
  }

  /**
   * The session a delivery is for, when it can take it now; otherwise undefined, with `later`
   * run once its resume is done or the delivery refused (it comes again).
   */
  private attachedOrWait(m: Msg, session: string, later: (s: ClientSession) => void): ClientSession | undefined {
    const s = this.sessions.get(session);
    if (!s) {
      replyError(m, new TandemError(ErrorCode.UnknownSession, `client ${this.id} has no session ${session} open in this process`));
      return undefined;
    }
    if (s.isAttached) return s;
    // Still resuming: its delivery state is about to be set from the manager's reply, so
    // accepting now would be forgotten. Take it once the resume is done: the manager sends the
    // delivery as it answers the resume, and it often overtakes the answer (refused, it came
    // again only after the manager's retry delay: 300 ms more after a nats-server restart).
    const resumed = s.afterResume();
    if (resumed) {
      resumed.then(() => later(s), () => replyError(m, new TandemError(ErrorCode.Unavailable, `session ${session} is resuming`)));
      return undefined;
    }
    replyError(m, new TandemError(ErrorCode.Unavailable, `session ${session} is resuming`));
    return undefined;
  }

  private deliverTo(s: ClientSession, m: Msg, d: DeliverMsg): void {
    if (this.stale(m, d.epoch, s.epoch)) return;
    this.seeEpoch(d.epoch);
    if (!m.reply) {
      // A notice (no reply wanted: the manager publishes it, it does not ask): the request was
      // rejected before it got a response. Told by the missing reply subject, not the
      // Tandem-Kind header: decoding every delivery's headers was a cost per round trip.
      if (d.error) s.rejectWaiter(d.n, d.error);
      return;
    }
    const r = s.accept(d);
    if (r === true) replyOk(m, { accepted: d.n }, this.replies);
    else replyError(m, r);
  }

  /**
   * Several deliveries of one session (a window's pipeline). The envelope is checked as one
   * message; each element on its own: one that does not fit is refused with TANDEM_MALFORMED and
   * goes to the dead-letter stream with its bytes, the ones before it are taken, and the manager
   * sends it and those after it again (they could only be taken in order).
   */
  private onDeliverBatch(m: Msg, raw: Record<string, unknown>): void {
    const b = parse(V.deliverBatch, raw);
    checkAddressed(this.rt.names, m.subject, b.session, "a delivery");
    const run = (s: ClientSession) => {
      if (this.stale(m, b.epoch, s.epoch)) return;
      this.seeEpoch(b.epoch);
      const results: DeliverBatchReply["results"] = [];
      for (const item of b.batch) {
        const n = isObject(item) && Number.isSafeInteger(item.n) ? Number(item.n) : 0;
        let d: DeliverMsg;
        try {
          d = { ...(parse(V.deliverItem, item) as Omit<DeliverMsg, "epoch" | "session">), epoch: b.epoch, session: b.session };
        } catch (err) {
          const te = err instanceof TandemError ? err : malformed(String(err));
          results.push({ n, error: te.toWire() });
          void publishDlq(this.rt, te, m.subject, m.headers, encode(item));
          continue;
        }
        trace("client.delivered", d.session, d.n);
        const r = s.accept(d);
        results.push(r === true ? { n: d.n } : { n: d.n, error: r.toWire() });
      }
      replyOk<DeliverBatchReply>(m, { results }, this.replies);
    };
    const s = this.attachedOrWait(m, b.session, run);
    if (s) run(s);
  }

  private onRestart(m: Msg): void {
    let msg: RestartMsg;
    try {
      msg = parse(V.restart, decode(m.data)) as RestartMsg;
    } catch (err) {
      replyError(m, err as TandemError);
      return;
    }
    if (this.stale(m, msg.epoch, this.maxEpoch)) return;
    this.seeEpoch(msg.epoch);
    const acks: ClientRestartAck["sessions"] = [];
    for (const info of msg.sessions) {
      const s = this.sessions.get(info.session);
      // Not attached yet: its resume, in flight, synchronises it with the manager.
      if (!s || !s.isAttached) continue;
      s.restartFromManager(msg.epoch);
      acks.push({ session: s.id, ...s.acceptedBody() });
    }
    this.log.info({ epoch: msg.epoch, sessions: acks.length }, "restarted by the manager");
    replyOk<ClientRestartAck>(m, { client: this.id, sessions: acks });
  }
}

interface Waiter {
  resolve: (r: Response) => void;
}

export class ClientSession {
  private actor: Actor<typeof clientSessionMachine> | undefined;
  private sessionId: string | null;
  private serviceName: string;
  private log: Logger;
  /** The delivery rules and watermarks (machines/clientDelivery.ts): this class carries them out. */
  private delivery: SessionDelivery<DeliverMsg>;
  private maxPending: number;
  private openError: unknown = null;
  private maxPayload = Infinity;
  /** The resolvers of requests waiting for their response (the core knows who waits). */
  private readonly waiters = new Map<number, Waiter>();
  private orphanQueue: Response[] = [];
  private orphanDemand: Array<(r: IteratorResult<Response>) => void> = [];
  private taking = false;
  /** Bodies of requests sent by this process and not yet answered (for a re-sync). */
  private readonly unanswered = new Map<number, { data: Uint8Array; kind: RequestKind; tp: string }>();
  /** Deadline and abort watchers of requests waiting for their answer. */
  private readonly giveUps = new Map<number, () => void>();
  /** What the last resume said runs at a server (a long handler, not a stall). */
  private runningAtResume: ResumeReply["running"] | undefined;
  private commitListeners: Array<(n: number) => void> = [];
  private closed = false;
  private restartData: unknown;
  /**
   * The JSON of the restart data the manager holds for this session (or has on its way): a
   * request whose restart data is the same does not carry it again (issue 17: the manager
   * would parse it and write it to the bucket once more, for nothing).
   */
  private storedRestart: string | undefined;
  /** Set once the manager knows this incarnation (open or resume done). */
  private attached = false;
  /**
   * This session's request publishes, those of one turn as one batch record (docs/design.md §6):
   * a window refilled by a batch of deliveries sends its requests as one message. Not used with
   * message tracing, which follows one message per request.
   */
  private readonly outbox = new TurnBatcher<OutgoingRequest>(
    (r) => this.publishDurable(r.n, r.data, r.kind, r.tp),
    (rs) => this.publishBatch(rs),
    (r) => r.data.length,
    () => batchBytes(this.client.rt.nc.info?.max_payload),
  );

  /** @internal */
  constructor(
    private readonly client: TandemClient,
    service: string,
    private readonly opts: OpenOptions,
    resumeId: string | null,
  ) {
    this.sessionId = resumeId;
    this.serviceName = service;
    this.delivery = opts.ordered === false ? new PoolDeliveryCore<DeliverMsg>(Date.now()) : new DeliveryCore<DeliverMsg>(Date.now());
    this.maxPending = opts.maxPending ?? client.rt.config.maxPending;
    this.restartData = opts.restart;
    this.storedRestart = opts.restart !== undefined ? JSON.stringify(opts.restart) : undefined;
    this.log = client.rt.logger.child({ role: "client", client: client.id, session: resumeId ?? undefined });
  }

  get id(): string {
    if (!this.sessionId) throw new TandemError(ErrorCode.Closed, "session is not open");
    return this.sessionId;
  }
  get service(): string {
    return this.serviceName;
  }
  get epoch(): number {
    return this.actor?.getSnapshot().context.epoch ?? 0;
  }
  get state(): string {
    return String(this.actor?.getSnapshot().value ?? "new");
  }
  /** Latest client restart data whose storage was acknowledged. */
  get restart(): unknown {
    return this.restartData;
  }
  /** Requests sent whose responses the application has not been handed. */
  get pending(): number {
    return this.delivery.lastReq - this.delivery.handedCount;
  }
  get lastRequest(): number {
    return this.delivery.lastReq;
  }
  /** Receipts committed (durable): after a resume, responses above this come again. */
  get takenUpTo(): number {
    return this.delivery.taken;
  }
  /** @internal what it accepted, as a restart's acknowledgement says it. */
  acceptedBody(): ReceiptBody {
    return this.delivery.acceptedBody();
  }
  /** Receipts committed, with a pool's numbers above the watermark. */
  get takenSet(): { upTo: number; also?: number[] } {
    return this.delivery.takenMarks();
  }
  /** An unordered pool (opened with `ordered: false`). */
  get ordered(): boolean {
    return this.delivery.ordered;
  }
  /** @internal the manager knows this incarnation (open or resume finished). */
  get isAttached(): boolean {
    return this.attached;
  }

  /** @internal */
  async start(persisted: Snapshot<unknown> | undefined): Promise<void> {
    const machine = clientSessionMachine.provide({
      actors: {
        open: fromPromise(({ input }) =>
          (input.session ? this.resumeCall(input.session) : this.openCall(input.service)).catch((err: unknown) => {
            this.openError = err; // keeps its stable code for the caller
            throw err;
          }),
        ),
        reconcile: fromPromise(async ({ input }) => {
          // Restored from a persisted snapshot: this incarnation must resume with the manager.
          if (!this.attached) await this.resumeCall(input.session);
        }),
        close: fromPromise(() => this.closeCall()),
      },
    });
    const input = { service: this.serviceName, ...(this.sessionId ? { session: this.sessionId } : {}) };
    this.actor = persisted
      ? createActor(machine, { snapshot: persisted as never, input })
      : createActor(machine, { input });
    this.actor.start();
    if (persisted) {
      // An explicit restart from the persisted snapshot (docs/design.md §1).
      this.actor.send({ type: "RESTART", epoch: this.actor.getSnapshot().context.epoch });
    }
    const snap = await waitFor(this.actor, (s) => s.matches("active") || s.status === "done", { timeout: 60_000 });
    if (!snap.matches("active")) {
      const why = `could not ${this.sessionId ? "resume" : "open"} the session: ${snap.context.error ?? "unknown"}`;
      const e = this.openError;
      if (e instanceof TandemError) throw new TandemError(e.code, why, { cause: e, context: e.context });
      throw new TandemError(ErrorCode.NoManager, why, { cause: e });
    }
  }

  private async call<T>(op: "open" | "resume" | "close", body: unknown, timeoutMs = 30_000): Promise<T> {
    const rt = this.client.rt;
    const fatal = (err: unknown) => err instanceof TandemError && !err.retryable;
    // Waiting is never silent: after 3 s without an answer the client says what it waits for.
    const started = Date.now();
    let told = false;
    const onFailure = (err: unknown) => {
      if (told || Date.now() - started < 3000 || fatal(err)) return;
      told = true;
      const code = err instanceof TandemError ? err.code : undefined;
      this.log.warn({ op, code, waitedMs: Date.now() - started, givesUpAfterMs: timeoutMs }, `no manager has answered ${op} yet; is \`tandem manager\` running against the same NATS and prefix? still trying`);
    };
    return withBackoff(
      () => rt.nc.request(rt.names.clientCall(op, this.client.id), encode(body), { timeout: Math.min(REQUEST_TIMEOUT, rt.config.ackTimeoutMs * 2) }).then((r) => unwrap<T>(r.data)),
      { initialMs: 100, maxMs: 1000, forMs: timeoutMs, fatal, onFailure },
    ).catch((err: unknown) => {
      if (fatal(err)) throw err;
      throw new TandemError(ErrorCode.NoManager, `no manager answered ${op} within ${timeoutMs} ms; is \`tandem manager\` running?`, { cause: err });
    });
  }

  private async openCall(service: string): Promise<{ session: string; epoch: number }> {
    const rep = await this.call<OpenReply>("open", {
      client: this.client.id,
      service,
      ...(this.opts.restart !== undefined ? { restart: this.opts.restart } : {}),
      ...(this.opts.maxPending !== undefined ? { maxPending: this.opts.maxPending } : {}),
      ...(this.opts.window !== undefined ? { window: this.opts.window } : {}),
      ...(this.opts.ordered === false ? { ordered: false } : {}),
      ...(this.opts.hedge !== undefined ? { hedge: this.opts.hedge } : {}),
      ...(this.opts.retry !== undefined ? { retry: this.opts.retry } : {}),
    });
    this.sessionId = rep.session;
    this.maxPending = rep.maxPending;
    this.maxPayload = rep.maxPayload;
    this.attached = true;
    this.client.seeEpoch(rep.epoch);
    this.log = this.log.child({ session: rep.session });
    return { session: rep.session, epoch: rep.epoch };
  }

  /** @internal the resume in flight, if any (deliveries arriving meanwhile wait for it). */
  afterResume(): Promise<unknown> | null {
    return this.resuming;
  }

  /** One resume per incarnation: a manager restart arriving meanwhile must not start another. */
  private resuming: Promise<{ session: string; epoch: number }> | null = null;

  private resumeCall(session: string): Promise<{ session: string; epoch: number }> {
    if (this.attached) return Promise.resolve({ session, epoch: this.epoch });
    this.resuming ??= this.doResume(session).finally(() => (this.resuming = null));
    return this.resuming;
  }

  private async doResume(session: string): Promise<{ session: string; epoch: number }> {
    const rep = await this.call<ResumeReply>("resume", { client: this.client.id, session, lastReq: this.delivery.lastReq, taken: this.delivery.taken });
    this.serviceName = rep.service;
    // Resumed by id in a new process: the manager says whether the session is a pool.
    if (rep.pool === true && this.delivery.ordered) this.delivery = new PoolDeliveryCore<DeliverMsg>(Date.now());
    // Requests this process sent that the manager still lacks: send them again (same message
    // id: stored at most once). Says in the log whether JetStream already had them.
    for (let n = rep.lastReq + 1; n <= this.delivery.lastReq; n++) {
      const u = this.unanswered.get(n);
      if (!u) continue;
      const rt = this.client.rt;
      try {
        const ack = await publishToQueue(rt.requester, rt.names.req(this.client.id, session), u.data, {
          msgID: `${session}.${n}`,
          headers: this.requestHeaders(n, rep.epoch, u.kind, u.tp, session),
          timeout: JS_TIMEOUT_MS,
        });
        this.log.warn({ n, managerLastReq: rep.lastReq, duplicate: ack.duplicate, seq: ack.seq }, "the manager lacked a request this session sent; sent it again");
      } catch (err) {
        this.log.warn({ err, n }, "sending a request again failed; the next re-sync retries");
      }
    }
    this.delivery.resumed(rep);
    this.maxPending = rep.maxPending;
    this.maxPayload = rep.maxPayload;
    this.restartData = rep.restart?.data;
    this.storedRestart = rep.restart ? JSON.stringify(rep.restart.data) : undefined;
    this.attached = true;
    this.client.seeEpoch(rep.epoch);
    this.actor?.send({ type: "EPOCH_SEEN", epoch: rep.epoch });
    this.runningAtResume = rep.running;
    const summary = { lastReq: rep.lastReq, taken: rep.taken, pending: rep.requests.length, undelivered: rep.responses.length };
    if (rep.running) this.log.debug({ ...summary, running: rep.running }, "session resumed; its request is still running at its server");
    else this.log.info(summary, "session resumed");
    return { session, epoch: rep.epoch };
  }

  private async closeCall(): Promise<void> {
    await this.call("close", { client: this.client.id, session: this.id });
  }

  /** @internal a manager restarted us: go through `restarting`; delivery re-syncs from `accepted`. */
  restartFromManager(epoch: number): void {
    this.actor?.send({ type: "RESTART", epoch });
  }

  /**
   * Send a request; resolves with the response value (rejects with a TandemError when the
   * handler failed or the request was refused). The request is durable once this call's publish
   * is acknowledged: it is answered even if this process or the manager dies.
   */
  async request(payload: unknown, opts: RequestOptions = {}): Promise<unknown> {
    trace("client.send", this.id, this.delivery.lastReq + 1); // the number send() takes, for sequential use
    const { n, response } = await this.send(payload, opts);
    trace("client.queued", this.id, n);
    const r = await response;
    trace("client.handed", this.id, r.n);
    if (!r.ok) throw r.error!;
    return r.value;
  }

  /**
   * Like request(), but resolves as soon as the request is durably queued, giving its number
   * and a promise of its Response (never rejected: check `ok`), for pipelining on one session.
   */
  async send(payload: unknown, opts: RequestOptions = {}): Promise<{ n: number; response: Promise<Response> }> {
    if (this.resuming) await this.resuming.catch(() => {}); // a re-sync in progress: wait for it
    if (this.closed || !this.attached) throw new TandemError(ErrorCode.Closed, "session is closed");
    if (this.delivery.lastReq - this.delivery.taken >= this.maxPending) {
      throw new TandemError(ErrorCode.Backpressure, `session ${this.id} has ${this.maxPending} pending requests; await responses before sending more`, {
        context: { session: this.id, maxPending: this.maxPending },
      });
    }
    const n = this.delivery.lastReq + 1;
    const kind = opts.kind ?? "request";
    if (opts.traceparent !== undefined && !isTraceParent(opts.traceparent)) {
      throw new TandemError(ErrorCode.Config, `traceparent "${opts.traceparent}" is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)`);
    }
    const tp = opts.traceparent ?? newTraceParent();
    const deadline = deadlineOf(opts);
    const notBefore = notBeforeOf(opts);
    if (opts.retry !== undefined && !fits(V.retry, opts.retry)) {
      throw new TandemError(ErrorCode.Config, `retry options need maxAttempts 1-1000, initialMs and maxMs 0-86400000, factor 1-100, jitter 0-1; got ${JSON.stringify(opts.retry)}`);
    }
    // Receipts handed over but not yet committed ride on this request (one write less): marked
    // as carried once the request's checks are passed, below.
    const carry = this.delivery.carryable();
    const restartJson = opts.restart !== undefined ? JSON.stringify(opts.restart) : undefined;
    const newRestart = restartJson !== undefined && restartJson !== this.storedRestart;
    // Fields set in the wire's order, the optional ones only when present (a spread per field
    // was a copy per field of every request).
    const body: Record<string, unknown> = { n, kind, payload: payload ?? null };
    if (newRestart) body.restart = opts.restart;
    if (carry) Object.assign(body, this.delivery.receipt(carry));
    body.tp = tp;
    if (deadline !== undefined) body.deadline = deadline;
    if (notBefore !== undefined && notBefore > Date.now()) body.notBefore = notBefore;
    if (opts.retry !== undefined) body.retry = opts.retry;
    const data = encode(body);
    // The body bounds the payload: measure the payload alone only when the body is over the limit.
    if (data.length > this.maxPayload) {
      for (const [what, v] of [["payload", payload ?? null], ["restart data", opts.restart]] as const) {
        const size = v === undefined ? 0 : encode(v).length;
        if (size > this.maxPayload) {
          throw new TandemError(ErrorCode.PayloadTooLarge, `${what} is ${size} bytes; the limit is ${this.maxPayload}`, {
            context: { size, limit: this.maxPayload, field: what === "payload" ? "payload" : "restart" },
          });
        }
      }
    }
    // (The stall rule measures silence while waiting: an idle session starts waiting now. Measured
    // from its last delivery, a session opened long ago looked stalled the moment it sent: at
    // 10,000 sessions every request in flight was forced to re-sync.)
    this.delivery.sent(n, Date.now(), notBefore);
    if (carry) this.delivery.carry(carry);
    const response = new Promise<Response>((resolve) => this.waiters.set(n, { resolve }));
    this.observe(response);
    this.unanswered.set(n, { data, kind, tp });
    // Alone: no other request of the session waits for its answer (one at a time).
    if (this.client.traceDest === undefined) await this.outbox.push({ n, data, kind, tp }, this.waiters.size <= 1);
    else await this.publishDurable(n, data, kind, tp);
    if (opts.restart !== undefined) this.restartData = opts.restart;
    if (newRestart) this.storedRestart = restartJson;
    if (carry) this.committed(carry);
    if (deadline !== undefined || opts.signal) this.watchGiveUp(n, deadline, opts.signal);
    return { n, response };
  }

  /** Metrics of one request: sent now, in flight until its response reaches the caller. */
  private observe(response: Promise<Response>): void {
    const m = this.client.rt.metrics.forService(this.serviceName);
    const t0 = performance.now();
    m.requests.inc();
    m.clientInFlight.inc();
    void response.then((r) => {
      m.clientInFlight.dec();
      m.roundTrip.observe((performance.now() - t0) / 1000);
      m.responses.inc(r.ok ? "ok" : "error", r.ok ? "" : (r.error?.code ?? ""));
    });
  }

  /** @internal ready for /readyz: open and attached, no re-sync in progress. */
  get ready(): boolean {
    return this.attached && !this.resuming && !this.closed;
  }

  /**
   * A caller's deadline or abort: the manager is told (a cancel record in the request queue) and
   * records the answer, TANDEM_DEADLINE or TANDEM_CANCELLED unless the real one was stored first;
   * that recorded answer is what the caller gets, as a resumed session would. Should the manager
   * not answer within GIVE_UP_GRACE_MS, the caller is told locally and the delivery, when it
   * comes, is taken without being handed to anyone.
   */
  private watchGiveUp(n: number, deadline: number | undefined, signal: AbortSignal | undefined): void {
    let timer: NodeJS.Timeout | undefined;
    let grace: NodeJS.Timeout | undefined;
    const stop = () => {
      clearTimeout(timer);
      clearTimeout(grace);
      signal?.removeEventListener("abort", onAbort);
      this.giveUps.delete(n);
    };
    const giveUp = (reason: "cancelled" | "deadline") => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      if (!this.waiters.has(n) || this.closed) return stop();
      this.publishDurable(n, encode({ cancel: n, reason }), "control", undefined, `${this.id}.x${n}`).catch(() => {}); // closed: nothing to cancel through
      grace = setTimeout(() => {
        const w = this.waiters.get(n);
        stop();
        if (!w) return;
        this.waiters.delete(n);
        this.delivery.abandon(n);
        const code = reason === "deadline" ? ErrorCode.Deadline : ErrorCode.Cancelled;
        const why = reason === "deadline" ? "passed its deadline" : "was cancelled by its caller";
        w.resolve({ n, ok: false, error: new TandemError(code, `request ${n} of session ${this.id} ${why}; the manager has not confirmed it yet (it will record it)`, { context: { n } }), server: "" });
      }, GIVE_UP_GRACE_MS);
      grace.unref?.();
    };
    const onAbort = () => giveUp("cancelled");
    this.giveUps.set(n, stop);
    if (signal?.aborted) return giveUp("cancelled");
    signal?.addEventListener("abort", onAbort, { once: true });
    if (deadline !== undefined) {
      timer = setTimeout(() => giveUp("deadline"), Math.max(0, deadline - Date.now()));
      timer.unref?.();
    }
  }

  private publishDurable(n: number, data: Uint8Array, kind: RequestKind | "control", tp?: string, msgID = `${this.id}.${n}`): Promise<void> {
    return this.publishRecord(n, data, msgID, this.requestHeaders(n, this.epoch, kind, tp));
  }

  /**
   * Requests of one turn as one record, `{"batch":[...]}` of their own bodies, every request
   * number a Tandem-Request header; its message id names the first and the count, and a retry
   * sends the same record again, so JetStream stores it once.
   */
  private publishBatch(rs: OutgoingRequest[]): Promise<void> {
    const first = rs[0]!;
    const headers = this.requestHeaders(first.n, this.epoch, first.kind, first.tp);
    for (const r of rs.slice(1)) headers.append(Header.Request, String(r.n));
    return this.publishRecord(first.n, batchRecord(rs.map((r) => r.data)), `${this.id}.${first.n}+${rs.length}`, headers);
  }

  private async publishRecord(n: number, data: Uint8Array, msgID: string, headers: ReturnType<typeof makeHeaders>): Promise<void> {
    const rt = this.client.rt;
    // A number once taken must reach the queue, or the session would wait for it forever: retry
    // with the same message id (JetStream keeps one copy).
    // ... until the connection is closed for good (the application closed it): then nothing can
    // reach the queue, and retrying forever only fills the log.
    await withBackoff(() => publishToQueue(rt.requester, rt.names.req(this.client.id, this.id), data, { msgID, headers, timeout: JS_TIMEOUT_MS }), {
      fatal: () => rt.nc.isClosed(),
      onFailure: (err, attempt) => attempt === 6 && !rt.nc.isClosed() && this.log.warn({ err, n }, "queueing keeps failing (NATS unavailable?); retrying"),
    }).catch((err: unknown) => {
      if (!rt.nc.isClosed()) throw err;
      throw new TandemError(ErrorCode.Closed, `session ${this.id}: the NATS connection is closed; request ${n} was not queued`, { context: { session: this.id, n }, cause: err });
    });
  }

  private requestHeaders(n: number, epoch: number, kind: RequestKind | "control", tp: string | undefined, session = this.id) {
    const h = makeHeaders({ session, request: n, epoch, kind, client: this.client.id, ...(tp !== undefined ? { traceparent: tp } : {}) });
    if (this.client.traceDest !== undefined && kind !== "control") h.set(Header.TraceDest, this.client.traceDest);
    return h;
  }

  /**
   * @internal nothing delivered for a while with requests outstanding: re-sync. Also at once
   * after a reconnect (`reconnected`): deliveries the manager sent meanwhile found nobody.
   */
  async resyncIfStalled(stallMs: number, reconnected = false): Promise<void> {
    if (this.closed || !this.attached || this.resuming) return;
    const d = this.delivery;
    if (!d.stalled(Date.now(), stallMs)) return;
    const state = { outstanding: d.outstanding(), handed: d.handed, accepted: d.accepted, taken: d.taken, silentMs: Date.now() - d.lastDelivery };
    if (reconnected) this.log.info(state, "reconnected to NATS with requests outstanding; re-syncing with the manager");
    d.lastDelivery = Date.now();
    this.attached = false;
    try {
      await this.resumeCall(this.id);
      // A request its server says it is running is long work, not a stall: nothing to warn of.
      if (this.runningAtResume) this.log.debug({ ...state, running: this.runningAtResume }, "waiting on a long request still running at its server");
      else if (!reconnected) this.log.warn(state, "no delivery for a while with requests outstanding; re-synced with the manager");
    } catch (err) {
      this.attached = true;
      this.log.warn({ err }, "re-sync failed; will try again");
    }
  }

  /** @internal a delivery from the manager; true when accepted. */
  accept(d: DeliverMsg): true | TandemError {
    const r = this.delivery.accept(d.n, d, Date.now());
    if (!r.accepted) {
      // Again after a manager restart: already have it. Out of order: refused, it comes again.
      return r.duplicate ? true : new TandemError(ErrorCode.Malformed, `delivery of ${d.n} out of order; expected ${r.duplicate === false ? r.expected : "?"}`);
    }
    void this.pumpTake();
    return true;
  }

  /** @internal */
  rejectWaiter(n: number, error: WireErr): void {
    const w = this.waiters.get(n);
    if (w) {
      this.waiters.delete(n);
      this.delivery.answeredElsewhere(n);
      w.resolve({ n, ok: false, error: TandemError.fromWire(error), server: "manager" });
    }
  }

  /**
   * Hand over, then record "taken" in the queue: in order (I3), each response once to a live
   * application (I2). A receipt is committed when its TAKEN record is durable; an application
   * that dies before that gets the response again on resume (with `takenUpTo` telling it what
   * was committed), so nothing taken is ever lost. Responses with a waiting request() go to it;
   * others (sent by an earlier incarnation of this session) go to responses() on demand.
   */
  private async pumpTake(): Promise<void> {
    if (this.taking) return;
    this.taking = true;
    const d = this.delivery;
    try {
      for (;;) {
        const handOvers = d.handOvers();
        for (const h of handOvers) this.handOver(h);
        // Let the application's code run on what it was handed before committing.
        if (handOvers.length > 0) await new Promise((r) => setImmediate(r));
        // A request sent meanwhile carries the receipt; otherwise commit it on its own.
        const commit = d.receiptDue();
        if (commit === null) {
          // A delivery accepted while we yielded found this pump busy: hand it now, or it waits
          // for the next delivery (a bench run once stalled six sessions 5.5 s on it, until the
          // stall watchdog re-synced them).
          if (d.handable()) continue;
          return;
        }
        try {
          await this.publishDurable(commit, encode(d.receipt(commit)), "control", undefined, `${this.id}.t${commit}`);
        } catch {
          // The connection is closed: the receipt stays uncommitted, and a resume hands these
          // responses again with `takenUpTo` saying so (I2).
          d.receiptFailed();
          return;
        }
        this.committed(commit);
      }
    } finally {
      this.taking = false;
    }
  }

  /** Carry out one hand-over the delivery rules decided. */
  private handOver({ n, delivery: d, to }: HandOver<DeliverMsg>): void {
    this.giveUps.get(n)?.();
    this.unanswered.delete(n); // answered: never sent again
    // Its caller was told already (it gave up): taken, handed to nobody.
    if (to === "nobody") return;
    const resp: Response = d.error ? { n, ok: false, error: TandemError.fromWire(d.error), server: d.server } : { n, ok: true, value: d.ok, server: d.server };
    if (isTraceParent(d.tp)) resp.traceparent = d.tp;
    if (to === "waiter") {
      const w = this.waiters.get(n);
      this.waiters.delete(n);
      w?.resolve(resp);
    } else {
      const next = this.orphanDemand.shift();
      if (next) next({ value: resp, done: false });
      else this.orphanQueue.push(resp);
    }
  }

  private committed(token: number): void {
    if (!this.delivery.committed(token)) return;
    for (const f of this.commitListeners) f(this.delivery.taken);
  }

  /** Called with the watermark each time receipts up to it are committed. */
  onCommit(listener: (takenUpTo: number) => void): () => void {
    this.commitListeners.push(listener);
    return () => {
      this.commitListeners = this.commitListeners.filter((f) => f !== listener);
    };
  }

  /**
   * Responses to requests this process did not send (after a resume, the earlier incarnation's
   * requests). Each is taken when the iterator yields it.
   */
  responses(): AsyncIterableIterator<Response> {
    const it: AsyncIterableIterator<Response> = {
      next: () => {
        const r = this.orphanQueue.shift();
        if (r) return Promise.resolve({ value: r, done: false });
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => {
          this.orphanDemand.push(resolve);
          this.delivery.wantRead();
          void this.pumpTake();
        });
      },
      return: () => Promise.resolve({ value: undefined, done: true }),
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }

  /** Requests of an earlier incarnation still without a taken response. */
  get unclaimed(): number {
    return this.delivery.unclaimed();
  }

  /** What to keep to restart this session in a new process (see TandemClient.resume). */
  snapshot(): PersistedSession {
    return { client: this.client.id, session: this.id, service: this.serviceName, machine: this.actor!.getPersistedSnapshot() };
  }

  /** Close the session: its queues and records are removed. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.actor?.send({ type: "CLOSE" });
    if (this.actor) await waitFor(this.actor, (s) => s.status === "done", { timeout: 30_000 }).catch(() => {});
    this.finish(new TandemError(ErrorCode.Closed, "session closed"));
  }

  /** Stop using the session in this process without closing it (it can be resumed). */
  async detach(): Promise<void> {
    this.finish(new TandemError(ErrorCode.Closed, "client closed; the session can be resumed"));
    this.actor?.stop();
  }

  private finish(err: TandemError): void {
    this.closed = true;
    for (const stop of [...this.giveUps.values()]) stop();
    for (const [n, w] of this.waiters) w.resolve({ n, ok: false, error: err, server: "" });
    this.waiters.clear();
    for (const d of this.orphanDemand) d({ value: undefined, done: true });
    this.orphanDemand = [];
    this.delivery.finish();
    if (this.sessionId) this.client.forget(this.sessionId);
  }
}

/** The absolute deadline (ms since the epoch) a request's options give, if any. */
/** The earliest dispatch (ms since the epoch) a request's options give, if any. */
function notBeforeOf(opts: RequestOptions): number | undefined {
  const at = opts.notBefore instanceof Date ? opts.notBefore.getTime() : opts.notBefore;
  for (const [what, v] of [["notBefore", at], ["delayMs", opts.delayMs]] as const) {
    if (v !== undefined && (!Number.isFinite(v) || v < 0)) throw new TandemError(ErrorCode.Config, `${what} must be a non-negative number of ms (or a Date); got ${String(v)}`);
  }
  const after = opts.delayMs !== undefined ? Date.now() + opts.delayMs : undefined;
  if (at === undefined) return after;
  return after === undefined ? Math.round(at) : Math.round(Math.max(at, after));
}

function deadlineOf(opts: RequestOptions): number | undefined {
  const at = opts.deadline instanceof Date ? opts.deadline.getTime() : opts.deadline;
  const after = opts.timeoutMs !== undefined ? Date.now() + opts.timeoutMs : undefined;
  for (const [what, v] of [["deadline", at], ["timeoutMs", opts.timeoutMs]] as const) {
    if (v !== undefined && (!Number.isFinite(v) || v < 0)) throw new TandemError(ErrorCode.Config, `${what} must be a non-negative number of ms (or a Date); got ${String(v)}`);
  }
  if (at === undefined) return after;
  return after === undefined ? Math.round(at) : Math.round(Math.min(at, after));
}
