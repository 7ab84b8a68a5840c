/**
 * Parsing and replying shared by the actors: queue messages with validation (I7), replies with
 * stable error codes, and copies of rejected input in the dead-letter stream.
 */
import { withBackoff } from "../runtime/backoff.js";
import type { Msg, MsgHdrs } from "@nats-io/transport-node";
import type { HedgeOptions, RequestKind, ResponseBody, Reply, RetryOptions, WireErr } from "../machines/types.js";
import { ErrorCode, TandemError } from "../runtime/errors.js";
import type { Runtime } from "../runtime/runtime.js";
import { isTraceParent } from "../runtime/trace-context.js";
import type { DispatchKeys } from "../runtime/dispatch-key.js";
import { decode, encode, Header, isToken, isObject, makeHeaders, malformed, type Names } from "../runtime/wire.js";
import type { ReplyBatcher } from "./reply-batcher.js";
import { fits, MAX_HEDGE_COPIES, parse, V } from "./schemas.js";

/** One request of a session's queue, as the manager applies it. */
export interface ParsedOneRequest {
  type: "request";
  request: { client: string; session: string; n: number; kind: RequestKind; payload: unknown; restart?: unknown; tp?: string; retry?: RetryOptions; deadline?: number; notBefore?: number };
  size: number;
  /** Bytes of the restart data riding on it: at most this (exact only when the message is large). */
  restartSize: number;
  /** Receipts committed along with this request (the client's `taken` riding on it). */
  taken?: number;
  /** A pool's receipts above `taken`. */
  takenAlso?: number[];
}

/** An element of a request batch: the request, or why it was refused (with its request number when it says one). */
export type ParsedBatchItem = { raw: unknown } & (ParsedOneRequest | { error: TandemError; n?: number });

export type ParsedRequest =
  | ParsedOneRequest
  | { type: "batch"; client: string; session: string; items: ParsedBatchItem[] }
  | { type: "taken"; client: string; session: string; taken: number; takenAlso?: number[] }
  | { type: "cancel"; client: string; session: string; n: number; reason: "cancelled" | "deadline" }
  | {
      type: "open";
      client: string;
      session: string;
      service: string;
      maxPending: number;
      window?: number;
      restart?: unknown;
      hedge?: HedgeOptions;
      retry?: RetryOptions;
    }
  | { error: TandemError; client?: string; session?: string; n?: number };

/** Validate a session's hedge options (docs/design.md §5). */
export function parseHedge(v: unknown): HedgeOptions {
  if (fits(V.hedge, v)) return v;
  throw new TandemError(
    ErrorCode.Hedge,
    `hedge options need "copies" between 2 and ${MAX_HEDGE_COPIES} and "after": milliseconds (0 = at once) or "p95"; use e.g. { copies: 2, after: 50 } or { copies: 3, after: "p95" }`,
    { context: { hedge: isObject(v) ? v : String(v) } },
  );
}

export function parseRequestMsg(names: Names, m: { subject: string; headers?: MsgHdrs | undefined; data: Uint8Array }): ParsedRequest {
  const where = names.parseQueueSubject(m.subject);
  if (!where) return { error: malformed(`subject ${m.subject} is not ${names.prefix}.req.<client>.<session>`) };
  const ids = { client: where.owner, session: where.session };
  try {
    const v = decode(m.data);
    if (!isObject(v)) throw malformed("request body must be a JSON object");
    // The body says what it is (a request has "n"; an open record "open"; a receipt only
    // "taken"): reading the Tandem-Kind header instead would decode every header of every
    // message, a twentieth of the manager's CPU under load. The headers are for people.
    if (!("n" in v) && "batch" in v) return parseRequestBatch(ids, v, m.data.length);
    if (!("n" in v) || isObject(v.open)) {
      if ("open" in v) {
        // The service is a subject token (a 600 kB service name in an open record once made
        // every backup too large to send).
        const o = parse(V.openRecord, v).open;
        return {
          type: "open",
          ...ids,
          service: o.service,
          maxPending: o.maxPending ?? 1000,
          ...(o.window !== undefined ? { window: o.window } : {}),
          ...(o.pool === true ? { pool: true } : {}),
          ...("restart" in o ? { restart: o.restart } : {}),
          ...(o.hedge !== undefined ? { hedge: parseHedge(o.hedge) } : {}),
          ...(o.retry !== undefined ? { retry: o.retry } : {}),
        };
      }
      if ("cancel" in v) {
        const c = parse(V.cancelRecord, v);
        return { type: "cancel", ...ids, n: c.cancel, reason: c.reason };
      }
      const t = parse(V.taken, v);
      return { type: "taken", ...ids, taken: t.taken, ...(t.takenAlso !== undefined ? { takenAlso: t.takenAlso } : {}) };
    }
    return parseOneRequest(ids, v, m.data.length, m.data.length <= 64 * 1024);
  } catch (err) {
    const n = Number(m.headers?.get(Header.Request));
    return { error: asTandem(err), ...ids, ...(Number.isSafeInteger(n) && n > 0 ? { n } : {}) };
  }
}

