/**
 * The manager's routing table: every client-server session with its queues and cursors.
 * Pure decisions: each method takes an event (and the time, injected), updates the table and
 * returns the effects the manager actor must carry out. No I/O, no timers, no clock of its own.
 *
 * Queues are JetStream streams; the table holds what of them is still needed:
 *  - requests with n > answered (to dispatch, or redo after a server dies),
 *  - responses with n > taken (to deliver, or deliver again after a client restarts).
 * Cursors per session: lastReq (highest n queued), answered (all n <= answered have a stored
 * response), taken (the application took all responses <= taken), delivered (the live client
 * incarnation accepted up to here; volatile).
 */
import { DEFAULT_HEDGE_BUDGET, HedgeBudget, type HedgeBudgetJSON, type HedgeBudgetOptions } from "./hedgeBudget.js";
import { countFailure, isRetryable, newAttempts, resolvePolicy, type AttemptState } from "./retryPolicy.js";
import type {
  ClientRestartAck,
  HedgeOptions,
  RequestKind,
  RestartRecord,
  RestartSession,
  RetryOptions,
  ServerRestartAck,
  WireErr,
} from "./types.js";

export interface CoreLimits {
  maxPending: number;
  maxPayload: number;
  serverTimeoutMs: number;
  ackTimeoutMs: number;
  /**
   * Bytes of requests and responses the table may hold in memory, per session, per client and in
   * all (docs/design.md §8). A request past one of them is answered TANDEM_BACKPRESSURE, as one
   * past maxPending is: requests sent with a gap in their numbers (n = 2..1001 of 200 kB each)
   * once grew a manager by 325 MB in 4 s until its heap gave out.
   */
  maxSessionBytes?: number;
  maxClientBytes?: number;
  maxHeldBytes?: number;
  /** Hedging budget settings (DEFAULT_HEDGE_BUDGET when absent). */
  hedge?: HedgeBudgetOptions;
}

/** Defaults of the byte bounds above (README: Limits and hostile input). */
export const DEFAULT_BYTE_LIMITS = {
  maxSessionBytes: 16 * 1024 * 1024,
  maxClientBytes: 64 * 1024 * 1024,
  maxHeldBytes: 512 * 1024 * 1024,
} as const;

export interface PendingRequest {
  kind: RequestKind;
  payload: unknown;
  seq: number;
  /** Rejected (too large, over the pending limit): answered by an error response, never dispatched. */
  rejected: boolean;
  /** W3C traceparent the client gave the request, passed on to its work message. */
  tp?: string;
  /** Bytes it holds in the table (its payload's size; 0 once rejected). */
  bytes?: number;
  /** Read on replay past the byte bounds: the payload is not held; read it from the queue at `seq`. */
  evicted?: boolean;
  /** The request's own retry policy (over the session's). */
  retry?: RetryOptions;
  /** Past this time (core clock) it is answered TANDEM_DEADLINE and never dispatched again. */
  deadline?: number;
  /** Not dispatched before this time (core clock): a delayed request. It holds its place (I3). */
  notBefore?: number;
}

export interface StoredResponse {
  ok?: unknown;
  error?: WireErr;
  server: string;
  seq: number;
  /** The request's traceparent, passed on to its delivery. */
  tp?: string;
  /** Bytes it holds in the table (the size of its message). */
  bytes?: number;
}

export interface SessionEntry {
  id: string;
  client: string;
  service: string;
  maxPending: number;
  hedge: HedgeOptions | null;
  server: string | null;
  /** The assigned server acknowledged a restart for this session (or got it fresh). */
  serverSynced: boolean;
  lastReq: number;
  answered: number;
  taken: number;
  delivered: number;
  delivering: number;
  deliverRetryAt: number;
  deliverAttempts: number;
  /**
   * Requests at a server now, by number: at most `window` of them, all in
   * (answered, answered + window] (docs/design.md §6, windows).
   */
  inFlight: Map<number, InFlight>;
  /** Requests of the session that may be at its server at once (1: one at a time). */
  window: number;
  /**
   * False for an unordered pool (docs/design.md §6, pools): each request goes to any server of the
   * service with room, and responses are delivered as they complete. A pool has no one server
   * (`server` stays null): `synced` says which servers may take its work in this epoch.
   */
  ordered: boolean;
  /** Pools: servers restarted with this session in this epoch (or live when it opened). */
  synced: Set<string>;
  /** Pools: servers a restart naming this session was sent to, not yet acknowledged. */
  restarting: Set<string>;
  /** Pools: responses the client took above `taken` (its receipts name them). */
  takenAlso: Set<number>;
  /** Pools: responses the live client accepted above `delivered`. */
  deliveredAlso: Set<number>;
  /** Pools: deliveries in flight (in order, `delivering` is the highest one). */
  deliveringSet: Set<number>;
  dispatchRetryAt: number;
  dispatchAttempts: number;
  clientRestart: RestartRecord | null;
  serverRestart: RestartRecord | null;
  requests: Map<number, PendingRequest>;
  responses: Map<number, StoredResponse>;
  /** Bytes of `requests` and `responses` (counted against CoreLimits' byte bounds). */
  bytes: number;
  dirty: boolean;
  /** The session's retry policy (given at open). */
  retry: RetryOptions | null;
  /** Failed attempts of unanswered requests, from the attempt records in the response queue. */
  attempts: Map<number, AttemptState>;
  /**
   * Requests whose server died holding them: not dispatched again until the record of that
   * failed attempt is read back from the queue (so a failover cannot forget the attempt).
   */
  awaitingAttempt: Set<number>;
  /**
   * Requests that were at a server together when it died: one of them may be what killed it, so
   * until each is answered the session runs one request at a time and a poison request takes
   * only itself down, not its window's neighbours again (docs/design.md §6). In memory only.
   */
  suspects: Set<number>;
  /**
   * The server each unanswered request was last sent to, acknowledged or not: a server may
   * run work whose acknowledgement never came back (a process that ends right after taking it),
   * so its death costs that request an attempt even when the table has no dispatch open.
   */
  sentTo: Map<number, string>;
}

/** A request at a server. */
export interface InFlight {
  server: string;
  /** When it went out (for the learned hedge delay and the served time). */
  at: number;
  acked: boolean;
  /** When the server last said (in its heartbeat) it is running it. */
  runningAt: number;
}

export interface ServerEntry {
  id: string;
  service: string;
  capacity: number;
  lastSeen: number;
  alive: boolean;
  /** Known only from a backup: not heard from since this manager started. */
  presumed: boolean;
  restartRetryAt: number;
  restartAttempts: number;
  restartInFlight: boolean;
  /** The process behind the id, as it said when it registered (unknown when presumed). */
  incarnation?: string;
}

export interface ClientEntry {
  id: string;
  /** The client acknowledged this manager epoch (restart or open/resume). */
  synced: boolean;
  retryAt: number;
  attempts: number;
  inFlight: boolean;
}

/** The persisted form of a session (bucket tandem_sessions). */
export interface SessionRecord {
  v: 1;
  session: string;
  client: string;
  service: string;
  maxPending: number;
  /** Absent: 1 (records written before windows). */
  window?: number;
  /** An unordered pool (absent: ordered). */
  pool?: true;
  /** Pools: receipts above `taken`. */
  takenAlso?: number[];
  hedge?: HedgeOptions;
  retry?: RetryOptions;
  server: string | null;
  status: "open";
  lastReq: number;
  answered: number;
  taken: number;
  /** Epoch of the manager that wrote it: a lower epoch may not overwrite it (I5). */
  epoch: number;
}

/** The persisted cursor of the whole table (bucket tandem_ctl, key `cursor`). */
export interface CursorRecord {
  v: 1;
  epoch: number;
  /** Last stream sequences the table has applied. */
  reqSeq: number;
  respSeq: number;
  /** Replay must start here to rebuild pending requests and untaken responses. */
  reqFrom: number;
  respFrom: number;
  services: string[];
  /** capacity: absent in cursors written before it was recorded (then 1 until the server registers). */
  servers: Array<{ id: string; service: string; capacity?: number }>;
  /** Hedging budget and learned delay per service (survive a failover). */
  hedging?: Record<string, HedgeBudgetJSON>;
}

/** What a work message carries of its request and session, as the dispatch decided it. */
export interface DispatchWork {
  client: string;
  kind: RequestKind;
  /** Undefined when `evicted`: read it from the request queue at `seq`. */
  payload: unknown;
  seq: number;
  evicted?: boolean;
  tp?: string;
  /** Core clock. */
  deadline?: number;
  /** The session's latest server restart data. */
  restart: RestartRecord | null;
  /** 1 on the first execution. */
  attempt: number;
}

export type Effect =
  /** Send request n to `server`: `work` is what the work message carries (read at the decision). */
  | { type: "dispatch"; server: string; session: string; n: number; service: string; hedged: boolean; work: DispatchWork }
  | { type: "cancel"; server: string; session: string; n: number; reason: "deadline" | "cancelled" }
  | { type: "deliver"; client: string; session: string; n: number; service: string; response: StoredResponse }
  /**
   * A hedged session's request got its (first, winning) stored response. `others`: live servers
   * of the service besides the winner (where copies a proxy does not know of may run: after a
   * takeover); `replaying`: read while rebuilding (answered before this epoch).
   */
  | { type: "answered"; session: string; n: number; server: string; others: string[]; replaying: boolean }
  /** A response read live for the request dispatched `ms` ago (core clock): for metrics. */
  | { type: "served"; service: string; session: string; n: number; ms: number; ok: boolean }
  | { type: "putRestart"; session: string; side: "client" | "server"; record: RestartRecord }
  | { type: "storeError"; client: string; session: string; n: number; error: WireErr }
  | { type: "notify"; client: string; session: string; n: number; error: WireErr }
  /** `reqSeq`: the request queue's message the entry is about (its bytes go with the entry). */
  | { type: "dlq"; code: string; message: string; context: Record<string, unknown>; reqSeq?: number }
  /** Write the record of a failed attempt (its server died holding it) to the session's response queue. */
  | { type: "recordAttempt"; session: string; n: number; server: string; error: WireErr; at: number }
  | { type: "restartServer"; server: string; sessions: string[] }
  | { type: "restartClient"; client: string; sessions: string[] }
  | { type: "report"; level: "info" | "warn"; message: string; context: Record<string, unknown> };

