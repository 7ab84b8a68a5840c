/**
 * Parsing and replying shared by the actors: queue messages with validation (I7), replies with
 * stable error codes, and copies of rejected input in the dead-letter stream.
 */
import type { JsMsg } from "@nats-io/jetstream";
import type { Msg, MsgHdrs } from "@nats-io/transport-node";
import type { HedgeOptions, RequestKind, ResponseBody, Reply, WireErr } from "../machines/types.js";
import { ErrorCode, TandemError } from "../runtime/errors.js";
import type { Runtime } from "../runtime/runtime.js";
import { isTraceParent } from "../runtime/trace-context.js";
import {
  decode,
  encode,
  field,
  Header,
  isToken,
  isNonNegInt,
  isObject,
  isPositiveInt,
  makeHeaders,
  malformed,
  type Names,
} from "../runtime/wire.js";

export type ParsedRequest =
  | {
      type: "request";
      request: { client: string; session: string; n: number; kind: RequestKind; payload: unknown; restart?: unknown; tp?: string };
      size: number;
      /** Receipts committed along with this request (the client's `taken` riding on it). */
      taken?: number;
    }
  | { type: "taken"; client: string; session: string; taken: number }
  | {
      type: "open";
      client: string;
      session: string;
      service: string;
      ordered: boolean;
      maxPending: number;
      restart?: unknown;
      hedge?: HedgeOptions;
    }
  | { error: TandemError; client?: string; session?: string; n?: number };

export const MAX_HEDGE_COPIES = 8;

/** Validate a session's hedge options (docs/design.md §5). */
export function parseHedge(v: unknown): HedgeOptions {
  const bad = (why: string) =>
    new TandemError(ErrorCode.Hedge, `hedge options ${why}; use e.g. { copies: 2, after: 50 } or { copies: 3, after: "p95" }`, { context: { hedge: v } });
  if (!isObject(v)) throw bad("must be an object");
  const { copies, after } = v;
  if (typeof copies !== "number" || !Number.isInteger(copies) || copies < 2 || copies > MAX_HEDGE_COPIES) {
    throw bad(`need "copies" between 2 and ${MAX_HEDGE_COPIES}`);
  }
  if (after !== "p95" && !(typeof after === "number" && Number.isFinite(after) && after >= 0 && after <= 3_600_000)) {
    throw bad(`need "after": milliseconds (0 = at once) or "p95"`);
  }
  return { copies, after };
}

export function parseRequestMsg(names: Names, m: { subject: string; headers?: MsgHdrs | undefined; data: Uint8Array }): ParsedRequest {
  const ids = names.parseQueueSubject(m.subject);
  if (!ids) return { error: malformed(`subject ${m.subject} is not ${names.prefix}.req.<client>.<session>`) };
  try {
    const v = decode(m.data);
    if (!isObject(v)) throw malformed("request body must be a JSON object");
    // The body says what it is (a request has "n"; an open record "open"; a receipt only
    // "taken"): reading the Tandem-Kind header instead would decode every header of every
    // message, a twentieth of the manager's CPU under load. The headers are for people.
    if (!("n" in v) || isObject(v.open)) {
      if (isObject(v.open)) {
        const o = v.open;
        // The service is a subject token, as the open call requires (a 600 kB service name in an
        // open record once made every backup too large to send).
        if (!isToken(o.service)) throw malformed(`open record: "service" must be 1-64 letters, digits, _ or -`, { field: "service" });
        const service = o.service;
        return {
          type: "open",
          ...ids,
          service,
          ordered: o.ordered !== false,
          maxPending: isPositiveInt(o.maxPending) ? o.maxPending : 1000,
          ...("restart" in o ? { restart: o.restart } : {}),
          ...(o.hedge !== undefined ? { hedge: parseHedge(o.hedge) } : {}),
        };
      }
      const taken = field(v, "taken", isNonNegInt, "a non-negative integer");
      return { type: "taken", ...ids, taken };
    }
    const n = field(v, "n", isPositiveInt, "a positive integer");
    const k = v.kind ?? "request";
    if (k !== "request" && k !== "update") throw malformed(`field "kind" must be "request" or "update"`, { field: "kind" });
    if (!("payload" in v)) throw malformed(`field "payload" is missing`, { field: "payload" });
    // Size of what the application sent: the message bounds it; measure exactly only when close.
    const size = m.data.length <= 64 * 1024 ? m.data.length : encode(v.payload ?? null).length;
    const taken = typeof v.taken === "number" && Number.isInteger(v.taken) && v.taken >= 0 ? v.taken : undefined;
    return {
      type: "request",
      request: { ...ids, n, kind: k, payload: v.payload, ...("restart" in v ? { restart: v.restart } : {}), ...(isTraceParent(v.tp) ? { tp: v.tp } : {}) },
      size,
      ...(taken !== undefined ? { taken } : {}),
    };
  } catch (err) {
    const n = Number(m.headers?.get(Header.Request));
    return { error: asTandem(err), ...ids, ...(Number.isInteger(n) && n > 0 ? { n } : {}) };
  }
}

