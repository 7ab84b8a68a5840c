/**
 * Types shared by the machines and the actors: what travels on the wire, as plain data.
 * Pure: no I/O imports here.
 */

export type RequestKind = "request" | "update";

/** A hedged session: each request may go to up to `copies` servers (docs/design.md §5). */
export interface HedgeOptions {
  /** Copies in all, the first included (2..8). */
  copies: number;
  /** Milliseconds without a response before hedging (0 = at once), or the service's learned p95. */
  after: number | "p95";
}

export interface WireErr {
  code: string;
  message: string;
  context?: Record<string, unknown>;
  /** The handler's error class name (e.g. "ValidationError"), kept across the wire. */
  name?: string;
  /** The handler's own data about the error (TerminalError / RetryableError `details`). */
  details?: unknown;
  /** The handler asked for another attempt (RetryableError): not the answer, unless attempts are used up. */
  retryable?: boolean;
  /** With `retryable`: wait at least this long before the next attempt, in ms. */
  retryAfterMs?: number;
}

/** Per session (at open) and per request: how failed work is retried (machines/retryPolicy.ts). */
export interface RetryOptions {
  maxAttempts?: number;
  initialMs?: number;
  factor?: number;
  maxMs?: number;
  jitter?: number;
}

/** Restart data with the queue position (request number and stream sequence) it belongs to. */
export interface RestartRecord {
  data: unknown;
  /** The request number the data was recorded with. */
  n: number;
  /** Stream sequence of the message that carried it (0 when unknown). */
  seq: number;
}

/** Body of a message in the session's response queue (`<p>.resp.<server>.<session>`). */
export interface ResponseBody {
  n: number;
  server: string;
  ok?: unknown;
  error?: WireErr;
  /** Server restart data recorded during or at the end of the work. */
  restart?: unknown;
  /** The request's traceparent, passed on. */
  tp?: string;
}

/** Manager -> server: do request n of a session. */
export interface WorkMsg {
  epoch: number;
  session: string;
  client: string;
  service: string;
  n: number;
  kind: RequestKind;
  payload: unknown;
  /** Latest server restart data of this session, to continue from. */
  restart: RestartRecord | null;
  /** Dispatch key: the server puts it in its response and checkpoints (docs/design.md §2). */
  k: string;
  /** Hedged sessions: which copy this is (1 = the first); the server records that it took it. */
  copy?: number;
  /** The request's traceparent, for the handler's context and the response. */
  tp?: string;
  /** Which execution this is (1 = the first); failed attempts before it were counted. */
  attempt?: number;
  /** Absolute deadline (ms since the epoch): the handler's signal fires then. */
  deadline?: number;
}

export interface CancelMsg {
  epoch: number;
  session: string;
  n: number;
  /** Why the manager gave the request up (absent from a manager before it: cancelled). */
  reason?: "deadline" | "cancelled";
}

/** One session in a restart message: its restart data, request queue and response queue. */
export interface RestartSession {
  session: string;
  client: string;
  service: string;
  restart: RestartRecord | null;
  /** Request numbers in the request queue without a stored response. */
  requests: number[];
  /** Request numbers with a stored response the client has not taken. */
  responses: number[];
  lastReq: number;
  taken: number;
}

export interface RestartMsg {
  epoch: number;
  sessions: RestartSession[];
}

/** Server -> manager reply to a restart: what it is still working on. */
export interface ServerRestartAck {
  server: string;
  working: Array<{ session: string; n: number }>;
  /** The sessions the restart named (the manager adds them; the server's reply need not). */
  sessions?: string[];
}

/** Client -> manager reply to a restart: how far its application has taken responses. */
export interface ClientRestartAck {
  client: string;
  sessions: Array<{ session: string; taken: number; takenAlso?: number[] }>;
}

/** Manager -> client: a stored response. */
export interface DeliverMsg {
  epoch: number;
  session: string;
  n: number;
  ok?: unknown;
  error?: WireErr;
  server: string;
  /** The request's traceparent. */
  tp?: string;
}

/** Several deliveries of one session in one message, in request order. */
export interface DeliverBatchMsg {
  epoch: number;
  session: string;
  batch: Array<Omit<DeliverMsg, "epoch" | "session">>;
}

/** The client's answer to a batch: per element, in order, accepted or why not. */
export interface DeliverBatchReply {
  results: Array<{ n: number; error?: WireErr }>;
}

export interface OpenReply {
  session: string;
  epoch: number;
  maxPending: number;
  /** Requests of the session that may be at its server at once. */
  window: number;
  /** An unordered pool. */
  pool?: boolean;
  maxPayload: number;
}

export interface ResumeReply {
  session: string;
  service: string;
  epoch: number;
  restart: RestartRecord | null;
  lastReq: number;
  taken: number;
  /** A pool's receipts above `taken`. */
  takenAlso?: number[];
  /** An unordered pool. */
  pool?: boolean;
  requests: number[];
  responses: number[];
  maxPending: number;
  maxPayload: number;
  /** The request the session waits on is running at a live server that reported it lately. */
  running?: { n: number; server: string; forMs: number };
}

export interface HeartbeatReply {
  epoch: number;
  /** The manager does not know this server (it restarted, or declared the server dead). */
  reregister?: boolean;
}

/** Every reply on a request/reply subject: either a value or a stable error. */
export type Reply<T> = { ok: true; value: T } | { ok: false; error: WireErr };