const MANAGER = "manager";

/** What a request says of how it is run: its retry policy, its deadline, its earliest dispatch. */
/** The request's retry policy, deadline and delay onto its table entry (set, not spread: this runs per request). */
function withFailureFields(req: PendingRequest, m: { retry?: RetryOptions; deadline?: number; notBefore?: number }): PendingRequest {
  if (m.retry !== undefined) req.retry = m.retry;
  if (m.deadline !== undefined) req.deadline = m.deadline;
  if (m.notBefore !== undefined) req.notBefore = m.notBefore;
  return req;
}

function newer(a: RestartRecord | null, b: RestartRecord): boolean {
  if (!a) return true;
  return b.n > a.n || (b.n === a.n && b.seq >= a.seq);
}

/** A live server entry; `presumed`: known from a backup, not yet heard from in this epoch. */
/**
 * Live, a server answers only work the manager dispatched after reading its request, so a
 * response or checkpoint for a request number past the session's last is forged (one with
 * n = 2^53 once set the session's count so high it answered TANDEM_BACKPRESSURE forever). On
 * replay the two queues are read independently and a response may come before its request.
 */
function beyondLastRequest(s: SessionEntry, m: { seq: number; n: number; server?: string }, what: string): Effect {
  const message = `a ${what} for request ${m.n} of session ${s.id}, which has sent ${s.lastReq}: refused`;
  return { type: "dlq", code: "TANDEM_MALFORMED", message, context: { client: s.client, session: s.id, n: m.n, lastReq: s.lastReq, server: m.server ?? null, seq: m.seq } };
}

function restartTooLarge(s: SessionEntry, m: { seq: number; n: number; server?: string; restartSize?: number }, limit: number): Effect {
  const message = `server restart data of ${m.restartSize} bytes for request ${m.n} of session ${s.id}; the limit is ${limit}: not kept`;
  return { type: "dlq", code: "TANDEM_PAYLOAD_TOO_LARGE", message, context: { client: s.client, session: s.id, n: m.n, server: m.server ?? null, size: m.restartSize, limit, seq: m.seq } };
}

function newServer(id: string, service: string, capacity: number, now: number, presumed: boolean): ServerEntry {
  return { id, service, capacity, lastSeen: now, alive: true, presumed, restartRetryAt: 0, restartAttempts: 0, restartInFlight: false };
}

function bump(m: Map<string, number>, key: string, by: number): void {
  const v = (m.get(key) ?? 0) + by;
  if (v > 0) m.set(key, v);
  else m.delete(key);
}

function backoff(base: number, attempts: number): number {
  return Math.min(base * 2 ** Math.min(attempts, 5), 10_000);
}

export class ManagerCore {
  readonly sessions = new Map<string, SessionEntry>();
  readonly servers = new Map<string, ServerEntry>();
  readonly clients = new Map<string, ClientEntry>();
  readonly services = new Set<string>();
  /** Per service: hedging budget and observed latencies. */
  readonly hedging = new Map<string, HedgeBudget>();
  /** Sessions closed since the last snapshot (for backups). */
  private removed: string[] = [];
  /**
   * The queues' cursors: the last stream sequence of each that the table has applied. The core
   * owns them: the shell says what it read (`passed`), never sets them.
   */
  private cursors = { req: 0, resp: 0 };
  /** Set while a targeted replay (`offCursor`) applies old entries: they move no cursor. */
  private cursorsHeld = false;

  get reqSeq(): number {
    return this.cursors.req;
  }

  get respSeq(): number {
    return this.cursors.resp;
  }

  /** The shell read the queue up to `seq` (an entry with nothing for the table moves it too). */
  passed(which: "req" | "resp", seq: number): void {
    if (!this.cursorsHeld && seq > this.cursors[which]) this.cursors[which] = seq;
  }

  /** Apply entries read again outside the queue's order (a session's queues re-read): no cursor moves. */
  offCursor<T>(fn: () => T): T {
    const held = this.cursorsHeld;
    this.cursorsHeld = true;
    try {
      return fn();
    } finally {
      this.cursorsHeld = held;
    }
  }

  /** Every session goes into the next cut (after a rebuild from a backup newer than the bucket). */
  markAllDirty(): void {
    for (const s of this.sessions.values()) s.dirty = true;
  }

  constructor(
    readonly limits: CoreLimits,
    public epoch: number,
  ) {}

  // ---- sessions -----------------------------------------------------------------------

  /** Open a session; the caller checked the service is known. */
  open(
    args: { session: string; client: string; service: string; maxPending: number; window?: number; pool?: boolean; restart?: unknown; hedge?: HedgeOptions; retry?: RetryOptions },
    now: number,
  ): { entry: SessionEntry; effects: Effect[] } {
    const entry = this.newEntry(args.session, args.client, args.service, args.maxPending, args.hedge, args.retry, args.window, args.pool);
    if (entry.ordered) entry.server = this.pickServer(args.service);
    // Nothing of a new session runs anywhere: every live server may take its work at once.
    else for (const v of this.byLoad(args.service)) entry.synced.add(v.id);
    entry.serverSynced = true;
    if (args.restart !== undefined) entry.clientRestart = { data: args.restart, n: 0, seq: 0 };
    this.add(entry);
    this.client(args.client).synced = true;
    const effects: Effect[] = [];
    if (entry.clientRestart) effects.push({ type: "putRestart", session: entry.id, side: "client", record: entry.clientRestart });
    this.pump(entry, now, effects);
    return { entry, effects };
  }

  /**
   * The `open` record at the head of a session's request queue: on replay it recreates a
   * session opened after the cut being rebuilt from. Live, the open handler has created the
   * session before its record reaches the queue, so a live record for a session the table lacks
   * was not written by a manager: it is refused (clients once opened sessions past their limit,
   * for services nobody serves, by writing open records into their own queues).
   */
  onOpenRecord(
    m: { seq: number; client: string; session: string; service: string; maxPending: number; window?: number; pool?: boolean; restart?: unknown; hedge?: HedgeOptions; retry?: RetryOptions },
    now: number,
    replaying = true,
  ): Effect[] {
    this.passed("req", m.seq);
    if (this.sessions.has(m.session)) return [];
    if (!replaying) {
      const message = `an open record for session ${m.session} that no manager wrote; open sessions with the open call`;
      return [{ type: "dlq", code: "TANDEM_MALFORMED", message, context: { client: m.client, session: m.session, seq: m.seq } }];
    }
    const maxPending = Math.min(m.maxPending, this.limits.maxPending);
    const entry = this.newEntry(m.session, m.client, m.service, maxPending, m.hedge, m.retry, m.window, m.pool);
    if (entry.ordered) entry.server = this.pickServer(m.service);
    entry.serverSynced = false; // whichever server gets it must be restarted with it
    if (m.restart !== undefined) entry.clientRestart = { data: m.restart, n: 0, seq: m.seq };
    this.add(entry);
    this.services.add(m.service);
    this.client(m.client);
    const effects: Effect[] = [];
    this.pump(entry, now, effects);
    return effects;
  }

  isKnownService(service: string): boolean {
    return this.services.has(service);
  }

  /** A client that came back asks for its session: reset delivery to what it has taken. */
  resume(client: string, session: string, now: number): { entry: SessionEntry | null; effects: Effect[] } {
    const s = this.sessions.get(session);
    if (!s || s.client !== client) return { entry: null, effects: [] };
    s.delivered = s.taken;
    s.delivering = 0;
    s.deliveredAlso = new Set(s.takenAlso);
    s.deliveringSet.clear();
    s.deliverRetryAt = 0;
    s.deliverAttempts = 0;
    const c = this.client(client);
    // The resumed client knows this epoch now; other sessions of the same client id are
    // re-synchronised by the restart already in flight, if any.
    if (!c.inFlight) c.synced = true;
    const effects: Effect[] = [];
    this.pump(s, now, effects);
    return { entry: s, effects };
  }

  close(client: string, session: string): { closed: SessionEntry | null; effects: Effect[] } {
    const s = this.sessions.get(session);
    if (!s || s.client !== client) return { closed: null, effects: [] };
    this.remove(s);
    this.removed.push(session);
    const effects: Effect[] = [];
    for (const [n, d] of s.inFlight) effects.push({ type: "cancel", server: d.server, session, n, reason: "cancelled" });
    return { closed: s, effects };
  }

  restartInfo(id: string): RestartSession | null {
    const s = this.sessions.get(id);
    if (!s) return null;
    return {
      session: s.id,
      client: s.client,
      service: s.service,
      restart: null,
      requests: [...s.requests.keys()].filter((n) => n > s.answered && !s.takenAlso.has(n)).sort((a, b) => a - b),
      responses: [...s.responses.keys()].filter((n) => n > s.taken && !s.takenAlso.has(n)).sort((a, b) => a - b),
      lastReq: s.lastReq,
      taken: s.taken,
    };
  }

