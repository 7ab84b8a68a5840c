/**
 * The server session actor: registers a handler for a service, takes work from the manager on
 * `<p>.work.<id>.<session>`, runs it with an AbortSignal, stores server restart data (checkpoints)
 * and the response in the session's response queue. Drives serverSessionMachine.
 */
import type { Msg, Subscription } from "@nats-io/transport-node";
import { createActor, fromPromise, waitFor, type Actor } from "xstate";
import { serverSessionMachine, type ServerSessionEvent } from "../machines/serverSessionMachine.js";
import type { CancelMsg, HeartbeatReply, RequestKind, RestartMsg, RestartRecord, ServerRestartAck, WireErr, WorkMsg } from "../machines/types.js";
import { ErrorCode, handlerErrorToWire, TandemError } from "../runtime/errors.js";
import type { Logger } from "../runtime/logger.js";
import { JS_TIMEOUT_MS, type Runtime } from "../runtime/runtime.js";
import type { ServiceMetrics } from "../runtime/metrics.js";
import { decode, encode, encodedSize, Header, isObject, isToken, makeHeaders, malformed } from "../runtime/wire.js";
import { newId } from "../runtime/ids.js";
import { publishToQueue } from "../runtime/queue-publish.js";
import { pollUntil, withBackoff } from "../runtime/backoff.js";
import { trace } from "../runtime/trace.js";
import { isTraceParent } from "../runtime/trace-context.js";
import { FenceLost, type FencedStore } from "../runtime/stores/store.js";
import { parse, V } from "./schemas.js";
import { batchBytes, batchRecord, TurnBatcher } from "./batches.js";
import { offWhenRefused, ReplyBatcher } from "./reply-batcher.js";
import { checkAddressed, epochProblem, flushed, publishDlq, replyError, replyOk, unwrap } from "./protocol.js";

/** Quiet time before the session machine hears that no request is in the handler (see `note`). */
const IDLE_AFTER_MS = 20;

export interface WorkRequest {
  session: string;
  client: string;
  n: number;
  kind: RequestKind;
  payload: unknown;
  /** The latest server restart data of this session (e.g. progress of work a dead server began). */
  restart: unknown;
  /** Which execution of the request this is (1 = the first; more after failed attempts). */
  attempt: number;
  /** When the caller stops waiting (ms since the epoch), if it gave a deadline: `signal` fires then. */
  deadline: number | undefined;
}

export interface WorkContext {
  /** Fires when the work is cancelled (the caller aborted, its deadline passed, session closed, hedge lost, server stopping). */
  signal: AbortSignal;
  /** Store server restart data now (durable before it resolves); it also goes with the response. */
  checkpoint(data: unknown): Promise<void>;
  /**
   * Long work says it is alive: the server reports its running requests in every heartbeat
   * anyway (so long work is never sent again while this server lives); with data, this also
   * stores it as restart data, as checkpoint() does, for whoever continues after a crash.
   */
  progress(data?: unknown): Promise<void>;
  /**
   * Change the server's external store exactly once for this request (I4): runs fn in the
   * store's transaction and commits unless another duplicate of the request committed first.
   * A duplicate that lost stops here (the server answers with the winner's result).
   */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  commit<R, Tx = any>(fn: (tx: Tx) => Promise<R>): Promise<R>;
  /** The fenced store the server was started with, if any. */
  store: FencedStore | undefined;
  log: Logger;
  /** The request's W3C traceparent (the caller's, or one the client made): for OpenTelemetry. */
  traceparent: string | undefined;
}

export type Handler = (req: WorkRequest, ctx: WorkContext) => unknown | Promise<unknown>;

export interface ServerOptions {
  service: string;
  handler: Handler;
  /** Requests run at once; more wait in line. */
  capacity?: number;
  id?: string;
  /** External store for `ctx.commit` (PgStore, KvStore). */
  store?: FencedStore;
}

/** What a request in a handler needs of its server: one per server, shared by its requests. */
interface RunHost {
  readonly rt: Runtime;
  readonly id: string;
  readonly store: FencedStore | undefined;
  readonly log: Logger;
  readonly stats: { committed: number };
  epoch(): number;
}

