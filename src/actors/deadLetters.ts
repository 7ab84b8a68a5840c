/**
 * The dead-letter stream to work with (README: When work fails): list, show, replay and purge
 * entries. An entry's id is its stream sequence. Each entry holds the rejected message as it
 * came (subject, headers, bytes), the error (code, message, context) and when; quarantined
 * requests (TANDEM_POISON) also the session and request number, service and attempts.
 *
 * A replay runs a quarantined request again as a new request, in a new session of the same
 * service, and records its outcome under the entry (bucket tandem_ctl, key dlq-replay.<id>): the
 * original request has its answer already (TANDEM_POISON, in its place in its session's order),
 * and a session answers each request once, so the replayed answer goes to whoever replays it,
 * and to `show`. Running replay twice runs the request once: the record is created before the
 * request is sent, and a second replay reports it (resuming the replay's session if it was cut
 * short).
 */
import type { StoredMsg } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { ErrorCode, TandemError } from "../runtime/errors.js";
import type { Runtime } from "../runtime/runtime.js";
import { decode, decodeText, encode, isObject } from "../runtime/wire.js";
import { TandemClient, type Response } from "./client.js";

export interface DeadLetter {
  /** The entry's stream sequence in the dead-letter stream. */
  id: number;
  reason: string;
  reporter: string;
  code: string;
  message: string;
  context: Record<string, unknown>;
  /** Subject and headers of the message it is about ("" and {} when it came from no message). */
  subject: string;
  headers: Record<string, string>;
  /** Who wrote the message, as its subject says (client or server id). */
  from: Record<string, string>;
  /** Bytes of the original message (null when it had none, or they were not kept). */
  data: Uint8Array | null;
  size: number;
  at: string;
  session: string | undefined;
  n: number | undefined;
}

export interface DeadLetterFilter {
  reason?: string;
  session?: string;
  /** At most this many, oldest first (default 1000). */
  limit?: number;
}

/** The body of an entry's message: JSON, text, or (anything else) base64. */
export function bodyOf(d: DeadLetter): { kind: "json"; value: unknown } | { kind: "text"; value: string } | { kind: "binary"; base64: string } | { kind: "none" } {
  if (!d.data) return { kind: "none" };
  try {
    return { kind: "json", value: decode(d.data) };
  } catch {
    const text = decodeText(d.data);
    // Text when it decodes to no replacement characters and no control bytes but whitespace.
    if (!text.includes("\uFFFD") && !/[\u0000-\u0008\u000e-\u001f]/.test(text)) return { kind: "text", value: text };
    return { kind: "binary", base64: Buffer.from(d.data).toString("base64") };
  }
}

function toDeadLetter(rt: Pick<Runtime, "names">, sm: StoredMsg): DeadLetter {
  const t = sm.subject.split(".");
  let body: Record<string, unknown> = {};
  try {
    const v = decode(sm.data);
    if (isObject(v)) body = v;
  } catch {
    /* an entry someone else wrote: shown as far as it goes */
  }
  const context = isObject(body.context) ? body.context : {};
  const str = (v: unknown) => (typeof v === "string" ? v : undefined);
  const data = typeof body.data === "string" ? new Uint8Array(Buffer.from(body.data, "base64")) : null;
  const n = typeof context.n === "number" ? context.n : undefined;
  return {
    id: sm.seq,
    reason: t[2] ?? "",
    reporter: t[3] ?? "",
    code: str(body.code) ?? "",
    message: str(body.message) ?? "",
    context,
    subject: str(body.subject) ?? "",
    headers: isObject(body.headers) ? (body.headers as Record<string, string>) : {},
    from: isObject(body.from) ? (body.from as Record<string, string>) : {},
    data,
    size: typeof body.size === "number" ? body.size : (data?.length ?? 0),
    at: str(body.at) ?? sm.time.toISOString(),
    session: str(context.session) ?? (rt.names.parseQueueSubject(str(body.subject) ?? "")?.session || undefined),
    n,
  };
}

/** Entries, oldest first, of one reason (`poison`, `malformed`, ...) or all, of one session or all. */
export async function listDeadLetters(rt: Runtime, filter: DeadLetterFilter = {}): Promise<DeadLetter[]> {
  const subject = filter.reason ? rt.names.dlqOf(filter.reason) : rt.names.dlqAll;
  const limit = filter.limit ?? 1000;
  const out: DeadLetter[] = [];
  for (let seq = 1; out.length < limit; ) {
    // The first entry at or after `seq` on the subject (STREAM.MSG.GET's next_by_subj).
    const sm = await rt.jsm.streams.getMessage(rt.names.streamDlq, { seq, next_by_subj: subject } as never).catch(() => null);
    if (!sm) break;
    const d = toDeadLetter(rt, sm);
    if (!filter.session || d.session === filter.session) out.push(d);
    seq = sm.seq + 1;
  }
  return out;
}

export async function getDeadLetter(rt: Runtime, id: number): Promise<DeadLetter | null> {
  const sm = await rt.jsm.streams.getMessage(rt.names.streamDlq, { seq: id }).catch(() => null);
  return sm && sm.subject.startsWith(`${rt.names.prefix}.dlq.`) ? toDeadLetter(rt, sm) : null;
}