  pendingCount(s: SessionEntry): number {
    return s.lastReq - s.taken - s.takenAlso.size;
  }

  // ---- queue events (from the streams, in stream order) -------------------------------

  onRequest(
    m: {
      seq: number;
      client: string;
      session: string;
      n: number;
      kind: RequestKind;
      payload: unknown;
      restart?: unknown;
      size: number;
      restartSize?: number;
      tp?: string;
      retry?: RetryOptions;
      /** Core clock. */
      deadline?: number;
      /** Core clock. */
      notBefore?: number;
    },
    now: number,
    replaying: boolean,
  ): Effect[] {
    this.passed("req", m.seq);
    const effects: Effect[] = [];
    const s = this.sessions.get(m.session);
    if (!s || s.client !== m.client) {
      if (!replaying) {
        const error = { code: "TANDEM_UNKNOWN_SESSION", message: `session ${m.session} is not open; open a new session` };
        effects.push({ type: "notify", client: m.client, session: m.session, n: m.n, error });
        effects.push({ type: "dlq", code: error.code, message: error.message, context: { client: m.client, session: m.session, n: m.n, seq: m.seq } });
      }
      return effects;
    }
    // Restart data is bounded as payloads are: a work message carries both (docs/design.md §8).
    const restartTooLarge = (m.restartSize ?? 0) > this.limits.maxPayload;
    // Restart data first: a replayed duplicate may carry data newer than the bucket has (I6).
    if (m.restart !== undefined && !restartTooLarge) {
      const rec = { data: m.restart, n: m.n, seq: m.seq };
      if (newer(s.clientRestart, rec)) {
        s.clientRestart = rec;
        effects.push({ type: "putRestart", session: s.id, side: "client", record: rec });
      }
    }
    // A duplicate, or on replay a request whose answer was read first (or, in a pool, taken): nothing to hold.
    if (m.n <= s.answered || s.requests.has(m.n) || s.responses.has(m.n) || s.takenAlso.has(m.n)) return effects;
    s.lastReq = Math.max(s.lastReq, m.n);
    s.dirty = true;
    let reject: WireErr | null = null;
    if (m.size > this.limits.maxPayload) {
      reject = { code: "TANDEM_PAYLOAD_TOO_LARGE", message: `request ${m.n} is ${m.size} bytes; the limit is ${this.limits.maxPayload}`, context: { size: m.size, limit: this.limits.maxPayload } };
    } else if (restartTooLarge) {
      reject = { code: "TANDEM_PAYLOAD_TOO_LARGE", message: `the restart data of request ${m.n} is ${m.restartSize} bytes; the limit is ${this.limits.maxPayload}`, context: { size: m.restartSize, limit: this.limits.maxPayload } };
    } else if (this.pendingCount(s) > s.maxPending) {
      reject = { code: "TANDEM_BACKPRESSURE", message: `session ${s.id} has more than ${s.maxPending} pending requests; take responses before sending more`, context: { limit: s.maxPending } };
    } else if (!replaying) {
      reject = this.overBytes(s, m.size);
    } else if (this.overBytes(s, m.size)) {
      // Replay keeps what the live primary decided (refusing now could refuse a request already
      // at a server), but not its bytes past the bounds: the request stays in the table without
      // its payload, which the actor reads back from the queue by sequence when it dispatches.
      const evicted: PendingRequest = { kind: m.kind, payload: undefined, seq: m.seq, rejected: false, evicted: true };
      if (m.tp !== undefined) evicted.tp = m.tp;
      s.requests.set(m.n, withFailureFields(evicted, m));
      this.afterRequest(s, m.n, now, effects);
      return effects;
    }
    if (reject) {
      // The request is in the queue; it gets an error response so the queue moves on.
      // Also on replay: both publishes are de-duplicated by message id.
      s.requests.set(m.n, { kind: m.kind, payload: null, seq: m.seq, rejected: true });
      effects.push({ type: "storeError", client: s.client, session: s.id, n: m.n, error: reject });
      effects.push({ type: "dlq", code: reject.code, message: reject.message, context: { client: s.client, session: s.id, n: m.n, seq: m.seq } });
      return effects;
    }
    const req = withFailureFields({ kind: m.kind, payload: m.payload, seq: m.seq, rejected: false, bytes: m.size }, m);
    if (m.tp !== undefined) req.tp = m.tp;
    s.requests.set(m.n, req);
    this.hold(s, m.size);
    this.afterRequest(s, m.n, now, effects);
    return effects;
  }

  /**
   * A request just taken into the table: on replay its attempts may have been read first (the
   * queues are read independently) and used up already; otherwise on to the pump.
   */
  private afterRequest(s: SessionEntry, n: number, now: number, effects: Effect[]): void {
    const a = s.attempts.get(n);
    if (a && a.failures >= this.policy(s, n).maxAttempts) this.quarantine(s, n, effects);
    this.pump(s, now, effects);
  }

  /**
   * A request of an open session that could not be read (malformed, too deep): it gets an error
   * response in its place, as an oversized one does, so the session's later requests are not
   * held behind it (I3: the error takes its place in order).
   */
  onUnreadableRequest(m: { seq: number; client: string; session: string; n: number; error: WireErr }, now: number): Effect[] {
    this.passed("req", m.seq);
    const s = this.sessions.get(m.session);
    if (!s || s.client !== m.client || m.n <= s.answered || s.requests.has(m.n) || s.takenAlso.has(m.n) || m.n > s.taken + s.maxPending) return [];
    s.lastReq = Math.max(s.lastReq, m.n);
    s.dirty = true;
    s.requests.set(m.n, { kind: "request", payload: null, seq: m.seq, rejected: true });
    const effects: Effect[] = [{ type: "storeError", client: s.client, session: s.id, n: m.n, error: m.error }];
    this.pump(s, now, effects);
    return effects;
  }

  /** A receipt: the client took every response up to `taken` (a pool's: and those in `also`). */
  onTaken(m: { seq: number; client: string; session: string; taken: number; also?: readonly number[] }, now: number): Effect[] {
    this.passed("req", m.seq);
    const s = this.sessions.get(m.session);
    if (!s || s.client !== m.client) return [];
    // Never past the last request: a receipt follows its requests in the same queue, so only a
    // hand-written one names more, and taken as is it made every later request of the session
    // look taken already, unanswered and silent. Its numbers above the floor are kept the same way.
    const taken = Math.min(m.taken, s.lastReq);
    let moved = taken > s.taken;
    if (moved) s.taken = taken;
    if (m.also && !s.ordered) {
      for (const n of m.also) {
        if (n > s.taken && n <= s.lastReq && !s.takenAlso.has(n)) {
          s.takenAlso.add(n);
          moved = true;
        }
      }
    }
    if (!moved) return [];
    for (const n of s.takenAlso) if (n <= s.taken) s.takenAlso.delete(n);
    while (s.takenAlso.delete(s.taken + 1)) s.taken++;
    // Not clipped to `answered`: on replay the two streams are read independently, and the
    // client only takes what was answered, so taken implies answered.
    if (s.answered < s.taken) s.answered = s.taken;
    while (s.responses.has(s.answered + 1) || s.takenAlso.has(s.answered + 1)) s.answered++;
    const gone = (n: number) => n <= s.answered || s.takenAlso.has(n);
    for (const n of s.responses.keys()) if (n <= s.taken || s.takenAlso.has(n)) this.dropResponse(s, n);
    for (const n of s.requests.keys()) if (gone(n)) this.dropRequest(s, n);
    for (const n of s.attempts.keys()) if (gone(n)) s.attempts.delete(n);
    for (const n of s.sentTo.keys()) if (gone(n)) s.sentTo.delete(n);
    for (const n of s.inFlight.keys()) if (gone(n)) s.inFlight.delete(n);
    for (const n of s.suspects) if (gone(n)) s.suspects.delete(n);
    if (s.delivered < s.taken) s.delivered = s.taken;
    for (const n of s.takenAlso) if (n > s.delivered) s.deliveredAlso.add(n);
    this.collapseDelivered(s);
    s.dirty = true;
    const effects: Effect[] = [];
    this.pump(s, now, effects);
    return effects;
  }