/**
 * One request in a handler, and the context its handler gets. Everything a handler may use
 * (its signal, log, checkpoint, commit) is made when the handler first asks for it: an
 * AbortController costs microseconds to make, and a context of closures per request was a fifth
 * of a pool server's allocations; most handlers answer without touching any of it. Getters, not
 * methods, so that a handler may take `const { checkpoint } = ctx`.
 */
class Running implements WorkContext {
  private controller: AbortController | null = null;
  aborted = false;
  reason: unknown = undefined;
  /** Fires the signal at the request's deadline. */
  timer: NodeJS.Timeout | undefined;
  /** The restart data the handler sees: the work's, or the last a checkpoint stored (it goes with the response). */
  restart: unknown;
  /** A checkpoint stored restart data. */
  hasRestart = false;
  /** When the handler started (for the handler-time histogram). */
  t0 = 0;
  readonly session: string;
  readonly n: number;
  readonly subject: string;
  private checkpoints = 0;
  private childLog: Logger | null = null;
  private fns: Pick<WorkContext, "checkpoint" | "progress" | "commit"> | null = null;

  constructor(
    private readonly host: RunHost,
    readonly w: WorkMsg,
  ) {
    this.session = w.session;
    this.n = w.n;
    this.subject = host.rt.names.resp(host.id, w.session);
    this.restart = (w.restart as RestartRecord | null)?.data;
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.aborted) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  get log(): Logger {
    return (this.childLog ??= this.host.log.child({ session: this.session, n: this.n }));
  }

  get store(): FencedStore | undefined {
    return this.host.store;
  }

  get traceparent(): string | undefined {
    return this.w.tp;
  }

  get checkpoint(): WorkContext["checkpoint"] {
    return this.bound().checkpoint;
  }

  get progress(): WorkContext["progress"] {
    return this.bound().progress;
  }

  get commit(): WorkContext["commit"] {
    return this.bound().commit;
  }

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.controller?.abort(reason);
  }

  private bound(): Pick<WorkContext, "checkpoint" | "progress" | "commit"> {
    return (this.fns ??= {
      // Running requests go in every heartbeat; data, when given, is restart data as checkpoint's.
      progress: (data?: unknown) => (data === undefined ? Promise.resolve() : this.storeCheckpoint(data)),
      checkpoint: (data: unknown) => this.storeCheckpoint(data),
      commit: <R, Tx>(fn: (tx: Tx) => Promise<R>) => this.commitOnce(fn as (tx: unknown) => Promise<R>),
    });
  }

  private async commitOnce<R>(fn: (tx: unknown) => Promise<R>): Promise<R> {
    const store = this.host.store;
    if (!store) throw new TandemError(ErrorCode.NoStore, "this server has no store for commit(); start it with a store (--store kv or --store postgres://...)");
    const out = await store.commit({ session: this.session, request: this.n, server: this.host.id }, this.signal, fn);
    if (!out.won) throw new FenceLost(out.result, out.by);
    this.host.stats.committed++;
    return out.result;
  }

  private async storeCheckpoint(data: unknown): Promise<void> {
    const { rt } = this.host;
    // Restart data travels with the next work of the session: bounded as payloads are.
    const size = encodedSize(data);
    if (size > rt.config.maxPayload) {
      throw new TandemError(ErrorCode.PayloadTooLarge, `restart data is ${size} bytes; the limit is ${rt.config.maxPayload} (--max-payload)`, { context: { size, limit: rt.config.maxPayload } });
    }
    this.restart = data;
    this.hasRestart = true;
    this.checkpoints++;
    const w = this.w;
    // The dispatch key makes the id one nobody but this server's work knows.
    const msgID = `${w.session}.${w.n}.c${this.checkpoints}.${w.k}`;
    const body = encode({ n: w.n, k: w.k, restart: data });
    // A slow ack is no reason to fail the work: retry with the same id (stored once).
    const headers = makeHeaders({ session: w.session, request: w.n, epoch: this.host.epoch(), kind: "control", server: this.host.id });
    await withBackoff(() => publishToQueue(rt.requester, this.subject, body, { msgID, headers, timeout: JS_TIMEOUT_MS }), {
      while: () => !this.aborted,
      onFailure: (err, attempt) => attempt === 4 && this.log.warn({ err }, "storing a checkpoint keeps failing; retrying"),
    }).catch((err: unknown) => {
      throw this.aborted ? this.reason : err;
    });
  }
}

