/**
 * `tandem trace <session> [n]`: what happened to a session's requests, read back from what is
 * durable: the session's request queue (requests, receipts), its response queue (checkpoints,
 * responses), and its records in `tandem_sessions` (hedged copies taken, winners, cancels).
 * JetStream stamps every stored message, so each step has the time the broker stored it.
 * Dispatches and deliveries are core messages: a dispatch shows as the server that checkpointed
 * or answered, a delivery as the receipt the client committed after it.
 */
import type { JsMsg } from "@nats-io/jetstream";
import type { HedgeRecord } from "../actors/hedgeProxy.js";
import type { Runtime } from "../runtime/runtime.js";
import { readSessionInfo, type SessionInfo, type TookRecord } from "../actors/sessionInfo.js";
import { decode, isObject } from "../runtime/wire.js";

/** Entries read from one queue at most (a trace is for looking at, not for bulk export). */
export const TRACE_MAX_ENTRIES = 20_000;

export type TraceStep =
  | { step: "queued"; at: string; seq: number; kind: string; restart: boolean; traceparent?: string }
  | { step: "checkpoint"; at: string; seq: number; server: string }
  | { step: "answered"; at: string; seq: number; server: string; ok: boolean; code?: string }
  | { step: "copy"; at: string; server: string; copy: number }
  | { step: "hedge-settled"; winner: string | null; cancelled: string[]; latencyMs: number }
  | { step: "taken"; at: string; seq: number };

export interface RequestTrace {
  n: number;
  traceparent?: string;
  /** queued, at a server, answered (not yet taken), or taken by the application. */
  state: "queued" | "answered" | "taken" | "unknown";
  steps: TraceStep[];
}

export interface SessionTrace {
  session: string;
  client: string | null;
  record: SessionInfo["record"];
  requests: RequestTrace[];
  /** Set when a queue held more than TRACE_MAX_ENTRIES entries for the session. */
  truncated: boolean;
  /** The deployment's stream names (the prefix decides them). */
  streams: { req: string; resp: string };
}

async function readQueue(rt: Runtime, stream: string, subject: string): Promise<{ msgs: JsMsg[]; truncated: boolean }> {
  const info = await rt.jsm.streams.info(stream, { subjects_filter: subject });
  // The filter may be a wildcard (a session's responses come from each server's subject).
  const count = Object.values(info.state.subjects ?? {}).reduce((a, b) => a + b, 0);
  if (count === 0) return { msgs: [], truncated: false };
  const want = Math.min(count, TRACE_MAX_ENTRIES);
  const consumer = await rt.js.consumers.get(stream, { filter_subjects: subject });
  const msgs: JsMsg[] = [];
  try {
    const iter = await consumer.fetch({ max_messages: want, expires: 5000 });
    for await (const m of iter) {
      msgs.push(m);
      if (msgs.length >= want) break;
    }
  } finally {
    await consumer.delete().catch(() => {});
  }
  return { msgs, truncated: count > want };
}

const at = (m: JsMsg) => new Date(m.info.timestampNanos / 1e6).toISOString();

/** The session's client id, from its record or from whichever queue subject holds its entries. */
async function clientOf(rt: Runtime, session: string, info: SessionInfo): Promise<string | null> {
  if (info.record) return info.record.client;
  const s = await rt.jsm.streams.info(rt.names.streamReq, { subjects_filter: rt.names.req("*", session) });
  const subject = Object.keys(s.state.subjects ?? {})[0];
  return subject ? (subject.split(".")[2] ?? null) : null;
}