  onResponse(
    m: {
      seq: number;
      client: string;
      session: string;
      n: number;
      server: string;
      ok?: unknown;
      error?: WireErr;
      restart?: unknown;
      restartSize?: number;
      tp?: string;
      size?: number;
      /** When the queue stored it (core clock); `now` when unknown. */
      at?: number;
    },
    now: number,
    replaying = true,
  ): Effect[] {
    this.passed("resp", m.seq);
    const s = this.sessions.get(m.session);
    if (!s || s.client !== m.client) return [];
    if (!replaying && m.n > s.lastReq) return [beyondLastRequest(s, m, "response")];
    const effects: Effect[] = [];
    if (m.restart !== undefined && (m.restartSize ?? 0) > this.limits.maxPayload) {
      // The answer stands; restart data too large to ever travel with work does not.
      effects.push(restartTooLarge(s, m, this.limits.maxPayload));
    } else if (m.restart !== undefined && m.server !== MANAGER) {
      const rec = { data: m.restart, n: m.n, seq: m.seq };
      if (newer(s.serverRestart, rec)) {
        s.serverRestart = rec;
        effects.push({ type: "putRestart", session: s.id, side: "server", record: rec });
      }
    }
    if (m.n <= s.taken || s.takenAlso.has(m.n) || s.responses.has(m.n)) return effects; // JetStream de-duplicated already; belt and braces
    if (m.server !== MANAGER) {
      const req = s.requests.get(m.n);
      // Stored after the request's deadline: too late to be its answer, on replay as live (the
      // queue's own time decides), so the caller and a resumed session see the same outcome.
      if (req && req.deadline !== undefined && (m.at ?? now) > req.deadline) {
        this.giveUp(s, m.n, "deadline", effects);
        this.pump(s, now, effects);
        return effects;
      }
      // A retryable failure is one attempt, not the answer (hedged sessions: the answer).
      if (m.error && !s.hedge && isRetryable(m.error)) {
        this.attemptFailed(s, { seq: m.seq, n: m.n, server: m.server, error: m.error, at: m.at ?? now }, now, effects);
        return effects;
      }
    }
    if (m.n > s.lastReq) s.lastReq = m.n; // response replayed before its request: trust the queue
    const resp: StoredResponse = { ok: m.ok, error: m.error, server: m.server, seq: m.seq, bytes: m.size ?? 0 };
    if (m.tp !== undefined) resp.tp = m.tp;
    s.responses.set(m.n, resp);
    this.hold(s, resp.bytes!);
    this.dropRequest(s, m.n);
    s.attempts.delete(m.n);
    s.sentTo.delete(m.n);
    s.suspects.delete(m.n);
    while (s.responses.has(s.answered + 1) || s.answered + 1 <= s.taken || s.takenAlso.has(s.answered + 1)) s.answered++;
    const d = s.inFlight.get(m.n);
    if (d) {
      this.budget(s.service).observe(now - d.at);
      if (!replaying) effects.push({ type: "served", service: s.service, session: s.id, n: m.n, ms: now - d.at, ok: m.error === undefined });
      s.inFlight.delete(m.n);
      s.dispatchAttempts = 0;
    }
    if (s.hedge) {
      const others = replaying ? [] : this.byLoad(s.service, [m.server]).map((v) => v.id);
      effects.push({ type: "answered", session: s.id, n: m.n, server: m.server, others, replaying });
    }
    s.dirty = true;
    this.pump(s, now, effects);
    return effects;
  }

  onCheckpoint(m: { seq: number; client: string; session: string; n: number; server?: string; restart: unknown; restartSize?: number }, replaying = true): Effect[] {
    this.passed("resp", m.seq);
    const s = this.sessions.get(m.session);
    if (!s || s.client !== m.client) return [];
    if (!replaying && m.n > s.lastReq) return [beyondLastRequest(s, m, "checkpoint")];
    if ((m.restartSize ?? 0) > this.limits.maxPayload) return [restartTooLarge(s, m, this.limits.maxPayload)];
    const rec = { data: m.restart, n: m.n, seq: m.seq };
    if (!newer(s.serverRestart, rec)) return [];
    s.serverRestart = rec;
    return [{ type: "putRestart", session: s.id, side: "server", record: rec }];
  }

  // ---- failed work: attempts, quarantine, deadlines, cancellation (docs/design.md §9) ------

  /**
   * The manager's record of a failed attempt (`<p>.resp.manager.<session>`): the server died
   * holding the request. Counted when read back from the queue, live and on replay alike.
   */
  onAttemptRecord(m: { seq: number; client: string; session: string; n: number; server: string; error: WireErr; at?: number }, now: number): Effect[] {
    this.passed("resp", m.seq);
    const s = this.sessions.get(m.session);
    if (!s || s.client !== m.client) return [];
    s.awaitingAttempt.delete(m.n);
    const effects: Effect[] = [];
    this.attemptFailed(s, { seq: m.seq, n: m.n, server: m.server, error: m.error, at: m.at ?? now }, now, effects);
    return effects;
  }

  /** The caller gave up on a request (`{cancel: n}` in its request queue): answer it so, once. */
  onCancelRecord(m: { seq: number; client: string; session: string; n: number; reason: "cancelled" | "deadline" }, now: number): Effect[] {
    this.passed("req", m.seq);
    const s = this.sessions.get(m.session);
    if (!s || s.client !== m.client) return [];
    const effects: Effect[] = [];
    this.giveUp(s, m.n, m.reason, effects);
    this.pump(s, now, effects);
    return effects;
  }

  /** The retry policy of request n of a session: the request's over the session's over the defaults. */
  policy(s: SessionEntry, n: number) {
    return resolvePolicy(s.retry, s.requests.get(n)?.retry);
  }

  private attemptFailed(s: SessionEntry, f: { seq: number; n: number; server: string; error: WireErr; at: number }, now: number, effects: Effect[]): void {
    if (f.n <= s.answered || s.responses.has(f.n) || s.takenAlso.has(f.n)) return;
    const req = s.requests.get(f.n);
    if (req?.rejected) return;
    let a = s.attempts.get(f.n);
    if (!a) {
      a = newAttempts();
      s.attempts.set(f.n, a);
    }
    const out = countFailure(a, this.policy(s, f.n), { ...f, seed: `${s.id}.${f.n}` });
    if (!out) return;
    s.sentTo.delete(f.n); // this execution is accounted for
    if (s.inFlight.delete(f.n)) s.dispatchAttempts = 0;
    s.dirty = true;
    if (out.action === "quarantine") {
      // On replay the request may come later in its queue: afterRequest quarantines it then.
      if (req) this.quarantine(s, f.n, effects);
    } else {
      const context = { client: s.client, session: s.id, n: f.n, server: f.server, attempt: a.failures, code: f.error.code, retryInMs: Math.max(0, Math.round(out.at - now)) };
      effects.push({ type: "report", level: "info", message: "an attempt failed; the request is retried after its back-off", context });
    }
    this.pump(s, now, effects);
  }

  /**
   * Attempts used up: the request is answered TANDEM_POISON in its place in order (I3), its
   * bytes go to the dead-letter stream, and the session goes on with its next request.
   */
  private quarantine(s: SessionEntry, n: number, effects: Effect[]): void {
    const req = s.requests.get(n);
    const a = s.attempts.get(n);
    if (!req || req.rejected || !a) return;
    req.rejected = true;
    const last = a.lastError ? `${a.lastError.code}: ${a.lastError.message}` : "unknown";
    const error: WireErr = {
      code: "TANDEM_POISON",
      message: `request ${n} of session ${s.id} failed ${a.failures} attempt(s) (last: ${last}); quarantined: see \`tandem dlq list --reason poison\`, replay it with \`tandem dlq replay <id>\` once fixed`,
      context: { attempts: a.failures, servers: [...a.servers], lastError: a.lastError },
    };
    effects.push({ type: "storeError", client: s.client, session: s.id, n, error });
    effects.push({ type: "dlq", code: error.code, message: error.message, context: { client: s.client, session: s.id, service: s.service, n, ...error.context }, reqSeq: req.seq });
  }

  /** Answer a request TANDEM_DEADLINE or TANDEM_CANCELLED, unless it has its answer; stop it where it runs. */
  private giveUp(s: SessionEntry, n: number, reason: "deadline" | "cancelled", effects: Effect[]): void {
    const req = s.requests.get(n);
    if (!req || req.rejected || n <= s.answered || s.responses.has(n) || s.takenAlso.has(n)) return;
    req.rejected = true;
    const d = s.inFlight.get(n);
    if (d) {
      effects.push({ type: "cancel", server: d.server, session: s.id, n, reason });
      s.inFlight.delete(n);
    }
    s.awaitingAttempt.delete(n);
    const error: WireErr =
      reason === "deadline"
        ? { code: "TANDEM_DEADLINE", message: `request ${n} of session ${s.id} was not answered before its deadline`, context: { n } }
        : { code: "TANDEM_CANCELLED", message: `request ${n} of session ${s.id} was cancelled by its caller`, context: { n } };
    effects.push({ type: "storeError", client: s.client, session: s.id, n, error });
  }

  // ---- acknowledgements of what the actor sent ----------------------------------------

  /**
   * Why a session with unanswered requests has nothing at a server (its client is waiting),
   * and a nudge: a server restart marked in flight is retried, and the pump runs again. For a
   * client's re-sync; the answer goes to the log so a stall says what held it.
   */
  diagnose(session: string, now: number): { reason: string; effects: Effect[] } | null {
    const s = this.sessions.get(session);
    if (!s || s.answered >= s.lastReq || s.inFlight.has(s.answered + 1)) return null;
    if (!s.ordered) return this.diagnosePool(s, now);
    const req = s.requests.get(s.answered + 1);
    const srv = s.server ? this.servers.get(s.server) : undefined;
    const c = this.clients.get(s.client);
    const reason = !req
      ? "request missing from the table"
      : req.rejected
        ? "request rejected, its error response not seen"
        : !s.server
          ? "no server for the service"
          : !srv
            ? "server unknown"
            : !srv.alive
              ? "server dead"
              : srv.presumed
                ? "server not re-registered since the takeover"
                : !s.serverSynced
                  ? srv.restartInFlight
                    ? "server restart in flight"
                    : "server not restarted yet"
                  : s.awaitingAttempt.has(s.answered + 1)
                    ? "recording a failed attempt (its server died holding it)"
                    : now < (s.attempts.get(s.answered + 1)?.retryAt ?? 0)
                    ? "waiting out the retry back-off of a failed attempt"
                    : now < s.dispatchRetryAt
                    ? "dispatch backing off"
                    : c && !c.synced
                      ? "client not restarted yet"
                      : "nothing (pump ran again)";
    // The periodic tick retries the restart once its in-flight mark is cleared; this session's
    // pump runs now (no sweep of the whole table for one client's re-sync).
    if (srv && srv.restartInFlight && now >= srv.restartRetryAt) srv.restartInFlight = false;
    const effects: Effect[] = [];
    this.pump(s, now, effects);
    return { reason, effects };
  }