/**
 * A request record's body. `bytes` is the record's size: it bounds the request's, which is
 * measured exactly (the payload encoded again) only when `cheap` is false.
 */
function parseOneRequest(ids: { client: string; session: string }, v: unknown, bytes: number, cheap: boolean): ParsedOneRequest {
  const r = parse(V.request, v);
  if (!("payload" in r)) throw malformed(`request: field "payload" is missing`, { field: "payload" });
  const size = cheap ? bytes : encode(r.payload ?? null).length;
  const restartSize = "restart" in r ? bytes : 0;
  // Fields set one by one, not spread from a literal per optional field: this runs for every
  // request the manager reads, and the spreads were a tenth of its allocations.
  const request: ParsedOneRequest["request"] = { client: ids.client, session: ids.session, n: r.n, kind: r.kind ?? "request", payload: r.payload };
  if ("restart" in r) request.restart = r.restart;
  if (isTraceParent(r.tp)) request.tp = r.tp;
  if (r.retry !== undefined) request.retry = r.retry;
  if (r.deadline !== undefined) request.deadline = r.deadline;
  if (r.notBefore !== undefined) request.notBefore = r.notBefore;
  const out: ParsedOneRequest = { type: "request", request, size, restartSize };
  if (r.taken !== undefined) out.taken = r.taken;
  if (r.takenAlso !== undefined) out.takenAlso = r.takenAlso;
  return out;
}

/** A batch record up to this size charges each element an equal share of its bytes; a larger one measures each. */
const SMALL_BATCH_BYTES = 4096;

/**
 * Several requests of one session in one record (its client sent them in one turn, docs/design.md
 * §6). The envelope must fit; then each element is a request record checked on its own, so one
 * bad element is refused alone and the others are taken (I7).
 */
function parseRequestBatch(ids: { client: string; session: string }, v: Record<string, unknown>, bytes: number): ParsedRequest {
  const b = parse(V.requestBatch, v);
  // A small record bounds each element by an equal share (the session's byte bounds add up the
  // same); a larger one has each element's payload measured, so no element can hide behind the others.
  const cheap = bytes <= SMALL_BATCH_BYTES;
  const share = Math.ceil(bytes / b.batch.length);
  const items = b.batch.map((raw): ParsedBatchItem => {
    try {
      // The element's own object, not a copy spread into a new one (this runs per request).
      const one = parseOneRequest(ids, raw, cheap ? share : bytes, cheap) as ParsedOneRequest & { raw: unknown };
      one.raw = raw;
      return one;
    } catch (err) {
      const n = isObject(raw) && Number.isSafeInteger(raw.n) && Number(raw.n) > 0 ? Number(raw.n) : undefined;
      return { raw, error: asTandem(err), ...(n !== undefined ? { n } : {}) };
    }
  });
  return { type: "batch", ...ids, items };
}

/**
 * Request n of a record read back from the request queue: the record itself, or its element
 * when the record is a batch; with the bytes that stand for it (for the dead-letter stream).
 */
