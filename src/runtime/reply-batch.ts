/**
 * Acknowledgements that travel together (docs/design.md §6). A hot-path request of the manager
 * (work to a server, a delivery to a client) names its responder and carries a coalescable reply subject,
 * `<inbox>.T.<id>`. The responder answers the first of a turn on it at once; the others of the
 * same turn, for the same requester, go as one message to `<inbox>.B.<responder>`: the requester
 * takes from it only answers to requests it sent to that responder, so a batch cannot settle
 * another's work, and NATS permissions keep each user to its own batch subject.
 *
 * A batch body is a run of entries `<id> <length>\n<bytes>`: the ids are the requester's
 * (base36 counters), the bytes each reply exactly as it would have come alone, sliced out
 * without a copy or a parse.
 */

/** The token that marks a coalescable reply subject, and the one of batch subjects. */
export const COALESCE = "T";
export const BATCH = "B";

const ID = /^[0-9a-z]{1,13}$/;
const SP = 0x20;
const LF = 0x0a;
const ascii = new TextEncoder();

/** The requester's inbox and the request's id of a coalescable reply subject, or null. */
export function coalescable(reply: string): { inbox: string; id: string } | null {
  const cut = reply.lastIndexOf(`.${COALESCE}.`);
  if (cut <= 0) return null;
  const id = reply.slice(cut + 3);
  if (!ID.test(id)) return null;
  return { inbox: reply.slice(0, cut), id };
}

export function batchSubject(inbox: string, responder: string): string {
  return `${inbox}.${BATCH}.${responder}`;
}

/** Bytes one entry takes in a batch body. */
export function entryBytes(id: string, data: Uint8Array): number {
  return id.length + 2 + String(data.length).length + data.length;
}

export function encodeReplyBatch(entries: ReadonlyArray<{ id: string; data: Uint8Array }>): Uint8Array {
  const out = new Uint8Array(entries.reduce((s, e) => s + entryBytes(e.id, e.data), 0));
  let at = 0;
  for (const e of entries) {
    at += ascii.encodeInto(`${e.id} ${e.data.length}\n`, out.subarray(at)).written;
    out.set(e.data, at);
    at += e.data.length;
  }
  return out;
}

export interface DecodedReplyBatch {
  entries: Array<{ id: string; data: Uint8Array }>;
  /** Why the body stopped being readable (the entries before that point are whole), or null. */
  problem: string | null;
}

/** The entries of a batch body, as views into it; a malformed body yields the entries before the fault. */
export function decodeReplyBatch(body: Uint8Array): DecodedReplyBatch {
  const entries: Array<{ id: string; data: Uint8Array }> = [];
  let at = 0;
  if (body.length === 0) return { entries, problem: "the batch is empty" };
  while (at < body.length) {
    const sp = body.indexOf(SP, at);
    if (sp < 0 || sp - at > 13) return { entries, problem: `entry ${entries.length + 1}: no id at byte ${at}` };
    const id = String.fromCharCode(...body.subarray(at, sp));
    if (!ID.test(id)) return { entries, problem: `entry ${entries.length + 1}: the id is not a request id` };
    const lf = body.indexOf(LF, sp + 1);
    if (lf < 0 || lf - sp - 1 > 9 || lf === sp + 1) return { entries, problem: `entry ${entries.length + 1}: no length` };
    let len = 0;
    for (let i = sp + 1; i < lf; i++) {
      const d = body[i]! - 0x30;
      if (d < 0 || d > 9) return { entries, problem: `entry ${entries.length + 1}: the length is not a number` };
      len = len * 10 + d;
    }
    const start = lf + 1;
    if (start + len > body.length) return { entries, problem: `entry ${entries.length + 1}: ${len} bytes announced, ${body.length - start} left` };
    entries.push({ id, data: body.subarray(start, start + len) });
    at = start + len;
  }
  return { entries, problem: null };
}