/** Remove entries: one by id, or every entry of a reason and/or session. Returns how many. */
export async function purgeDeadLetters(rt: Runtime, what: { id?: number } & DeadLetterFilter): Promise<number> {
  if (what.id !== undefined) return (await rt.jsm.streams.deleteMessage(rt.names.streamDlq, what.id, false).catch(() => false)) ? 1 : 0;
  if (!what.session) {
    const r = await rt.jsm.streams.purge(rt.names.streamDlq, { filter: what.reason ? rt.names.dlqOf(what.reason) : rt.names.dlqAll });
    return r.purged;
  }
  let purged = 0;
  for (const d of await listDeadLetters(rt, { ...what, limit: Number.MAX_SAFE_INTEGER })) {
    if (await rt.jsm.streams.deleteMessage(rt.names.streamDlq, d.id, false).catch(() => false)) purged++;
  }
  return purged;
}

/** What a replay came to, as recorded under the entry. */
export interface ReplayRecord {
  id: number;
  service: string;
  state: "running" | "done";
  /** The session the replay ran in. */
  session?: string;
  client: string;
  ok?: boolean;
  value?: unknown;
  error?: { code: string; message: string };
  at: string;
}

export interface ReplayOutcome {
  record: ReplayRecord;
  /** False when an earlier replay of the entry had run it (this one only reports it). */
  ran: boolean;
}

const replayKey = (id: number) => `dlq-replay.${id}`;

export async function replayRecord(rt: Runtime, id: number): Promise<ReplayRecord | null> {
  const e = await rt.kv.ctl.get(replayKey(id)).catch(() => null);
  return e && e.operation === "PUT" ? (e.json() as ReplayRecord) : null;
}

/** The original request of a quarantined entry: its payload, kind and service. */
function requestOf(d: DeadLetter): { payload: unknown; kind: "request" | "update"; service: string } {
  const service = typeof d.context.service === "string" ? d.context.service : undefined;
  const body = bodyOf(d);
  if (d.code !== ErrorCode.Poison || !service || body.kind !== "json" || !isObject(body.value) || !("payload" in body.value)) {
    throw new TandemError(ErrorCode.Config, `dead letter ${d.id} (${d.code}) is not a quarantined request with its bytes; only TANDEM_POISON entries can be replayed`, { context: { id: d.id, code: d.code } });
  }
  const kind = body.value.kind === "update" ? "update" : "request";
  return { payload: body.value.payload, kind, service };
}

/**
 * Run a quarantined request again (see the module comment); resolves with its recorded
 * outcome. `timeoutMs` bounds the wait for the answer (the replay stays recorded as running,
 * and a later replay of the entry picks up its session).
 */
export async function replayDeadLetter(rt: Runtime, id: number, opts: { timeoutMs?: number } = {}): Promise<ReplayOutcome> {
  const d = await getDeadLetter(rt, id);
  if (!d) throw new TandemError(ErrorCode.Config, `no dead letter ${id}; list them with \`tandem dlq list\``, { context: { id } });
  const req = requestOf(d);
  const kv = rt.kv.ctl;
  const clientId = `dlq-replay-${id}`;
  let rec: ReplayRecord = { id, service: req.service, state: "running", client: clientId, at: new Date().toISOString() };
  let revision: number;
  try {
    revision = await kv.create(replayKey(id), encode(rec));
  } catch {
    const before = await replayRecord(rt, id);
    if (!before) throw new TandemError(ErrorCode.Unavailable, `could not record the replay of dead letter ${id}; try again`);
    if (before.state === "done" || !before.session) return { record: before, ran: false };
    // Cut short after its request was sent: its session has the answer.
    return { record: await finishInSession(rt, kv, before, opts.timeoutMs), ran: false };
  }
  const client = await TandemClient.connect(rt, { id: clientId });
  try {
    const session = await client.open(req.service);
    rec = { ...rec, session: session.id };
    revision = await kv.update(replayKey(id), encode(rec), revision);
    const { response } = await session.send(req.payload, { kind: req.kind });
    const r = await withTimeout(response, opts.timeoutMs);
    rec = answered(rec, r);
    await kv.update(replayKey(id), encode(rec), revision);
    await session.close();
    return { record: rec, ran: true };
  } finally {
    await client.close();
  }
}

async function finishInSession(rt: Runtime, kv: KV, rec: ReplayRecord, timeoutMs: number | undefined): Promise<ReplayRecord> {
  const client = await TandemClient.connect(rt, { id: rec.client });
  try {
    const session = await client.resume(rec.session!);
    const it = session.responses();
    const next = await withTimeout(it.next(), timeoutMs);
    if (next.done) return rec;
    const r = next.value;
    const done = answered(rec, r);
    await kv.put(replayKey(rec.id), encode(done));
    await session.close();
    return done;
  } finally {
    await client.close();
  }
}

/** The record of a replay once its request is answered. */
function answered(rec: ReplayRecord, r: Response): ReplayRecord {
  return { ...rec, state: "done", ok: r.ok, ...(r.ok ? { value: r.value } : { error: { code: r.error!.code, message: r.error!.message } }), at: new Date().toISOString() };
}

function withTimeout<T>(p: Promise<T>, ms: number | undefined): Promise<T> {
  if (ms === undefined) return p;
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new TandemError(ErrorCode.Deadline, `no answer within ${ms} ms; the replay stays recorded and a later replay waits for it`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