/** A response on its way into its session's response queue. */
interface OutgoingResponse {
  subject: string;
  session: string;
  n: number;
  k: string;
  attempt: number;
  tp?: string;
  data: Uint8Array;
}

export class TandemServer {
  readonly id: string;
  /** This process's own id: a server started again under the same `id` is a new incarnation. */
  readonly incarnation = newId(12);
  readonly service: string;
  private readonly log: Logger;
  private readonly capacity: number;
  private actor: Actor<typeof serverSessionMachine> | undefined;
  private subs: Subscription[] = [];
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private epochAskedAt = -Infinity;
  private running = new Map<string, Running>();
  /** How many requests of each session run here (a response is `alone` when its session has no other). */
  private readonly runningBySession = new Map<string, number>();
  /** Requests in the handler now, and whether the machine was last told some are (BUSY). */
  private handling = 0;
  private toldBusy = false;
  private noteScheduled = false;
  private idleTimer: NodeJS.Timeout | undefined;
  private waiting: Array<() => void> = [];
  private active = 0;
  private epoch = 0;
  private stopping = false;
  /** When the last registration, and the last heartbeat, was answered (0: never). */
  private registeredAt = 0;
  private heartbeatOkAt = 0;
  private unwatch: Array<() => void> = [];
  /** Response publishes, those of one session finished in one turn as one record (docs/design.md §6). */
  private readonly outbox = new TurnBatcher<OutgoingResponse>(
    (r) => this.storeOne(r),
    (rs) => this.storeBatch(rs),
    (r) => r.data.length,
    () => batchBytes(this.rt.nc.info?.max_payload),
    (r) => r.session,
  );
  /** Acknowledgements of work, those of one turn for one manager as one message (docs/design.md §6). */
  private readonly replies: ReplyBatcher;
  /** Counters for tests and the CLI. */
  readonly stats = { started: 0, completed: 0, failed: 0, cancelled: 0, duplicates: 0, fenceLost: 0, committed: 0 };
  /** This server's service's metrics, and what its requests in a handler need of it. */
  private readonly metrics: ServiceMetrics;
  private readonly host: RunHost;

  constructor(
    private readonly rt: Runtime,
    private readonly opts: ServerOptions,
  ) {
    if (!isToken(opts.service)) throw new TandemError(ErrorCode.Config, `service name "${opts.service}" must be 1-64 letters, digits, _ or -`);
    this.id = opts.id ?? `${opts.service}-${newId(6)}`;
    this.service = opts.service;
    this.capacity = opts.capacity ?? 64;
    this.log = rt.logger.child({ role: "server", server: this.id, service: this.service });
    this.metrics = rt.metrics.forService(this.service);
    this.host = { rt, id: this.id, store: opts.store, log: this.log, stats: this.stats, epoch: () => this.epoch };
    this.replies = ReplyBatcher.on(rt, this.id);
  }

  static async start(rt: Runtime, opts: ServerOptions): Promise<TandemServer> {
    const s = new TandemServer(rt, opts);
    await s.start();
    return s;
  }

  get state(): string {
    this.applyNoted();
    const v = this.actor?.getSnapshot().value;
    return typeof v === "string" ? v : JSON.stringify(v);
  }