export function requestIn(names: Names, m: { subject: string; headers?: MsgHdrs | undefined; data: Uint8Array }, n: number): { parsed: ParsedRequest; data: Uint8Array } | null {
  const parsed = parseRequestMsg(names, m);
  if (!("type" in parsed)) return null;
  if (parsed.type !== "batch") return { parsed, data: m.data };
  const item = parsed.items.find((x) => ("type" in x ? x.request.n : x.n) === n);
  if (!item) return null;
  return "type" in item ? { parsed: item, data: encode(item.raw) } : null;
}

export type ParsedOneResponse =
  | { type: "response"; body: { session: string; restartSize: number } & ResponseBody }
  | { type: "checkpoint"; body: { session: string; n: number; server: string; restart: unknown; restartSize: number } };

export type ParsedResponse =
  | ParsedOneResponse
  | { type: "attempt"; body: { session: string; n: number; server: string; error: WireErr; at?: number } }
  /** Several responses (or checkpoints) of the session from one server, each checked on its own. */
  | { type: "batch"; session: string; server: string; items: Array<{ raw: unknown; size: number } & (ParsedOneResponse | { error: TandemError })> }
  | { error: TandemError };

/** The response queue's writer token of the manager's own records (error answers, attempts). */
export const MANAGER_WRITER = "manager";

/**
 * A response or a checkpoint of `server` for the session, its dispatch key checked (TANDEM_FORGED
 * when `server` was not given the request). `bytes`, the record's size, bounds its restart data.
 */
function parseOneResponse(session: string, server: string, v: unknown, bytes: number, keys: DispatchKeys): ParsedOneResponse {
  if (!isObject(v)) throw malformed("response body must be a JSON object");
  // A response has "ok" or "error"; a checkpoint has neither (the body says it: see above).
  const checkpoint = !("ok" in v) && !("error" in v);
  if (checkpoint && !("restart" in v)) throw malformed(`a response needs "ok" or "error", a checkpoint "restart"`);
  const r = checkpoint ? parse(V.checkpoint, v) : parse(V.response, v);
  if (!keys.check(r.k, session, r.n, server)) {
    throw new TandemError(ErrorCode.Forged, `${checkpoint ? "checkpoint" : "response"} for request ${r.n} of session ${session} from ${server}, which was not given that request: refused`, {
      context: { server, session, n: r.n },
    });
  }
  const restartSize = "restart" in r ? bytes : 0;
  if (checkpoint) return { type: "checkpoint", body: { session, n: r.n, server, restart: r.restart, restartSize } };
  const body: { session: string; restartSize: number } & ResponseBody = { session, n: r.n, server, restartSize };
  if ("error" in r && r.error !== undefined) body.error = r.error;
  else body.ok = (r as { ok?: unknown }).ok;
  if ("restart" in r) body.restart = r.restart;
  if (isTraceParent((r as { tp?: unknown }).tp)) body.tp = (r as { tp: string }).tp;
  return { type: "response", body };
}

/**
 * A response or checkpoint from `<p>.resp.<server>.<session>`, or a batch of them. The writer is
 * the subject's server token (NATS permissions confine a server to its own), and each body must
 * carry the dispatch key of that server for its request: a server cannot answer for work it was
 * not given.
 */
export function parseResponseMsg(names: Names, m: { subject: string; data: Uint8Array }, keys: DispatchKeys): ParsedResponse {
  const where = names.parseQueueSubject(m.subject);
  if (!where) return { error: malformed(`subject ${m.subject} is not ${names.prefix}.resp.<server>.<session>`) };
  const { owner: server, session } = where;
  try {
    const v = decode(m.data);
    if (!isObject(v)) throw malformed("response body must be a JSON object");
    if ("attempt" in v) {
      // Only the manager records attempts: under its own subject, with its own key.
      const a = parse(V.attempt, v);
      if (server !== MANAGER_WRITER || !keys.check(a.k, session, a.n, MANAGER_WRITER)) {
        throw new TandemError(ErrorCode.Forged, `attempt record for request ${a.n} of session ${session} not written by the manager: refused`, { context: { server, session, n: a.n } });
      }
      return { type: "attempt", body: { session, n: a.n, server: a.attempt.server, error: a.attempt.error, ...(a.attempt.at !== undefined ? { at: a.attempt.at } : {}) } };
    }
    if ("batch" in v && !("n" in v)) {
      const b = parse(V.responseBatch, v);
      // Each element's bytes, for the manager's byte bounds: as for request batches.
      const share = m.data.length <= SMALL_BATCH_BYTES ? Math.ceil(m.data.length / b.batch.length) : 0;
      const items = b.batch.map((raw) => {
        const size = share || encode(raw).length;
        try {
          const one = parseOneResponse(session, server, raw, m.data.length, keys) as ParsedOneResponse & { raw: unknown; size: number };
          one.raw = raw;
          one.size = size;
          return one;
        } catch (err) {
          return { raw, size, error: asTandem(err) };
        }
      });
      return { type: "batch", session, server, items };
    }
    return parseOneResponse(session, server, v, m.data.length, keys);
  } catch (err) {
    return { error: asTandem(err) };
  }
}