  private diagnosePool(s: SessionEntry, now: number): { reason: string; effects: Effect[] } {
    const live = this.byLoad(s.service);
    const reason =
      live.length === 0
        ? "no server for the service"
        : !live.some((v) => s.synced.has(v.id))
          ? s.restarting.size > 0
            ? "servers not restarted with the pool yet (restart in flight)"
            : "servers not restarted with the pool yet"
          : s.inFlight.size > 0
            ? `${s.inFlight.size} request(s) at servers; the oldest unanswered waits`
            : "nothing (pump ran again)";
    for (const v of live) if (v.restartInFlight && now >= v.restartRetryAt) v.restartInFlight = false;
    const effects: Effect[] = [];
    this.pump(s, now, effects);
    return { reason, effects };
  }

  /** Send request n at the server again (it may have lost it); the server ignores a duplicate it runs. */
  redispatch(session: string, n: number, now: number): Effect[] {
    const s = this.sessions.get(session);
    if (!s || !s.inFlight.delete(n)) return [];
    s.dispatchAttempts++; // not new load for the hedging budget
    const effects: Effect[] = [];
    this.pump(s, now, effects);
    return effects;
  }

  dispatchAcked(session: string, n: number): void {
    const s = this.sessions.get(session);
    const d = s?.inFlight.get(n);
    if (d) d.acked = true;
  }

  dispatchFailed(session: string, n: number, now: number): Effect[] {
    const s = this.sessions.get(session);
    if (!s || !s.inFlight.delete(n)) return [];
    s.dispatchAttempts++;
    s.dispatchRetryAt = now + backoff(50, s.dispatchAttempts);
    return [];
  }

  /** The client accepted delivery n (in order it accepts in order only: everything before it too; a pool: n alone). */
  deliverAcked(session: string, n: number, now: number): Effect[] {
    const s = this.sessions.get(session);
    if (s && !s.ordered) return this.poolDeliveries(session, [n], 0, now);
    if (!s || n <= s.delivered || n > s.delivering) return [];
    s.delivered = n;
    if (s.delivering <= n) s.delivering = 0;
    s.deliverAttempts = 0;
    const effects: Effect[] = [];
    this.pump(s, now, effects);
    return effects;
  }

  /**
   * A pool's batch of deliveries came back: these were accepted, and `refused` (when not 0) was
   * not. One pump for the whole batch: a pump per element walked the pool once per element.
   */
  poolDeliveries(session: string, accepted: readonly number[], refused: number, now: number): Effect[] {
    const s = this.sessions.get(session);
    if (!s || s.ordered) return [];
    let any = false;
    for (const n of accepted) {
      if (!s.deliveringSet.delete(n)) continue;
      any = true;
      if (n > s.delivered) s.deliveredAlso.add(n);
    }
    if (any) {
      this.collapseDelivered(s);
      s.deliverAttempts = 0;
    }
    const effects = refused ? this.deliverFailed(session, refused, now) : [];
    if (any) this.pump(s, now, effects);
    return effects;
  }

  /** A batch of deliveries came back: the client accepted them in order up to `upTo` (0: none), not `refused`. */
  deliverPartly(session: string, upTo: number, refused: number, now: number): Effect[] {
    const s = this.sessions.get(session);
    if (!s) return [];
    if (!s.ordered) return this.deliverFailed(session, refused, now);
    if (upTo > s.delivered && upTo < s.delivering) {
      s.delivered = upTo;
      s.deliverAttempts = 0;
    }
    return this.deliverFailed(session, refused, now);
  }

  /** Delivery n was not accepted: every one after it is sent again too, from the first not taken. */
  deliverFailed(session: string, n: number, now: number): Effect[] {
    const s = this.sessions.get(session);
    if (!s) return [];
    if (!s.ordered) {
      // A pool sends every one not accepted again (an ack still on its way only makes a repeat).
      if (!s.deliveringSet.has(n)) return [];
      s.deliveringSet.clear();
    } else if (n <= s.delivered || n > s.delivering) return [];
    s.delivering = 0;
    s.deliverAttempts++;
    s.deliverRetryAt = now + backoff(this.limits.ackTimeoutMs / 4, s.deliverAttempts);
    const effects: Effect[] = [];
    if (s.deliverAttempts === 3) {
      effects.push({ type: "report", level: "warn", message: "client does not take deliveries; retrying with back-off", context: { client: s.client, session: s.id, n } });
    }
    return effects;
  }

  private collapseDelivered(s: SessionEntry): void {
    for (const n of s.deliveredAlso) if (n <= s.delivered) s.deliveredAlso.delete(n);
    while (s.deliveredAlso.delete(s.delivered + 1)) s.delivered++;
  }

  // ---- servers ---------------------------------------------------------------------------

  /**
   * `incarnation`: the registering process's own id. A server restarted under the same id (a
   * supervisor, a container with a fixed id) within the heartbeat timeout is a new process that
   * lost the old one's work: that work moves at once rather than after the stall watchdog.
   */
  registerServer(id: string, service: string, capacity: number, now: number, incarnation?: string): Effect[] {
    this.services.add(service);
    let known = this.servers.get(id);
    const effects: Effect[] = [];
    if (known && known.alive && incarnation !== undefined && known.incarnation !== undefined && known.incarnation !== incarnation) {
      this.serverDown(known, now, effects, "server restarted under the same id (a new incarnation); the old one's sessions and work move");
      known = undefined;
    }
    if (known && known.alive) {
      known.lastSeen = now;
      known.presumed = false;
      if (incarnation !== undefined) known.incarnation = incarnation;
    } else {
      const srv = newServer(id, service, capacity, now, false);
      if (incarnation !== undefined) srv.incarnation = incarnation;
      this.servers.set(id, srv);
    }
    // Sessions this server had (known from a backup) need a restart; waiting sessions get it.
    const mine: string[] = [];
    for (const s of this.sessions.values()) {
      if (s.service !== service) continue;
      // A pool takes a server only once it has said what of the pool it runs (a paused process
      // declared dead may come back running work of it).
      if (!s.ordered) {
        s.synced.delete(id);
        mine.push(s.id);
      } else if (s.server === id && !s.serverSynced) mine.push(s.id);
      else if (s.server === null) {
        this.setServer(s, id);
        s.serverSynced = false;
        s.dirty = true;
        mine.push(s.id);
      }
    }
    if (mine.length) this.requestServerRestart(id, mine, effects);
    return effects;
  }

  /**
   * A fresh heartbeat window for every live server: after a time in which no heartbeat could
   * arrive (the event loop paused, or NATS unreachable), silence says nothing about them.
   */
  graceServers(now: number): void {
    for (const srv of this.servers.values()) srv.lastSeen = Math.max(srv.lastSeen, now);
  }

  /**
   * Returns false when the server is unknown (it must register again). `running`: the requests
   * it says it is running ([session, n]); a long one is then known to be alive there, neither
   * sent again nor reported (docs/design.md §9).
   */
  heartbeat(id: string, now: number, running?: ReadonlyArray<readonly [string, number]>): boolean {
    const srv = this.servers.get(id);
    if (!srv || !srv.alive) return false;
    srv.lastSeen = now;
    if (running) {
      for (const [session, n] of running) {
        const s = this.sessions.get(session);
        const d = s && (s.server === id || !s.ordered) ? s.inFlight.get(n) : undefined;
        if (d && d.server === id) {
          d.acked = true;
          d.runningAt = now;
        }
      }
    }
    if (srv.presumed) return false; // known only from a backup: make it register so it is restarted
    return true;
  }

  serverRestartAcked(ack: ServerRestartAck, now: number): Effect[] {
    const srv = this.servers.get(ack.server);
    const effects: Effect[] = [];
    if (!srv) return effects;
    srv.restartInFlight = false;
    srv.restartAttempts = 0;
    // It answered this epoch's restart: alive and no longer presumed (its capacity came with
    // the backup), so it serves without registering again.
    srv.lastSeen = Math.max(srv.lastSeen, now);
    srv.presumed = false;
    const working = new Map<string, number[]>();
    for (const w of ack.working) working.set(w.session, [...(working.get(w.session) ?? []), w.n]);
    // A pool is synced only by a restart that named it (its `working` then covers the pool).
    const named = new Set(ack.sessions ?? []);
    for (const s of this.sessions.values()) {
      if (!s.ordered) {
        if (!named.has(s.id) || !s.restarting.delete(ack.server)) continue;
        s.synced.add(ack.server);
        for (const [n, d] of s.inFlight) if (d.server === ack.server) s.inFlight.delete(n);
        for (const n of working.get(s.id) ?? []) {
          if (n > s.answered && n <= s.answered + s.maxPending && !s.responses.has(n) && !s.takenAlso.has(n) && !s.inFlight.has(n)) s.inFlight.set(n, { server: ack.server, at: now, acked: true, runningAt: 0 });
        }
        this.pump(s, now, effects);
        continue;
      }
      if (s.server !== ack.server || s.serverSynced) continue;
      s.serverSynced = true;
      s.inFlight.clear();
      for (const n of working.get(s.id) ?? []) {
        // Still running there: don't send it twice.
        if (n > s.answered && n <= s.answered + s.window && !s.responses.has(n)) s.inFlight.set(n, { server: ack.server, at: now, acked: true, runningAt: 0 });
      }
      this.pump(s, now, effects);
    }
    return effects;
  }