export async function traceSession(rt: Runtime, session: string, only?: number): Promise<SessionTrace> {
  const info = await readSessionInfo(rt, session);
  const client = await clientOf(rt, session, info);
  const out: SessionTrace = { session, client, record: info.record, requests: [], truncated: false, streams: { req: rt.names.streamReq, resp: rt.names.streamResp } };
  if (!client) return out;
  const [req, resp] = await Promise.all([
    readQueue(rt, rt.names.streamReq, rt.names.req(client, session)),
    readQueue(rt, rt.names.streamResp, rt.names.respOf(session)),
  ]);
  out.truncated = req.truncated || resp.truncated;
  const byN = new Map<number, RequestTrace>();
  const get = (n: number) => {
    let t = byN.get(n);
    if (!t) byN.set(n, (t = { n, state: "unknown", steps: [] }));
    return t;
  };
  const receipts: Array<{ taken: number; at: string; seq: number }> = [];
  for (const m of req.msgs) {
    let v: unknown;
    try {
      v = decode(m.data);
    } catch {
      continue; // malformed entries are the DLQ's to show
    }
    if (!isObject(v)) continue;
    // A batch record holds several requests of the session, each traced as if stored alone.
    for (const e of Array.isArray(v.batch) ? v.batch : [v]) {
      if (!isObject(e)) continue;
      if (typeof e.taken === "number") receipts.push({ taken: e.taken, at: at(m), seq: m.seq });
      if (typeof e.n !== "number") continue;
      const t = get(e.n);
      const tp = typeof e.tp === "string" ? e.tp : undefined;
      if (tp) t.traceparent = tp;
      t.state = "queued";
      t.steps.push({ step: "queued", at: at(m), seq: m.seq, kind: typeof e.kind === "string" ? e.kind : "request", restart: "restart" in e, ...(tp ? { traceparent: tp } : {}) });
    }
  }
  for (const m of resp.msgs) {
    let v: unknown;
    try {
      v = decode(m.data);
    } catch {
      continue;
    }
    if (!isObject(v)) continue;
    // The writer is the subject's server token (<p>.resp.<server>.<session>).
    const server = rt.names.parseQueueSubject(m.subject)?.owner ?? "?";
    // A batch record holds several responses of the session from its server.
    for (const e of Array.isArray(v.batch) ? v.batch : [v]) {
      if (!isObject(e) || typeof e.n !== "number") continue;
      const t = get(e.n);
      if ("ok" in e || "error" in e) {
        const err = isObject(e.error) ? e.error : null;
        t.state = "answered";
        t.steps.push({ step: "answered", at: at(m), seq: m.seq, server, ok: !err, ...(err && typeof err.code === "string" ? { code: err.code } : {}) });
      } else {
        t.steps.push({ step: "checkpoint", at: at(m), seq: m.seq, server });
      }
    }
  }
  for (const took of info.took as TookRecord[]) get(took.n).steps.push({ step: "copy", at: took.at, server: took.server, copy: took.copy });
  for (const h of info.hedges as HedgeRecord[]) get(h.n).steps.push({ step: "hedge-settled", winner: h.winner, cancelled: h.cancelled, latencyMs: h.latencyMs });
  // A receipt `taken: k` commits every response up to k; the first one at or past n is n's.
  receipts.sort((a, b) => a.seq - b.seq);
  for (const t of byN.values()) {
    const r = receipts.find((x) => x.taken >= t.n);
    if (r) {
      t.state = "taken";
      t.steps.push({ step: "taken", at: r.at, seq: r.seq });
    } else if (info.record && info.record.taken >= t.n) {
      t.state = "taken"; // the receipt was trimmed from the queue; the record still counts it
    }
    t.steps.sort((a, b) => ("at" in a ? a.at : "~").localeCompare("at" in b ? b.at : "~"));
  }
  out.requests = [...byN.values()].filter((t) => only === undefined || t.n === only).sort((a, b) => a.n - b.n);
  return out;
}

/** The human-readable form: one block per request, one line per step. */
export function formatTrace(t: SessionTrace): string {
  const r = t.record;
  const lines = [
    `session ${t.session}  client ${t.client ?? "?"}${r ? `  service ${r.service}  server ${r.server ?? "-"}  requests ${r.lastReq}  answered ${r.answered}  taken ${r.taken}` : "  (no session record: closed, or never opened)"}`,
  ];
  if (t.requests.length === 0) lines.push("  no queue entries for this session (closed sessions are purged)");
  const time = (iso: string) => iso.slice(11, 23);
  for (const q of t.requests) {
    lines.push("", `request ${q.n}  ${q.state}${q.traceparent ? `  traceparent ${q.traceparent}` : ""}`);
    const first = q.steps.find((s) => s.step === "queued");
    const t0 = first && "at" in first ? Date.parse(first.at) : NaN;
    for (const s of q.steps) {
      const when = "at" in s ? time(s.at) : "            ";
      const plus = "at" in s && Number.isFinite(t0) ? `  +${Date.parse(s.at) - t0} ms` : "";
      switch (s.step) {
        case "queued":
          lines.push(`  ${when}  queued       ${s.kind} in ${t.streams.req} seq ${s.seq}${s.restart ? ", with client restart data" : ""}`);
          break;
        case "copy":
          lines.push(`  ${when}  copy ${s.copy}       taken by ${s.server}${plus}`);
          break;
        case "checkpoint":
          lines.push(`  ${when}  checkpoint   by ${s.server}, ${t.streams.resp} seq ${s.seq}${plus}`);
          break;
        case "answered":
          lines.push(`  ${when}  answered     by ${s.server}: ${s.ok ? "ok" : `error ${s.code ?? "?"}`}, ${t.streams.resp} seq ${s.seq}${plus}`);
          break;
        case "hedge-settled":
          lines.push(`  ${when}  hedge        winner ${s.winner ?? "-"}${s.cancelled.length ? `, cancelled ${s.cancelled.join(", ")}` : ""} (${s.latencyMs} ms)`);
          break;
        case "taken":
          lines.push(`  ${when}  taken        delivered and committed by the client, ${t.streams.req} seq ${s.seq}${plus}`);
          break;
      }
    }
    if (q.state === "queued") lines.push(`               waiting      ${r?.server ? `for ${r.server} (the session's server)` : "for a server"}`);
    if (q.state === "answered") lines.push("               delivering   answered; the client has not committed its receipt yet");
  }
  if (t.truncated) lines.push("", `(only the first ${TRACE_MAX_ENTRIES} entries of a queue were read)`);
  return lines.join("\n");
}
