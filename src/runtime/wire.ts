/**
 * Names on the wire (docs/design.md §2): subjects, stream and bucket names, headers, and the JSON
 * codec with validation. One place knows the layout so everything else asks it.
 */
import type { MsgHdrs } from "@nats-io/transport-node";
import { WireHeaders } from "./wire-headers.js";
import { ErrorCode, TandemError } from "./errors.js";

export const Header = {
  Session: "Tandem-Session",
  Request: "Tandem-Request",
  Epoch: "Tandem-Epoch",
  Kind: "Tandem-Kind",
  Server: "Tandem-Server",
  Client: "Tandem-Client",
  Code: "Tandem-Code",
  MsgId: "Nats-Msg-Id",
  /** W3C trace context: one id across a request's hops (client, queue, work, response, delivery). */
  TraceParent: "traceparent",
  /** nats-server 2.11+ message tracing: where the server sends the trace of this publish. */
  TraceDest: "Nats-Trace-Dest",
} as const;

/**
 * The hops of one session's data, each a subject `<p>.<hop>.<owner>.<session>`: the session is
 * the last token of every one, so `nats sub '<p>.*.*.<session>'` follows a session (README: On
 * the wire), and periodic control traffic stays on subjects of three tokens.
 */
export type SessionHop = "req" | "work" | "resp" | "deliver" | "cancel";

/** What a client asks of the manager about its sessions. */
export type ClientCall = "open" | "resume" | "close";

export type WireKind = "request" | "update" | "response" | "control";

const TOKEN = /^[A-Za-z0-9_-]{1,64}$/;

export function isToken(s: unknown): s is string {
  return typeof s === "string" && TOKEN.test(s);
}

/** Subject and resource names of one deployment (one prefix). */
export class Names {
  readonly streamReq: string;
  readonly streamResp: string;
  readonly streamDlq: string;
  readonly bucketSessions: string;
  readonly bucketRestart: string;
  readonly bucketCtl: string;
  readonly bucketFence: string;
  /** The demo ledger's KV store (provisioned by the manager; servers only write its keys). */
  readonly bucketLedger: string;

  constructor(readonly prefix = "tandem") {
    const P = prefix.toUpperCase().replace(/-/g, "_");
    this.streamReq = `${P}_REQ`;
    this.streamResp = `${P}_RESP`;
    this.streamDlq = `${P}_DLQ`;
    const p = prefix.toLowerCase().replace(/-/g, "_");
    this.bucketSessions = `${p}_sessions`;
    this.bucketRestart = `${p}_restart`;
    this.bucketCtl = `${p}_ctl`;
    this.bucketFence = `${p}_fence`;
    this.bucketLedger = `${p}_ledger`;
  }

  /** The manager's own subjects: status (read-only), and the backups on `backup`. */
  mgr(op: "status"): string {
    return `${this.prefix}.mgr.${op}`;
  }
  /**
   * A client's session calls, `<p>.mgr.<op>.<client>`: the client id is the subject's last token,
   * so NATS permissions confine each client to its own id, and the manager takes the id from
   * the subject, never from the body.
   */
  clientCall(op: ClientCall, client: string): string {
    return `${this.prefix}.mgr.${op}.${client}`;
  }
  clientCallAll(op: ClientCall): string {
    return `${this.prefix}.mgr.${op}.*`;
  }
  /** The client id of a `clientCall` subject, or null when it is not one. */
  clientOfCall(op: ClientCall, subject: string): string | null {
    const stem = `${this.prefix}.mgr.${op}.`;
    if (!subject.startsWith(stem)) return null;
    const id = subject.slice(stem.length);
    return isToken(id) ? id : null;
  }
  get backup(): string {
    return `${this.prefix}.mgr.backup`;
  }
  req(client: string, session: string): string {
    return `${this.prefix}.req.${client}.${session}`;
  }
  get reqAll(): string {
    return `${this.prefix}.req.>`;
  }
  /**
   * A server's response or checkpoint: `<p>.resp.<server>.<session>`, the writer's id a token, so
   * NATS permissions keep each server to its own (the manager writes under `manager`).
   */
  resp(server: string, session: string): string {
    return `${this.prefix}.resp.${server}.${session}`;
  }
  /** Every response of one session, whoever wrote it (purges, traces). */
  respOf(session: string): string {
    return `${this.prefix}.resp.*.${session}`;
  }
  get respAll(): string {
    return `${this.prefix}.resp.>`;
  }
  /** Manager -> server: do request n of this session. */
  work(server: string, session: string): string {
    return `${this.prefix}.work.${server}.${session}`;
  }
  /** Manager -> server: stop working on a request of this session. */
  cancel(server: string, session: string): string {
    return `${this.prefix}.cancel.${server}.${session}`;
  }
  /** Manager -> client: a stored response of this session. */
  deliver(client: string, session: string): string {
    return `${this.prefix}.deliver.${client}.${session}`;
  }
  /** Every subject of one hop addressed to one owner (a server's work, a client's deliveries). */
  hopAll(hop: SessionHop, owner: string): string {
    return `${this.prefix}.${hop}.${owner}.*`;
  }
  /** Every data subject of one session, whatever the hop: what `nats sub` follows. */
  sessionAll(session: string): string {
    return `${this.prefix}.*.*.${session}`;
  }
  srv(server: string, op: "restart" | "ping"): string {
    return `${this.prefix}.srv.${server}.${op}`;
  }
  /**
   * A server registers as `<p>.srv.<server>.register.<service>` and beats on `<p>.beat.<server>`:
   * its id and service are subject tokens, so in a secured deployment NATS lets a server register
   * only as itself and for the service it was granted. The beat has three tokens, as all periodic
   * control traffic, so it never matches a session's four-token data subjects.
   */
  register(server: string, service: string): string {
    return `${this.prefix}.srv.${server}.register.${service}`;
  }
  get registerAll(): string {
    return `${this.prefix}.srv.*.register.*`;
  }
  heartbeat(server: string): string {
    return `${this.prefix}.beat.${server}`;
  }
  get heartbeatAll(): string {
    return `${this.prefix}.beat.*`;
  }
  /** The server (and service) of a register or heartbeat subject, or null. */
  parseSrvSubject(subject: string): { server: string; op: string; service?: string } | null {
    const t = subject.split(".");
    if (t[0] !== this.prefix || !isToken(t[2])) return null;
    if (t.length === 3 && t[1] === "beat") return { server: t[2], op: "heartbeat" };
    if (t[1] !== "srv") return null;
    if (t.length === 5 && t[3] === "register" && isToken(t[4])) return { server: t[2], op: "register", service: t[4] };
    return null;
  }
  cli(client: string, op: "restart"): string {
    return `${this.prefix}.cli.${client}.${op}`;
  }
  /**
   * A dead letter, `<p>.dlq.<reason>.<reporter>`: the reporter is the NATS user of the process
   * that wrote it (`unsecured` without users), which `tandem auth` confines each user to, so an
   * entry cannot pass for one the manager wrote.
   */
  dlq(reason: string, reporter: string): string {
    return `${this.prefix}.dlq.${reason}.${reporter}`;
  }
  /** Every dead letter of one reason, whoever reported it. */
  dlqOf(reason: string): string {
    return `${this.prefix}.dlq.${reason}.*`;
  }
  get dlqAll(): string {
    return `${this.prefix}.dlq.>`;
  }