export type ParsedResponse =
  | { type: "response"; body: { client: string; session: string } & ResponseBody }
  | { type: "checkpoint"; body: { client: string; session: string; n: number; server: string; restart: unknown } }
  | { error: TandemError };

export function parseResponseMsg(names: Names, m: JsMsg): ParsedResponse {
  const ids = names.parseQueueSubject(m.subject);
  if (!ids) return { error: malformed(`subject ${m.subject} is not ${names.prefix}.resp.<client>.<session>`) };
  try {
    const v = decode(m.data);
    if (!isObject(v)) throw malformed("response body must be a JSON object");
    const n = field(v, "n", isPositiveInt, "a positive integer");
    const server = typeof v.server === "string" ? v.server : "unknown";
    // A response has "ok" or "error"; a checkpoint has neither (the body says it: see above).
    if (!("ok" in v) && !("error" in v)) {
      if (!("restart" in v)) throw malformed(`a response needs "ok" or "error", a checkpoint "restart"`);
      return { type: "checkpoint", body: { ...ids, n, server, restart: v.restart } };
    }
    const body: { client: string; session: string } & ResponseBody = { ...ids, n, server };
    if (isObject(v.error)) body.error = v.error as unknown as WireErr;
    else body.ok = v.ok;
    if ("restart" in v) body.restart = v.restart;
    if (isTraceParent(v.tp)) body.tp = v.tp;
    return { type: "response", body };
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

export function replyOk<T>(m: Msg, value: T): void {
  if (!m.reply) return;
  m.respond(encode({ ok: true, value } satisfies Reply<T>));
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

/** The DLQ reason token: TANDEM_UNKNOWN_SESSION -> unknown_session. */
export function dlqReason(code: string): string {
  return code.replace(/^TANDEM_/, "").toLowerCase().replace(/[^a-z0-9_]/g, "_") || "unknown";
}

/**
 * A copy of rejected input in TANDEM_DLQ: the error (code, message, context), where it came
 * from, its headers and body. Never throws: a DLQ failure must not take anything down.
 */
export async function publishDlq(
  rt: Pick<Runtime, "js" | "names" | "logger">,
  err: WireErr,
  subject: string,
  headers: MsgHdrs | undefined,
  data: Uint8Array | undefined,
  dedupe?: string,
): Promise<void> {
  const hdrs: Record<string, string> = {};
  if (headers) for (const k of headers.keys()) hdrs[k] = headers.get(k);
  const body = {
    code: err.code,
    message: err.message,
    context: err.context ?? {},
    subject,
    headers: hdrs,
    data: data ? Buffer.from(data).toString("base64") : null,
    at: new Date().toISOString(),
  };
  try {
    await rt.js.publish(rt.names.dlq(dlqReason(err.code)), encode(body), {
      headers: makeHeaders({ code: err.code, kind: "control" }),
      ...(dedupe ? { msgID: `dlq.${dlqReason(err.code)}.${dedupe}` } : {}),
    });
  } catch (e) {
    rt.logger.warn({ err: e, code: err.code }, "could not publish to the dead-letter stream");
  }
  rt.logger.warn({ code: err.code, subject, reason: err.message }, "rejected input sent to the dead-letter stream");
}