/**
 * Is a manager epoch in a message nobody asked for believable? Older than the one the receiver
 * knows is stale (I5). More than one newer is implausible: a takeover moves the epoch by one, and
 * the receiver learns larger jumps from the replies to its own requests (register, heartbeat,
 * open, resume), never from a message anyone could send (an epoch of 1e18 once made a server
 * refuse the real manager for good).
 */
/**
 * Work, cancels and deliveries name their session as the subject's last token (docs/design.md
 * §2): one for another session is refused, or `nats sub` on a session would miss traffic that
 * acts on it.
 */
export function checkAddressed(names: Names, subject: string, session: string, what: string): void {
  const named = names.subjectSession(subject);
  if (named !== session) throw malformed(`${what} for session ${session} came on the subject of session ${named}; the manager sends a session's messages on that session's subject only`, { field: "session" });
}

export function epochProblem(epoch: unknown, seen: number): "stale" | "implausible" | null {
  if (typeof epoch !== "number" || !Number.isSafeInteger(epoch) || epoch < 0) return "implausible";
  if (epoch < seen) return "stale";
  if (seen > 0 && epoch > seen + 1) return "implausible";
  return null;
}

export function asTandem(err: unknown): TandemError {
  if (err instanceof TandemError) return err;
  return new TandemError(ErrorCode.Malformed, err instanceof Error ? err.message : String(err), { cause: err });
}

/** `batcher`: for acknowledgements on the hot path, which may travel with the others of their turn. */
export function replyOk<T>(m: Msg, value: T, batcher?: ReplyBatcher): void {
  if (!m.reply) return;
  const data = encode({ ok: true, value } satisfies Reply<T>);
  if (batcher) batcher.respond(m, data);
  else m.respond(data);
}

export function replyError(m: Msg, err: TandemError): void {
  if (!m.reply) return;
  m.respond(encode({ ok: false, error: err.toWire() } satisfies Reply<never>), { headers: makeHeaders({ code: err.code }) });
}

/** Unwrap a Reply, turning an error reply into a TandemError with its code. */
export function unwrap<T>(data: Uint8Array): T {
  const r = decode(data) as Reply<T>;
  if (!isObject(r) || typeof r.ok !== "boolean") throw malformed("reply is not a Tandem reply");
  if (r.ok) return r.value;
  throw TandemError.fromWire(r.error);
}

/** Bytes of dead-letter copies being written at once, per process (README: Limits). */
export const DLQ_IN_FLIGHT_BYTES = 16 * 1024 * 1024;
let dlqInFlight = 0;

/**
 * Who wrote a message, from its subject: the client of `<p>.req|mgr.<op>.<client>…`, the
 * server of `<p>.srv.<server>.…` or `<p>.resp.<server>.…`. In a secured deployment NATS lets
 * each user publish only under its own id, so this names the user; unsecured, it is a claim.
 */
export function writerOf(prefix: string, subject: string): { client?: string; server?: string } {
  const t = subject.split(".");
  if (t[0] !== prefix || t.length < 3) return {};
  const id = (x: string | undefined) => (x !== undefined && isToken(x) ? x : undefined);
  if (t[1] === "req") return id(t[2]) ? { client: t[2] } : {};
  if (t[1] === "mgr" && t.length === 4) return id(t[3]) ? { client: t[3] } : {};
  if (t[1] === "srv" || t[1] === "resp" || t[1] === "beat") return id(t[2]) ? { server: t[2] } : {};
  return {};
}