  serverRestartFailed(server: string, now: number): void {
    const srv = this.servers.get(server);
    if (!srv) return;
    srv.restartInFlight = false;
    srv.restartAttempts++;
    srv.restartRetryAt = now + backoff(this.limits.ackTimeoutMs / 4, srv.restartAttempts);
  }

  private requestServerRestart(server: string, sessions: string[], effects: Effect[]): void {
    const srv = this.servers.get(server);
    if (!srv) return;
    srv.restartInFlight = true;
    for (const id of sessions) {
      const s = this.sessions.get(id);
      if (s && !s.ordered) s.restarting.add(server);
    }
    effects.push({ type: "restartServer", server, sessions });
  }

  /** Live servers of a service, least loaded (sessions per unit of capacity) first. */
  private byLoad(service: string, exclude: readonly string[] = []): ServerEntry[] {
    const perCapacity = (v: ServerEntry) => (this.perServer.get(v.id) ?? 0) / Math.max(1, v.capacity);
    return [...this.servers.values()]
      .filter((v) => v.service === service && v.alive && !v.presumed && !exclude.includes(v.id))
      .sort((a, b) => perCapacity(a) - perCapacity(b));
  }

  // Sessions per server and per client, kept up to date as sessions come, go and move: counting
  // them over the table at each open made 10,000 opens quadratic (8.5 s, a third of it here).
  private readonly perServer = new Map<string, number>();
  private readonly perClient = new Map<string, number>();

  private add(s: SessionEntry): void {
    this.sessions.set(s.id, s);
    if (s.server) bump(this.perServer, s.server, 1);
    bump(this.perClient, s.client, 1);
  }

  private remove(s: SessionEntry): void {
    this.sessions.delete(s.id);
    if (s.server) bump(this.perServer, s.server, -1);
    bump(this.perClient, s.client, -1);
    this.hold(s, -s.bytes);
  }

  // Bytes held per client and in all, kept with every request and response the table takes in
  // or lets go of (CoreLimits' byte bounds).
  private readonly perClientBytes = new Map<string, number>();
  private held = 0;

  /** Bytes of requests and responses the table holds: in all, or of one client. */
  heldBytes(client?: string): number {
    return client === undefined ? this.held : (this.perClientBytes.get(client) ?? 0);
  }

  private hold(s: SessionEntry, bytes: number): void {
    if (bytes === 0) return;
    s.bytes += bytes;
    bump(this.perClientBytes, s.client, bytes);
    this.held += bytes;
  }

  private dropRequest(s: SessionEntry, n: number): void {
    const r = s.requests.get(n);
    if (!r) return;
    s.requests.delete(n);
    this.hold(s, -(r.bytes ?? 0));
  }

  private dropResponse(s: SessionEntry, n: number): void {
    const r = s.responses.get(n);
    if (!r) return;
    s.responses.delete(n);
    this.hold(s, -(r.bytes ?? 0));
  }

  /**
   * Would taking `size` more bytes into this session pass a byte bound? A session that holds
   * nothing may always take one request (as large as maxPayload): each session can make progress
   * however much others hold, so one heavy client cannot starve the rest.
   */
  private overBytes(s: SessionEntry, size: number): WireErr | null {
    if (s.bytes === 0) return null;
    const bounds: [string, number, number][] = [
      ["session", s.bytes, this.limits.maxSessionBytes ?? DEFAULT_BYTE_LIMITS.maxSessionBytes],
      ["client", this.heldBytes(s.client), this.limits.maxClientBytes ?? DEFAULT_BYTE_LIMITS.maxClientBytes],
      ["manager", this.held, this.limits.maxHeldBytes ?? DEFAULT_BYTE_LIMITS.maxHeldBytes],
    ];
    for (const [scope, held, limit] of bounds) {
      if (held + size <= limit) continue;
      const whose = scope === "session" ? `session ${s.id}` : scope === "client" ? `client ${s.client}` : "the manager";
      return {
        code: "TANDEM_BACKPRESSURE",
        message: `${whose} holds ${held} bytes of requests and responses; ${size} more would pass the limit of ${limit}; take responses before sending more`,
        context: { scope, held, size, limit },
      };
    }
    return null;
  }

  private setServer(s: SessionEntry, server: string | null): void {
    if (s.server) bump(this.perServer, s.server, -1);
    if (server) bump(this.perServer, server, 1);
    s.server = server;
  }

  /** Sessions a client has open. */
  sessionsOf(client: string): number {
    return this.perClient.get(client) ?? 0;
  }

  private pickServer(service: string): string | null {
    return this.byLoad(service)[0]?.id ?? null;
  }

  private serverDown(srv: ServerEntry, now: number, effects: Effect[], why = "server session lost (no heartbeat); its sessions move to other servers of the service"): void {
    srv.alive = false;
    const moved = new Map<string, string[]>();
    let waiting = 0;
    for (const s of this.sessions.values()) {
      if (!s.ordered) {
        this.poolServerDown(s, srv, why, effects);
        continue;
      }
      if (s.server !== srv.id) continue;
      const held = new Set<number>();
      for (const [n, d] of s.inFlight) if (d.server === srv.id) held.add(n);
      for (const [n, to] of s.sentTo) if (to === srv.id && n > s.answered && s.requests.has(n)) held.add(n);
      if (held.size > 1) for (const n of held) s.suspects.add(n);
      if (!s.hedge) {
        for (const n of [...held].sort((a, b) => a - b)) {
          // The server died holding it: one attempt used (docs/design.md §9). Not sent again
          // until that is on record, so a failover meanwhile cannot hand out a free execution.
          const error: WireErr = { code: "TANDEM_SERVER_LOST", message: `server ${srv.id} was lost while it held request ${n} (${why.split(";")[0]})`, context: { server: srv.id } };
          // Its back-off runs from when the server was last heard of (about when it died): the
          // time it took to notice is waited out already, so the moved work is not held longer.
          effects.push({ type: "recordAttempt", session: s.id, n, server: srv.id, error, at: srv.lastSeen });
          s.awaitingAttempt.add(n);
        }
      }
      s.sentTo.clear();
      s.inFlight.clear();
      this.setServer(s, this.pickServer(s.service));
      s.serverSynced = false;
      s.dirty = true;
      if (s.server) moved.set(s.server, [...(moved.get(s.server) ?? []), s.id]);
      else waiting++;
    }
    this.servers.delete(srv.id);
    effects.push({
      type: "report",
      level: "warn",
      message: why,
      context: { server: srv.id, service: srv.service, moved: [...moved.values()].reduce((a, b) => a + b.length, 0), waiting, at: now },
    });
    for (const [to, ids] of moved) this.requestServerRestart(to, ids, effects);
  }

  /** A pool's requests at a dead server: each costs an attempt, and waits for its record (as in order). */
  private poolServerDown(s: SessionEntry, srv: ServerEntry, why: string, effects: Effect[]): void {
    s.synced.delete(srv.id);
    s.restarting.delete(srv.id);
    const held = new Set<number>();
    for (const [n, d] of s.inFlight) if (d.server === srv.id) held.add(n);
    for (const [n, to] of s.sentTo) if (to === srv.id && n > s.answered && s.requests.has(n)) held.add(n);
    if (held.size === 0) return;
    if (held.size > 1) for (const n of held) s.suspects.add(n);
    for (const n of [...held].sort((a, b) => a - b)) {
      const error: WireErr = { code: "TANDEM_SERVER_LOST", message: `server ${srv.id} was lost while it held request ${n} (${why.split(";")[0]})`, context: { server: srv.id } };
      effects.push({ type: "recordAttempt", session: s.id, n, server: srv.id, error, at: srv.lastSeen });
      s.awaitingAttempt.add(n);
      s.inFlight.delete(n);
      s.sentTo.delete(n);
    }
    s.dirty = true;
  }

  // ---- clients ---------------------------------------------------------------------------

  private client(id: string): ClientEntry {
    let c = this.clients.get(id);
    if (!c) {
      c = { id, synced: false, retryAt: 0, attempts: 0, inFlight: false };
      this.clients.set(id, c);
    }
    return c;
  }

  clientRestartAcked(ack: ClientRestartAck, now: number): Effect[] {
    const c = this.clients.get(ack.client);
    if (!c) return [];
    c.synced = true;
    c.inFlight = false;
    c.attempts = 0;
    const effects: Effect[] = [];
    const taken = new Map(ack.sessions.map((x) => [x.session, x.taken]));
    const also = new Map(ack.sessions.map((x) => [x.session, x.takenAlso ?? []]));
    for (const s of this.sessions.values()) {
      if (s.client !== ack.client) continue;
      const t = taken.get(s.id);
      s.delivering = 0;
      s.deliverRetryAt = 0;
      // The client's taken may be ahead of ours (its TAKEN message still in the queue).
      s.delivered = Math.max(s.taken, t ?? 0);
      if (!s.ordered) {
        s.deliveringSet.clear();
        s.deliveredAlso = new Set([...s.takenAlso, ...(also.get(s.id) ?? [])]);
        this.collapseDelivered(s);
      }
      this.pump(s, now, effects);
    }
    return effects;
  }

  clientRestartFailed(client: string, now: number): Effect[] {
    const c = this.clients.get(client);
    if (!c) return [];
    c.inFlight = false;
    c.attempts++;
    c.retryAt = now + backoff(this.limits.ackTimeoutMs / 2, c.attempts);
    if (c.attempts === 3) {
      return [{ type: "report", level: "warn", message: "client session does not answer restart; retrying with back-off (it can also resume by id)", context: { client, attempts: c.attempts } }];
    }
    return [];
  }