  /** `<p>.req.<client>.<session>` or `<p>.resp.<server>.<session>` -> the writer and session, or null. */
  parseQueueSubject(subject: string): { owner: string; session: string } | null {
    const parts = subject.split(".");
    if (parts.length !== 4 || parts[0] !== this.prefix) return null;
    const [, , owner, session] = parts;
    if (!isToken(owner) || !isToken(session)) return null;
    return { owner, session };
  }
  /**
   * The session a work, cancel or deliver subject names (its last token): a message on it must be
   * that session's, or `nats sub` on the session would not show all of its traffic.
   */
  subjectSession(subject: string): string {
    return subject.slice(subject.lastIndexOf(".") + 1);
  }
}

export interface HeaderFields {
  session?: string;
  request?: number;
  epoch?: number;
  kind?: WireKind;
  server?: string;
  client?: string;
  code?: string;
  traceparent?: string;
}

/** The headers of a message Tandem sends (its own cheap implementation: `wire-headers.ts`). */
export function makeHeaders(f: HeaderFields): MsgHdrs {
  const h = new WireHeaders();
  if (f.session !== undefined) h.append(Header.Session, f.session);
  if (f.request !== undefined) h.append(Header.Request, String(f.request));
  if (f.epoch !== undefined) h.append(Header.Epoch, String(f.epoch));
  if (f.kind !== undefined) h.append(Header.Kind, f.kind);
  if (f.server !== undefined) h.append(Header.Server, f.server);
  if (f.client !== undefined) h.append(Header.Client, f.client);
  if (f.code !== undefined) h.append(Header.Code, f.code);
  if (f.traceparent !== undefined) h.append(Header.TraceParent, f.traceparent);
  return h;
}

const te = new TextEncoder();
const td = new TextDecoder();

export function encode(v: unknown): Uint8Array {
  return te.encode(JSON.stringify(v));
}

/** Bytes of a value's JSON encoding (what `encode` would send). */
export function encodedSize(v: unknown): number {
  return Buffer.byteLength(JSON.stringify(v) ?? "null", "utf8");
}

/**
 * How deep JSON may nest in anything Tandem reads. Records a few thousand levels deep once
 * crashed managers (the stack overflowed when they encoded them again for a backup or a
 * re-dispatch); no message Tandem or a reasonable application writes comes near 64.
 */
export const MAX_JSON_DEPTH = 64;

/** Does JSON in these bytes nest deeper than `limit`? One pass, strings skipped. */
export function nestsDeeperThan(d: Uint8Array, limit: number): boolean {
  let depth = 0;
  for (let i = 0; i < d.length; i++) {
    const c = d[i];
    if (c === 0x22) {
      for (i++; i < d.length; i++) {
        const x = d[i];
        if (x === 0x5c) i++;
        else if (x === 0x22) break;
      }
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > limit) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}

/** Parse JSON; anything unparseable, or nested deeper than MAX_JSON_DEPTH, is a TANDEM_MALFORMED error. */
export function decode(data: Uint8Array): unknown {
  // Fewer than 2 × depth bytes cannot nest that deep: the hot path's small messages skip the scan.
  if (data.length > 2 * MAX_JSON_DEPTH && nestsDeeperThan(data, MAX_JSON_DEPTH)) {
    throw new TandemError(ErrorCode.Malformed, `message body nests deeper than ${MAX_JSON_DEPTH} levels`, { context: { limit: MAX_JSON_DEPTH } });
  }
  try {
    return JSON.parse(td.decode(data));
  } catch (err) {
    throw new TandemError(ErrorCode.Malformed, "message body is not valid JSON", { cause: err });
  }
}

export function decodeText(data: Uint8Array): string {
  return td.decode(data);
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function malformed(message: string, context: Record<string, unknown> = {}): TandemError {
  return new TandemError(ErrorCode.Malformed, message, { context });
}