/** Who reports a dead letter: this process's NATS user (what NATS lets it publish as). */
export function dlqReporter(rt: Pick<Runtime, "config">): string {
  return rt.config.natsUser || UNSECURED_REPORTER;
}
export const UNSECURED_REPORTER = "unsecured";

/** The DLQ reason token: TANDEM_UNKNOWN_SESSION -> unknown_session. */
export function dlqReason(code: string): string {
  return code.replace(/^TANDEM_/, "").toLowerCase().replace(/[^a-z0-9_]/g, "_") || "unknown";
}

/**
 * A copy of rejected input in TANDEM_DLQ: the error (code, message, context), where it came
 * from, its headers and body. Never throws: a DLQ failure must not take anything down.
 */
export async function publishDlq(
  rt: Pick<Runtime, "js" | "names" | "logger" | "config"> & Partial<Pick<Runtime, "metrics">>,
  err: WireErr,
  subject: string,
  headers: MsgHdrs | undefined,
  data: Uint8Array | undefined,
  dedupe?: string,
): Promise<void> {
  rt.metrics?.deadLettered.inc({ code: err.code });
  const hdrs: Record<string, string> = {};
  if (headers) for (const k of headers.keys()) hdrs[k] = headers.get(k);
  // Copies in flight are bounded in bytes: a flood of bad input must not grow the process
  // while the DLQ writes catch up. Past the bound an entry keeps everything but its bytes.
  const size = data?.length ?? 0;
  const keep = size > 0 && dlqInFlight + size <= DLQ_IN_FLIGHT_BYTES;
  const body = {
    code: err.code,
    message: err.message,
    context: err.context ?? {},
    subject,
    /** Whose subject it came on (the token NATS permissions confine a user to), when it says. */
    from: writerOf(rt.names.prefix, subject),
    headers: hdrs,
    // An empty message is kept as what it was (""), not as "no bytes kept" (null).
    data: keep ? Buffer.from(data!).toString("base64") : data !== undefined && size === 0 ? "" : null,
    size,
    ...(size > 0 && !keep ? { dataDropped: `more than ${DLQ_IN_FLIGHT_BYTES} bytes of dead letters were in flight` } : {}),
    at: new Date().toISOString(),
  };
  if (keep) dlqInFlight += size;
  try {
    await rt.js.publish(rt.names.dlq(dlqReason(err.code), dlqReporter(rt)), encode(body), {
      headers: makeHeaders({ code: err.code, kind: "control" }),
      ...(dedupe ? { msgID: `dlq.${dlqReason(err.code)}.${dedupe}` } : {}),
    });
  } catch (e) {
    rt.logger.warn({ err: e, code: err.code }, "could not publish to the dead-letter stream");
  } finally {
    if (keep) dlqInFlight -= size;
  }
  logRejected(rt.logger, err.code, subject, err.message);
}

// One warning per code per 10 s, then how many more: a flood of bad input must not become a
// flood of log lines (writing them once cost more than refusing the input).
const logged = new Map<string, { at: number; more: number }>();

function logRejected(logger: Runtime["logger"], code: string, subject: string, reason: string): void {
  const t = performance.now();
  const seen = logged.get(code);
  if (seen && t - seen.at < 10_000) {
    seen.more++;
    return;
  }
  const more = seen?.more ?? 0;
  logged.set(code, { at: t, more: 0 });
  logger.warn({ code, subject, reason, ...(more > 0 ? { alsoRejected: more } : {}) }, `rejected input sent to the dead-letter stream${more > 0 ? ` (and ${more} more with this code in the last 10 s)` : ""}`);
}

/**
 * Our subscriptions are registered at the server (a flush), riding out a NATS outage: a flush in
 * flight when the connection drops is rejected ("connection disconnected"), and the subscriptions
 * are sent again at the reconnect, so try again until the connection is back. (A client started
 * as nats-server was killed once exited with that error.)
 */
export async function flushed(rt: Pick<Runtime, "nc">): Promise<void> {
  await withBackoff(() => rt.nc.flush(), { initialMs: 50, maxMs: 1000, forMs: 120_000, fatal: () => rt.nc.isClosed() });
}