  /** After a rebuild: every client and server must restart against this epoch. */
  startEpoch(epoch: number, now: number): Effect[] {
    this.epoch = epoch;
    const effects: Effect[] = [];
    for (const s of this.sessions.values()) {
      s.serverSynced = false;
      s.inFlight.clear();
      s.delivering = 0;
      s.deliveringSet.clear();
      s.synced.clear();
      s.restarting.clear();
      this.client(s.client).synced = false;
    }
    for (const srv of this.servers.values()) {
      srv.presumed = true;
      srv.alive = true;
      srv.lastSeen = now;
    }
    // Restart the servers the table names at once (docs/design.md §4, step 3), rather than when their next
    // heartbeat is told to register again: that wait was up to a heartbeat interval of every
    // failover. Their acknowledgement proves them alive; the registration that follows still
    // brings their capacity. A dead one fails the restart and times out as before.
    const byServer = new Map<string, string[]>();
    const add = (server: string, id: string) => byServer.set(server, [...(byServer.get(server) ?? []), id]);
    for (const s of this.sessions.values()) {
      // A pool may have work at any server of its service: each says what of it runs there.
      if (!s.ordered) {
        for (const v of this.servers.values()) if (v.service === s.service) add(v.id, s.id);
        continue;
      }
      if (s.server === null || !this.servers.has(s.server)) continue;
      add(s.server, s.id);
    }
    for (const [server, sessions] of byServer) this.requestServerRestart(server, sessions, effects);
    effects.push(...this.tick(now));
    return effects;
  }

  // ---- time ------------------------------------------------------------------------------

  /** Periodic work: dead servers, retries of restarts, deliveries and dispatches. */
  tick(now: number): Effect[] {
    const effects: Effect[] = [];
    for (const srv of [...this.servers.values()]) {
      if (srv.alive && now - srv.lastSeen > this.limits.serverTimeoutMs) this.serverDown(srv, now, effects);
    }
    for (const c of this.clients.values()) {
      if (c.synced || c.inFlight || now < c.retryAt) continue;
      const sessions = [...this.sessions.values()].filter((s) => s.client === c.id).map((s) => s.id);
      if (sessions.length === 0) {
        this.clients.delete(c.id);
        continue;
      }
      c.inFlight = true;
      effects.push({ type: "restartClient", client: c.id, sessions });
    }
    const byServer = new Map<string, string[]>();
    for (const s of this.sessions.values()) {
      if (!s.ordered) {
        for (const v of this.servers.values()) {
          if (v.service !== s.service || s.synced.has(v.id) || !v.alive || v.presumed || v.restartInFlight || now < v.restartRetryAt) continue;
          byServer.set(v.id, [...(byServer.get(v.id) ?? []), s.id]);
        }
        this.pump(s, now, effects);
        continue;
      }
      if (s.server === null) {
        // Waiting for a server: one may be live now without having registered again (a takeover
        // replays open records while every server is presumed, and a server that acknowledges
        // the new epoch's restart is live without a registration). Waiting on the registration
        // alone once left sessions opened after the last backup without a server for good.
        const to = this.pickServer(s.service);
        if (to) {
          this.setServer(s, to);
          s.serverSynced = false;
          s.dirty = true;
        }
      }
      if (s.server && !s.serverSynced) {
        const srv = this.servers.get(s.server);
        if (srv && srv.alive && !srv.presumed && !srv.restartInFlight && now >= srv.restartRetryAt) {
          byServer.set(srv.id, [...(byServer.get(srv.id) ?? []), s.id]);
        }
      }
      this.pump(s, now, effects);
    }
    for (const [server, ids] of byServer) this.requestServerRestart(server, ids, effects);
    return effects;
  }

  // ---- hedging -----------------------------------------------------------------------------

  budget(service: string): HedgeBudget {
    let b = this.hedging.get(service);
    if (!b) {
      b = new HedgeBudget(this.limits.hedge ?? DEFAULT_HEDGE_BUDGET);
      this.hedging.set(service, b);
    }
    return b;
  }

  /** How long a hedged session's request waits for a response before hedging. */
  hedgeDelay(session: string): number {
    const s = this.sessions.get(session);
    if (!s?.hedge) return 0;
    return this.budget(s.service).delay(s.hedge.after);
  }

  /**
   * Servers for extra copies of a hedged request: live servers of the service that have no
   * copy yet, least loaded first, each paid for by one budget token. Fewer (or none) when the
   * service has no more servers or the budget is spent.
   */
  hedgeTargets(session: string, exclude: string[], want: number): string[] {
    const s = this.sessions.get(session);
    if (!s?.hedge || want <= 0) return [];
    const out: string[] = [];
    const budget = this.budget(s.service);
    for (const c of this.byLoad(s.service, exclude)) {
      if (out.length >= want || !budget.tryWithdraw()) break;
      out.push(c.id);
    }
    return out;
  }

  /**
   * Sessions that wait for a request or response the table does not hold: an inconsistency
   * between a restored cut and the queues. Never expected; reported rather than left silent.
   */
  stalled(): Array<{ session: string; missing: "request" | "response"; n: number }> {
    const out: Array<{ session: string; missing: "request" | "response"; n: number }> = [];
    for (const s of this.sessions.values()) {
      if (s.lastReq > s.answered && s.inFlight.size === 0 && !s.requests.has(s.answered + 1) && !s.responses.has(s.answered + 1)) {
        out.push({ session: s.id, missing: "request", n: s.answered + 1 });
      } else if (s.ordered && s.answered > s.delivered && s.delivering === 0 && !s.responses.has(s.delivered + 1) && s.delivered >= s.taken) {
        out.push({ session: s.id, missing: "response", n: s.delivered + 1 });
      }
    }
    return out;
  }

  // ---- the two pumps: dispatch the next request, deliver the next response ---------------

  private pump(s: SessionEntry, now: number, effects: Effect[]): void {
    // Past its deadline, wherever it is (queued, backing off, at a server): answered so. The head
    // and what is at a server here; the others as the dispatch below reaches them (a pump runs on
    // every event: no walk over a window of 1,024).
    if (this.late(s, s.answered + 1, now)) this.giveUp(s, s.answered + 1, "deadline", effects);
    if (s.inFlight.size > 0) {
      // Collected first (giving up changes what is in flight), without a copy of the keys on
      // every pump: a pool's pump runs on every event with its window in flight.
      let past: number[] | undefined;
      for (const n of s.inFlight.keys()) if (this.late(s, n, now)) (past ??= []).push(n);
      if (past) for (const n of past) this.giveUp(s, n, "deadline", effects);
    }
    if (!s.ordered) return this.pumpPool(s, now, effects);
    // Dispatch: up to `window` requests of the session at its server, the oldest unanswered
    // first; responses still reach the client in request order (I3: the delivery pump below).
    const srv = s.server ? this.servers.get(s.server) : undefined;
    if (!s.server || !s.serverSynced || now < s.dispatchRetryAt || !srv || !srv.alive || srv.presumed) return this.pumpDelivery(s, now, effects);
    // After a server died holding several of them: one at a time until those are answered.
    const window = s.suspects.size > 0 ? 1 : s.window;
    for (let n = s.answered + 1; n <= s.answered + s.window && s.inFlight.size < window; n++) {
      if (s.inFlight.has(n) || s.responses.has(n)) continue;
      if (this.late(s, n, now)) this.giveUp(s, n, "deadline", effects);
      const req = s.requests.get(n);
      if (!req) break; // not read yet: nor are the ones after it
      // A delayed request holds its place: nothing after it goes before its time.
      if (now < (req.notBefore ?? 0)) break;
      // Answered by its error response soon; an attempt not yet counted, a retry's back-off.
      if (req.rejected || s.awaitingAttempt.has(n) || now < (s.attempts.get(n)?.retryAt ?? 0)) continue;
      if (s.dispatchAttempts === 0) this.budget(s.service).deposit(); // retries are not new load
      this.dispatchTo(s, n, req, s.server, now, effects);
    }
    this.pumpDelivery(s, now, effects);
  }

  /**
   * A pool's dispatch: up to `window` requests at servers, the oldest waiting first, each to the server with the most room
   * (its share of them per unit of capacity; at most twice its capacity, so each handler slot has
   * the next request waiting at the server rather than a round trip away). A delayed request does
   * not hold back the ones after it: there is no order to keep.
   */
  /** Request n of the session is past its deadline (and not refused: its error response answers it). */
  private late(s: SessionEntry, n: number, now: number): boolean {
    const req = s.requests.get(n);
    return req !== undefined && !req.rejected && req.deadline !== undefined && now >= req.deadline;
  }