  async start(): Promise<void> {
    const names = this.rt.names;
    const sub = (subject: string, handler: (m: Msg) => Promise<void> | void) => {
      this.subs.push(
        this.rt.nc.subscribe(subject, {
          callback: (err, m) => {
            if (err) return;
            Promise.resolve(handler(m)).catch((e) => this.log.error({ err: e }, "handler failed"));
          },
        }),
      );
    };
    sub(names.hopAll("work", this.id), (m) => this.onWork(m));
    sub(names.hopAll("cancel", this.id), (m) => this.onCancel(m));
    sub(names.srv(this.id, "restart"), (m) => this.onRestart(m));
    // The manager's check that a registration is this server's: only it receives here.
    sub(names.srv(this.id, "ping"), (m) => replyOk(m, { server: this.id, service: this.service }));
    await flushed(this.rt);
    const machine = serverSessionMachine.provide({
      actors: {
        register: fromPromise(() => this.register()),
        reconcile: fromPromise(async ({ input }) => this.reconcile(input.id)),
        drain: fromPromise(() => this.drain()),
      },
    });
    this.actor = createActor(machine, { input: { server: this.id, service: this.service } });
    this.actor.start();
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), this.rt.config.serverHeartbeatMs);
    this.unwatch.push(
      offWhenRefused(this.rt.nc, this.replies, this.id, this.log),
      this.rt.health.add(`server ${this.id}`, () => this.readiness()),
      this.rt.metrics.addCollector(() => this.rt.metrics.serverRegistered.set({ service: this.service, server: this.id }, this.readiness().ready ? 1 : 0)),
      () => this.rt.metrics.serverRegistered.remove({ service: this.service, server: this.id }),
    );
    await waitFor(this.actor, (s) => s.matches("serving"), { timeout: 60_000 });
  }

  /** Ready (/readyz): serving, and the primary answered the registration or a heartbeat lately. */
  private readiness(): { ready: boolean; why: string } {
    if (this.stopping) return { ready: false, why: "stopping" };
    if (!this.actor?.getSnapshot().matches("serving")) return { ready: false, why: `${this.state}: waiting for a manager to answer its registration` };
    const age = Date.now() - Math.max(this.registeredAt, this.heartbeatOkAt);
    return age < this.rt.config.serverTimeoutMs
      ? { ready: true, why: `registered at epoch ${this.epoch}` }
      : { ready: false, why: `no answer from a primary for ${age} ms (its heartbeats go unanswered)` };
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const u of this.unwatch.splice(0)) u();
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.idleTimer);
    this.send({ type: "STOP" });
    if (this.actor) await waitFor(this.actor, (s) => s.status === "done", { timeout: 30_000 }).catch(() => {});
    for (const s of this.subs) s.unsubscribe();
  }

  private async register(): Promise<{ epoch: number }> {
    if (this.stopping) throw new Error("stopping");
    // Waiting is never silent: a server with no manager says so within seconds, and again now
    // and then, with what to check, rather than nothing at all.
    const started = Date.now();
    let toldAt = 0;
    const waiting = (err: unknown) => {
      this.log.debug({ err }, "no manager answered the registration yet; retrying");
      const waited = Date.now() - started;
      if (waited < 2000 || Date.now() - toldAt < 30_000) return;
      toldAt = Date.now();
      const code = err instanceof TandemError ? err.code : undefined;
      this.log.warn({ waitedMs: waited, code }, "no manager answers this server's registration; is `tandem manager` running against the same NATS and prefix? still trying");
    };
    const r = await withBackoff(
      () =>
        this.rt.nc.request(
          this.rt.names.register(this.id, this.service),
          encode({ server: this.id, service: this.service, capacity: this.capacity, incarnation: this.incarnation }),
          { timeout: this.rt.config.ackTimeoutMs },
        ).then((m) => unwrap<{ epoch: number }>(m.data)),
      { initialMs: 100, maxMs: 2000, while: () => !this.stopping, onFailure: waiting },
    );
    this.epoch = Math.max(this.epoch, r.epoch);
    this.registeredAt = Date.now();
    this.log.info({ epoch: r.epoch }, "registered with the manager");
    return { epoch: r.epoch };
  }

  private async heartbeat(): Promise<void> {
    if (this.stopping || !this.actor?.getSnapshot().matches("serving")) return;
    try {
      const r = await this.rt.nc.request(
        this.rt.names.heartbeat(this.id),
        // The requests running here: long work is alive, not lost (bounded by capacity + queue).
        encode({ server: this.id, epoch: this.epoch, working: this.active, running: [...this.running.values()].slice(0, 10_000).map((r) => [r.session, r.n]) }),
        { timeout: this.rt.config.serverHeartbeatMs * 2 },
      );
      const rep = unwrap<HeartbeatReply>(r.data);
      if (!Number.isSafeInteger(rep.epoch) || rep.epoch < this.epoch) return; // a stale manager answered; ignore it (I5)
      this.heartbeatOkAt = Date.now();
      this.epoch = rep.epoch; // the primary's answer to our own request: how epochs move more than one
      if (rep.reregister) {
        this.log.info({ epoch: rep.epoch }, "manager does not know this server; registering again");
        this.send({ type: "REREGISTER" });
      }
    } catch {
      /* no manager right now: the registration or the next heartbeat will tell */
    }
  }

  private stale(m: Msg, epoch: unknown): boolean {
    const err = this.staleError(epoch);
    if (!err) return false;
    replyError(m, err);
    void publishDlq(this.rt, err, m.subject, m.headers, m.data);
    return true;
  }

  /** Why a message of this epoch is refused, or null (and the epoch is learned) when it is current. */
  private staleError(epoch: unknown): TandemError | null {
    const problem = epochProblem(epoch, this.epoch);
    if (!problem) {
      this.epoch = epoch as number;
      return null;
    }
    const err = new TandemError(
      ErrorCode.StaleEpoch,
      problem === "stale"
        ? `message from manager epoch ${String(epoch)} but this server has seen ${this.epoch}`
        : `message claims manager epoch ${String(epoch)}, more than one past the ${this.epoch} this server knows; only the manager's replies move it further`,
      { context: { epoch: typeof epoch === "number" && Number.isFinite(epoch) ? epoch : String(epoch), seen: this.epoch, server: this.id } },
    );
    // A real jump (takeovers in quick succession) is learned from the next heartbeat's reply:
    // ask now rather than at the next beat (at most once a second).
    if (problem === "implausible" && performance.now() - this.epochAskedAt > 1000) {
      this.epochAskedAt = performance.now();
      void this.heartbeat();
    }
    return err;
  }

  private onRestart(m: Msg): void {
    let msg: RestartMsg;
    try {
      msg = parse(V.restart, decode(m.data)) as RestartMsg;
    } catch (err) {
      replyError(m, err as TandemError);
      return;
    }
    if (this.stale(m, msg.epoch)) return;
    const id = ++this.restartSeq;
    this.pendingRestarts.set(id, { m, msg });
    this.send({ type: "RESTART", epoch: msg.epoch, id });
    // Not serving (still registering, or stopping): the restart is answered all the same.
    if (this.pendingRestarts.has(id)) this.reconcile(id);
  }

  private restartSeq = 0;
  /** Restarts sent into the machine, by id, until `reconcile` answers them. */
  private readonly pendingRestarts = new Map<number, { m: Msg; msg: RestartMsg }>();

  /** The machine's `restarting`: report the restarted sessions' work still running here, so it is not sent twice. */
  private reconcile(id: number): void {
    const p = this.pendingRestarts.get(id);
    if (!p) return;
    this.pendingRestarts.delete(id);
    const mine = new Set(p.msg.sessions.map((s) => s.session));
    const working = [...this.running.values()].filter((r) => mine.has(r.session)).map((r) => ({ session: r.session, n: r.n }));
    this.log.info({ epoch: p.msg.epoch, sessions: p.msg.sessions.length, working: working.length }, "restart from the manager");
    replyOk<ServerRestartAck>(p.m, { server: this.id, working });
  }

  private onCancel(m: Msg): void {
    try {
      const v: CancelMsg = parse(V.cancel, decode(m.data));
      checkAddressed(this.rt.names, m.subject, v.session, "a cancel");
      if (this.stale(m, v.epoch)) return;
      const r = this.running.get(`${v.session}.${v.n}`);
      if (r) {
        r.abort(v.reason === "deadline" ? new TandemError(ErrorCode.Deadline, `request ${v.n} of session ${v.session} passed its deadline (the manager gave it up)`) : new TandemError(ErrorCode.Cancelled, "cancelled by the manager"));
        this.stats.cancelled++;
      }
      replyOk(m, { cancelled: r !== undefined });
    } catch (err) {
      const te = err instanceof TandemError ? err : malformed(String(err));
      replyError(m, te);
      void publishDlq(this.rt, te, m.subject, m.headers, m.data);
    }
  }

  /**
   * Work started (+1) and finished (-1) are counted here; the machine (ready <-> working) hears
   * only when that count goes between none and some, after the current I/O turn, so a machine
   * step (tens of µs) is neither on the way from a work message to its handler nor paid per
   * request under load (one per request, summed per turn, was a fifth of a busy server's CPU).
   * Idle is told only after `IDLE_AFTER_MS` without work: a pool's server gets its work in
   * batches it finishes within the turn, and two machine steps a batch were an eighth of its CPU.
   * Any other event applies it first.
   */
  private note(delta: 1 | -1): void {
    this.handling += delta;
    const busy = this.handling > 0;
    // Only a change between none and some is the machine's business.
    if (busy === this.toldBusy) return;
    if (busy) {
      if (this.noteScheduled) return;
      this.noteScheduled = true;
      setImmediate(() => this.applyNoted());
    } else if (this.idleTimer === undefined) {
      this.idleTimer = setTimeout(() => {
        this.idleTimer = undefined;
        this.applyNoted();
      }, IDLE_AFTER_MS);
      this.idleTimer.unref();
    }
  }

  private applyNoted(): void {
    this.noteScheduled = false;
    const busy = this.handling > 0;
    if (busy === this.toldBusy) return;
    this.toldBusy = busy;
    this.actor?.send({ type: busy ? "BUSY" : "IDLE" });
  }

  private send(e: ServerSessionEvent): void {
    this.applyNoted();
    this.actor?.send(e);
  }

  private onWork(m: Msg): void {
    let w: WorkMsg;
    try {
      const raw = decode(m.data);
      if (isObject(raw) && "batch" in raw) return this.onWorkBatch(m, raw);
      w = parse(V.work, raw) as WorkMsg;
      if (w.tp !== undefined && !isTraceParent(w.tp)) delete w.tp;
      checkAddressed(this.rt.names, m.subject, w.session, "work");
      trace("server.work", w.session, w.n);
    } catch (err) {
      const te = err instanceof TandemError ? err : malformed(String(err));
      replyError(m, te);
      void publishDlq(this.rt, te, m.subject, m.headers, m.data);
      return;
    }
    if (this.stale(m, w.epoch)) return;
    const r = this.take(w);
    if (r instanceof TandemError) replyError(m, r);
    else replyOk(m, r, this.replies);
  }

  /**
   * Several work messages of one session (a window's dispatches in one turn of the manager). Each
   * element is checked as a work message of its own: one that does not fit, or comes from a stale
   * epoch, is refused and dead-lettered with its own bytes; the others are taken. The reply says
   * per element, in order.
   */
  private onWorkBatch(m: Msg, raw: Record<string, unknown>): void {
    const b = parse(V.workBatch, raw);
    const results: Array<{ n: number; error?: WireErr }> = [];
    for (const item of b.batch) {
      const n = isObject(item) && Number.isSafeInteger(item.n) ? Number(item.n) : 0;
      let w: WorkMsg;
      try {
        w = parse(V.work, item) as WorkMsg;
        if (w.tp !== undefined && !isTraceParent(w.tp)) delete w.tp;
        checkAddressed(this.rt.names, m.subject, w.session, "work");
      } catch (err) {
        const te = err instanceof TandemError ? err : malformed(String(err));
        results.push({ n, error: te.toWire() });
        void publishDlq(this.rt, te, m.subject, m.headers, encode(item));
        continue;
      }
      const stale = this.staleError(w.epoch);
      if (stale) {
        results.push({ n, error: stale.toWire() });
        void publishDlq(this.rt, stale, m.subject, m.headers, encode(item));
        continue;
      }
      trace("server.work", w.session, w.n);
      const r = this.take(w);
      results.push(r instanceof TandemError ? { n, error: r.toWire() } : { n });
    }
    replyOk(m, { results }, this.replies);
  }

  /** Take one work message whose epoch is current: start it, or say it runs here already. */
  private take(w: WorkMsg): { accepted: true; running?: true } | TandemError {
    if (this.stopping) return new TandemError(ErrorCode.Unavailable, "server is stopping");
    // Work reaches this process's subjects before its registration does: a manager that has
    // not seen it register takes it for the process that had this id before, and a death now
    // would not cost the request an attempt (a poison request once ran 4 times for 3 attempts).
    // Refused, the work comes again once the manager knows this process (docs/design.md §9).
    // The state's value, not matches(): that builds a state value per call, on every request.
    if (!this.actor || this.actor.getSnapshot().value === "registering") {
      return new TandemError(ErrorCode.Unavailable, `server ${this.id} has not registered with the manager yet; the work is sent again once it has`);
    }
    const key = `${w.session}.${w.n}`;
    if (this.running.has(key)) {
      // Sent again after a manager restart while still running here: one execution is enough.
      this.stats.duplicates++;
      return { accepted: true, running: true };
    }
    const run = new Running(this.host, w);
    this.running.set(key, run);
    this.runningBySession.set(w.session, (this.runningBySession.get(w.session) ?? 0) + 1);
    if (w.deadline !== undefined) {
      const ms = w.deadline - Date.now();
      const expire = () => run.abort(new TandemError(ErrorCode.Deadline, `request ${w.n} of session ${w.session} passed its deadline`));
      if (ms <= 0) expire();
      else run.timer = setTimeout(expire, ms);
    }
    // After the acknowledgement is on its way (the caller replies before this microtask runs, so
    // its write is queued first): a handler that computes for a long time without yielding must
    // not hold the acknowledgement back, or the manager would give its work to another server.
    queueMicrotask(() => void this.execute(w, run));
    if (w.copy !== undefined) {
      // A hedged copy: record that this server took it (shown by `tandem status --session`).
      const rec = { server: this.id, n: w.n, copy: w.copy, at: new Date().toISOString() };
      this.rt.kv.sessions.put(`${w.session}.took.${w.n}.${this.id}`, encode(rec)).catch((err) => this.log.debug({ err }, "could not record a hedged copy"));
    }
    return { accepted: true };
  }

  /** A free slot is taken at once (no await), so an idle server's handler starts synchronously. */
  private slot(): Promise<void> | undefined {
    if (this.active < this.capacity) {
      this.active++;
      return undefined;
    }
    return new Promise<void>((r) => this.waiting.push(r)).then(() => {
      this.active++;
    });
  }

  private release(): void {
    this.active--;
    this.waiting.shift()?.();
  }

  private async execute(w: WorkMsg, run: Running): Promise<void> {
    const key = `${w.session}.${w.n}`;
    const queued = this.slot();
    if (queued) await queued;
    this.note(1);
    this.stats.started++;
    let body: Record<string, unknown>;
    const subject = run.subject;
    run.t0 = performance.now();
    this.metrics.serverInFlight.inc();
    try {
      const result = await this.opts.handler(
        { session: w.session, client: w.client, n: w.n, kind: w.kind, payload: w.payload, restart: run.restart, attempt: w.attempt ?? 1, deadline: w.deadline },
        run,
      );
      body = { n: w.n, k: w.k, ok: result ?? null };
      this.stats.completed++;
      this.handled(run, "ok");
    } catch (err) {
      if (err instanceof FenceLost) {
        this.handled(run, "ok");
        // Another duplicate's update is the applied one: answer with its result, change nothing.
        this.stats.fenceLost++;
        run.log.info({ winner: err.by }, "another duplicate committed this update first; answering with its result");
        body = { n: w.n, k: w.k, ok: err.result ?? null };
        if (run.hasRestart) body.restart = run.restart;
        await this.storeResponse(subject, w, body);
        this.finish(key);
        return;
      }
      if (run.aborted) {
        // Cancelled work leaves no response: the request is answered elsewhere or not at all.
        this.handled(run, "cancelled");
        this.finish(key);
        return;
      }
      const error = handlerErrorToWire(err);
      body = { n: w.n, k: w.k, error };
      this.stats.failed++;
      this.handled(run, error.retryable ? "retry" : "error", error.code);
      if (error.retryable) run.log.info({ err, attempt: w.attempt ?? 1 }, "handler failed with a retryable error; the manager retries it after its back-off");
      else run.log.warn({ err }, "handler failed; the client gets the error");
    }
    if (run.hasRestart) body.restart = run.restart;
    if (run.aborted) {
      this.finish(key);
      return;
    }
    trace("server.done", w.session, w.n);
    await this.storeResponse(subject, w, body);
    trace("server.stored", w.session, w.n);
    this.finish(key);
  }

  private handled(run: Running, outcome: "ok" | "error" | "retry" | "cancelled", code = ""): void {
    this.metrics.serverInFlight.dec();
    this.metrics.handlerSeconds.observe((performance.now() - run.t0) / 1000);
    this.metrics.handled.inc(outcome, code);
  }

  private finish(key: string): void {
    const run = this.running.get(key);
    clearTimeout(run?.timer);
    this.running.delete(key);
    if (run) {
      const left = (this.runningBySession.get(run.session) ?? 1) - 1;
      if (left > 0) this.runningBySession.set(run.session, left);
      else this.runningBySession.delete(run.session);
    }
    this.release();
    this.note(-1);
  }

  /**
   * The response must reach the queue. Responses of one session finished in the same turn go as
   * one record (docs/design.md §6); the only one of its session here goes at once.
   */
  private storeResponse(subject: string, w: WorkMsg, body: Record<string, unknown>): Promise<void> {
    if (w.tp !== undefined) body.tp = w.tp;
    const alone = (this.runningBySession.get(w.session) ?? 0) <= 1;
    return this.outbox.push({ subject, session: w.session, n: w.n, k: w.k, attempt: w.attempt ?? 1, ...(w.tp !== undefined ? { tp: w.tp } : {}), data: encode(body) }, alone);
  }

  private storeOne(r: OutgoingResponse): Promise<void> {
    // Not `<session>.<n>` alone: anyone able to write a response could take that id first.
    // Per attempt: a retry on the same server stores its own answer.
    const headers = makeHeaders({ session: r.session, request: r.n, epoch: this.epoch, kind: "response", server: this.id, ...(r.tp !== undefined ? { traceparent: r.tp } : {}) });
    return this.storeRecord(r, r.data, `${r.session}.${r.n}.${r.k}.${r.attempt}`, headers);
  }

  /** `{"batch":[...]}` of the responses' own bodies, every request number a Tandem-Request header; its id is its first element's and the count. */
  private storeBatch(rs: OutgoingResponse[]): Promise<void> {
    const first = rs[0]!;
    const headers = makeHeaders({ session: first.session, request: first.n, epoch: this.epoch, kind: "response", server: this.id, ...(first.tp !== undefined ? { traceparent: first.tp } : {}) });
    for (const r of rs.slice(1)) headers.append(Header.Request, String(r.n));
    return this.storeRecord(first, batchRecord(rs.map((r) => r.data)), `${first.session}.${first.n}.${first.k}.${first.attempt}+${rs.length}`, headers);
  }

  /** Retry (same message id, so at most one is stored). */
  private async storeRecord(first: OutgoingResponse, data: Uint8Array, msgID: string, headers: ReturnType<typeof makeHeaders>): Promise<void> {
    const opts = { msgID, headers, timeout: JS_TIMEOUT_MS };
    let failures = 0;
    await withBackoff(() => publishToQueue(this.rt.requester, first.subject, data, opts), {
      // Stopping, it gives up after 20 more tries: another server redoes the work.
      while: () => !this.stopping || failures <= 21,
      onFailure: (err) => ++failures === 6 && this.log.warn({ err, session: first.session, n: first.n }, "storing a response keeps failing; retrying"),
    }).catch((err: unknown) => this.log.error({ err, session: first.session, n: first.n }, "could not store a response before stopping; another server will redo it"));
  }

  /** Drain: finish the work in hand (bounded), then stop. */
  private async drain(): Promise<void> {
    await pollUntil(() => this.running.size === 0, "the work in hand to finish", 10_000).catch(() => {});
    for (const r of this.running.values()) r.abort(new TandemError(ErrorCode.Cancelled, "server stopping"));
  }
}