  private pumpPool(s: SessionEntry, now: number, effects: Effect[]): void {
    const window = s.suspects.size > 0 ? 1 : s.window;
    if (now < s.dispatchRetryAt || s.inFlight.size >= window || s.answered >= s.lastReq) return this.pumpDelivery(s, now, effects);
    let anyServer = false;
    for (const id of s.synced) {
      const srv = this.servers.get(id);
      if (srv && srv.alive && !srv.presumed) {
        anyServer = true;
        break;
      }
    }
    if (!anyServer) return this.pumpDelivery(s, now, effects);
    // Each server's load in this session, counted when there is something to send: most pumps
    // (an acknowledgement, a delivery) find nothing new.
    let room: Map<string, { srv: ServerEntry; load: number }> | undefined;
    // Past a long request, as far as the session may have pending (at most 1,024 in a pool): a
    // request that runs long holds back none of the others until that many have gone past it.
    const last = Math.min(s.lastReq, s.answered + s.maxPending);
    for (let n = s.answered + 1; n <= last && s.inFlight.size < window; n++) {
      if (s.inFlight.has(n) || s.responses.has(n) || s.takenAlso.has(n)) continue;
      if (this.late(s, n, now)) this.giveUp(s, n, "deadline", effects);
      const req = s.requests.get(n);
      if (!req) break; // not read yet: nor are the ones after it
      if (now < (req.notBefore ?? 0)) continue;
      if (req.rejected || s.awaitingAttempt.has(n) || now < (s.attempts.get(n)?.retryAt ?? 0)) continue;
      room ??= this.poolRoom(s);
      let best: { srv: ServerEntry; load: number } | undefined;
      for (const r of room.values()) {
        if (r.load >= 2 * r.srv.capacity) continue;
        if (!best || r.load / r.srv.capacity < best.load / best.srv.capacity) best = r;
      }
      if (!best) break; // every server is full: the next response frees room
      best.load++;
      if (s.dispatchAttempts === 0) this.budget(s.service).deposit();
      this.dispatchTo(s, n, req, best.srv.id, now, effects);
    }
    this.pumpDelivery(s, now, effects);
  }

  /** The live servers a pool is synced with, each with how many of the session's requests it holds. */
  private poolRoom(s: SessionEntry): Map<string, { srv: ServerEntry; load: number }> {
    const room = new Map<string, { srv: ServerEntry; load: number }>();
    for (const id of s.synced) {
      const srv = this.servers.get(id);
      if (srv && srv.alive && !srv.presumed) room.set(id, { srv, load: 0 });
    }
    for (const d of s.inFlight.values()) {
      const r = room.get(d.server);
      if (r) r.load++;
    }
    return room;
  }

  private dispatchTo(s: SessionEntry, n: number, req: PendingRequest, server: string, now: number, effects: Effect[]): void {
    s.inFlight.set(n, { server, at: now, acked: false, runningAt: 0 });
    s.sentTo.set(n, server);
    const work: DispatchWork = { client: s.client, kind: req.kind, payload: req.payload, seq: req.seq, restart: s.serverRestart, attempt: (s.attempts.get(n)?.failures ?? 0) + 1 };
    if (req.evicted) work.evicted = true;
    if (req.tp !== undefined) work.tp = req.tp;
    if (req.deadline !== undefined) work.deadline = req.deadline;
    effects.push({ type: "dispatch", server, session: s.id, n, service: s.service, hedged: s.hedge !== null, work });
  }

  private pumpDelivery(s: SessionEntry, now: number, effects: Effect[]): void {
    // Deliver: in request order, up to the session's window in flight (the client accepts them
    // in order; they travel in order on one connection), only to a client synced with this epoch.
    if (now < s.deliverRetryAt) return;
    const c = this.clients.get(s.client);
    if (!c || !c.synced) return;
    if (!s.ordered) {
      // As they complete (the table holds responses in the order they were stored). By key: an
      // entry pair per held response on every pump was the manager's largest allocation.
      for (const n of s.responses.keys()) {
        if (s.deliveringSet.size >= s.window) break;
        if (n <= s.delivered || s.deliveredAlso.has(n) || s.deliveringSet.has(n)) continue;
        s.deliveringSet.add(n);
        effects.push({ type: "deliver", client: s.client, session: s.id, n, service: s.service, response: s.responses.get(n)! });
      }
      return;
    }
    for (let n = Math.max(s.delivering, s.delivered) + 1; n <= s.delivered + s.window; n++) {
      const response = s.responses.get(n);
      if (!response) break;
      s.delivering = n;
      effects.push({ type: "deliver", client: s.client, session: s.id, n, service: s.service, response });
    }
  }

  // ---- persistence -----------------------------------------------------------------------

  private newEntry(id: string, client: string, service: string, maxPending: number, hedge?: HedgeOptions, retry?: RetryOptions, window = 1, pool = false): SessionEntry {
    return {
      id,
      client,
      service,
      maxPending,
      hedge: hedge ?? null,
      server: null,
      serverSynced: false,
      lastReq: 0,
      answered: 0,
      taken: 0,
      delivered: 0,
      delivering: 0,
      deliverRetryAt: 0,
      deliverAttempts: 0,
      inFlight: new Map(),
      // A hedged session races copies of one request: one at a time (calls.ts refuses more).
      window: hedge ? 1 : Math.max(1, Math.min(window, maxPending)),
      ordered: !pool || hedge !== undefined,
      synced: new Set(),
      restarting: new Set(),
      takenAlso: new Set(),
      deliveredAlso: new Set(),
      deliveringSet: new Set(),
      dispatchRetryAt: 0,
      dispatchAttempts: 0,
      clientRestart: null,
      serverRestart: null,
      requests: new Map(),
      responses: new Map(),
      bytes: 0,
      dirty: true,
      retry: retry ?? null,
      attempts: new Map(),
      awaitingAttempt: new Set(),
      suspects: new Set(),
      sentTo: new Map(),
    };
  }

  record(s: SessionEntry): SessionRecord {
    return {
      v: 1,
      session: s.id,
      client: s.client,
      service: s.service,
      maxPending: s.maxPending,
      ...(s.window > 1 ? { window: s.window } : {}),
      ...(!s.ordered ? { pool: true as const } : {}),
      ...(s.takenAlso.size > 0 ? { takenAlso: [...s.takenAlso].sort((a, b) => a - b) } : {}),
      ...(s.hedge ? { hedge: s.hedge } : {}),
      ...(s.retry ? { retry: s.retry } : {}),
      server: s.server,
      status: "open",
      lastReq: s.lastReq,
      answered: s.answered,
      taken: s.taken,
      epoch: this.epoch,
    };
  }

  /** Every open session's record, for a full backup. */
  allRecords(): SessionRecord[] {
    return [...this.sessions.values()].map((s) => this.record(s));
  }

  /** Dirty session records (clears the flags) and the cursor that makes them a consistent cut. */
  snapshot(): { records: SessionRecord[]; removed: string[]; cursor: CursorRecord } {
    const records: SessionRecord[] = [];
    let reqFrom = this.reqSeq + 1;
    let respFrom = this.respSeq + 1;
    for (const s of this.sessions.values()) {
      if (s.dirty) {
        records.push(this.record(s));
        s.dirty = false;
      }
      for (const r of s.requests.values()) if (r.seq > 0 && r.seq < reqFrom) reqFrom = r.seq;
      for (const r of s.responses.values()) if (r.seq > 0 && r.seq < respFrom) respFrom = r.seq;
      // A failed attempt's record is what a new primary counts it from: kept until answered.
      for (const a of s.attempts.values()) for (const q of a.seqs) if (q > 0 && q < respFrom) respFrom = q;
    }
    const removed = this.removed;
    this.removed = [];
    return {
      records,
      removed,
      cursor: {
        v: 1,
        epoch: this.epoch,
        reqSeq: this.reqSeq,
        respSeq: this.respSeq,
        reqFrom,
        respFrom,
        services: [...this.services],
        servers: [...this.servers.values()].map((s) => ({ id: s.id, service: s.service, capacity: s.capacity })),
        hedging: Object.fromEntries([...this.hedging].map(([svc, b]) => [svc, b.toJSON()])),
      },
    };
  }

  /** Rebuild from persisted records; the streams are then replayed from cursor.reqFrom/respFrom. */
  restore(
    records: SessionRecord[],
    restarts: Map<string, { client?: RestartRecord; server?: RestartRecord }>,
    cursor: CursorRecord | null,
    now: number,
  ): void {
    for (const r of records) {
      const s = this.newEntry(r.session, r.client, r.service, r.maxPending, r.hedge, r.retry, r.window, r.pool === true);
      s.server = s.ordered ? r.server : null;
      s.lastReq = r.lastReq;
      s.answered = r.answered;
      s.taken = r.taken;
      s.delivered = r.taken;
      for (const n of r.takenAlso ?? []) if (n > r.taken && n <= r.lastReq) s.takenAlso.add(n);
      s.deliveredAlso = new Set(s.takenAlso);
      s.dirty = false;
      const rs = restarts.get(r.session);
      s.clientRestart = rs?.client ?? null;
      s.serverRestart = rs?.server ?? null;
      const before = this.sessions.get(s.id);
      if (before) this.remove(before);
      this.add(s);
      this.services.add(r.service);
    }
    if (cursor) {
      this.cursors = { req: cursor.reqSeq, resp: cursor.respSeq };
      for (const svc of cursor.services) this.services.add(svc);
      for (const [svc, j] of Object.entries(cursor.hedging ?? {})) this.hedging.set(svc, HedgeBudget.fromJSON(j, this.limits.hedge ?? DEFAULT_HEDGE_BUDGET));
      for (const srv of cursor.servers) this.servers.set(srv.id, newServer(srv.id, srv.service, srv.capacity ?? 1, now, true));
    }
    // A record can name a server the cursor does not (records may be newer than the cursor's
    // server list). Presume it too: if it never answers, it times out and its sessions move.
    // Unknown, nothing ever moved them (a fault-property run stalled on it).
    for (const s of this.sessions.values()) {
      if (s.server !== null && !this.servers.has(s.server)) this.servers.set(s.server, newServer(s.server, s.service, 1, now, true));
    }
  }
}
