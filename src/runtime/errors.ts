/**
 * Errors with stable codes. Every error a caller can see is a TandemError with a `code` from
 * ErrorCode, a `retryable` flag, and the context fields that say what went wrong.
 */
export const ErrorCode = {
  /** An envelope could not be parsed or misses a field. */
  Malformed: "TANDEM_MALFORMED",
  /** A payload is larger than `maxPayload`. */
  PayloadTooLarge: "TANDEM_PAYLOAD_TOO_LARGE",
  /** A session id that no manager knows (never opened, or closed). */
  UnknownSession: "TANDEM_UNKNOWN_SESSION",
  /** No server has ever registered for the service. */
  UnknownService: "TANDEM_UNKNOWN_SERVICE",
  /** A message from a manager epoch older than one already seen. */
  StaleEpoch: "TANDEM_STALE_EPOCH",
  /** A session has `maxPending` requests without a taken response. */
  Backpressure: "TANDEM_BACKPRESSURE",
  /** No manager answered in time; the request is durable and will be answered later. */
  NoManager: "TANDEM_NO_MANAGER",
  /** No NATS server answered (at start, within the first-connect time), or the connection was lost mid-request. */
  NatsUnreachable: "TANDEM_NATS_UNREACHABLE",
  /** A request got no reply in time, or nobody listens on its subject (the peer may be down). */
  NoReply: "TANDEM_NO_REPLY",
  /** The peer is busy with something that passes (starting, rebuilding, catching up, resuming, stopping): retry. */
  Unavailable: "TANDEM_UNAVAILABLE",
  /** JetStream refused or did not confirm a publish into a queue (its API code is in the context). */
  QueueRefused: "TANDEM_QUEUE_REFUSED",
  /** The session was closed. */
  Closed: "TANDEM_CLOSED",
  /** The server's handler threw; the message is the handler's. */
  HandlerFailed: "TANDEM_HANDLER_FAILED",
  /** The request was cancelled (hedge loser, session closed). */
  Cancelled: "TANDEM_CANCELLED",
  /** A setting is invalid. */
  Config: "TANDEM_CONFIG",
  /** nats-server is missing or could not start. */
  NatsServer: "TANDEM_NATS_SERVER",
  /** Another manager holds the lease with a newer epoch. */
  NotLeader: "TANDEM_NOT_LEADER",
  /** `commit` was called by a server that has no fenced store configured. */
  NoStore: "TANDEM_NO_STORE",
  /** The external store failed or refused the update (the update was not applied). */
  Store: "TANDEM_STORE",
  /** A fenced KV update tried to set more than one key (one key is atomic, two are not). */
  FenceMultiKey: "TANDEM_FENCE_MULTI_KEY",
  /** NATS refused the credentials (bad user or password). */
  Auth: "TANDEM_AUTH",
  /** A client has `maxSessionsPerClient` sessions open. */
  SessionLimit: "TANDEM_SESSION_LIMIT",
  /** Hedge options are invalid. */
  Hedge: "TANDEM_HEDGE",
  /** A server registration whose server did not answer the manager on its own subject. */
  ServerUnverified: "TANDEM_SERVER_UNVERIFIED",
  /** A response or checkpoint from a server that was not given its request (no valid dispatch key). */
  Forged: "TANDEM_FORGED",
  /** A request failed all its attempts (maxAttempts); it is quarantined in the dead-letter stream. */
  Poison: "TANDEM_POISON",
  /** A request was not answered before its deadline (`timeoutMs` / `deadline`). */
  Deadline: "TANDEM_DEADLINE",
  /** The server holding a request died (an attempt failed; it is retried). */
  ServerLost: "TANDEM_SERVER_LOST",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const RETRYABLE: ReadonlySet<string> = new Set<string>([
  ErrorCode.Backpressure,
  ErrorCode.NoManager,
  ErrorCode.NatsUnreachable,
  ErrorCode.NoReply,
  ErrorCode.Unavailable,
  ErrorCode.QueueRefused,
  ErrorCode.NotLeader,
  ErrorCode.Store,
  ErrorCode.ServerLost,
]);

export interface TandemErrorOptions {
  cause?: unknown;
  context?: Record<string, unknown>;
  /** The handler's error class name, when the error came from a handler. */
  handlerName?: string;
  /** The handler's own data about the error. */
  details?: unknown;
}

/**
 * `code` is one of ErrorCode, or a handler's own code (a TerminalError's or RetryableError's),
 * kept as the handler gave it.
 */
export class TandemError extends Error {
  override readonly name = "TandemError";
  readonly code: ErrorCode | (string & {});
  readonly retryable: boolean;
  readonly context: Record<string, unknown>;
  /** The handler's error class name (e.g. "ValidationError"), when a handler threw it. */
  readonly handlerName: string | undefined;
  /** The handler's `details`, when a handler threw a TerminalError or RetryableError with some. */
  readonly details: unknown;

  constructor(code: ErrorCode | (string & {}), message: string, opts: TandemErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.retryable = RETRYABLE.has(code);
    this.context = opts.context ?? {};
    this.handlerName = opts.handlerName;
    this.details = opts.details;
  }

  /** The form errors take on the wire: enough to rebuild the error on the other side. */
  toWire(): WireError {
    return {
      code: this.code,
      message: this.message,
      context: this.context,
      ...(this.handlerName !== undefined ? { name: this.handlerName } : {}),
      ...(this.details !== undefined ? { details: this.details } : {}),
    };
  }

  static fromWire(w: WireError): TandemError {
    const code = typeof w.code === "string" && w.code.length > 0 ? w.code : ErrorCode.HandlerFailed;
    return new TandemError(code, w.message, {
      context: w.context ?? {},
      ...(w.name !== undefined ? { handlerName: w.name } : {}),
      ...(w.details !== undefined ? { details: w.details } : {}),
    });
  }
}

export interface WireError {
  code: string;
  message: string;
  context?: Record<string, unknown>;
  name?: string;
  details?: unknown;
  retryable?: boolean;
  retryAfterMs?: number;
}

export interface HandlerErrorOptions {
  /** A stable code of your own for the caller to branch on (default TANDEM_HANDLER_FAILED). */
  code?: string;
  /** Data about the error, sent to the caller as `err.details`. */
  details?: unknown;
  cause?: unknown;
}

/**
 * Thrown by a handler: this request's answer is this error, do not try again (as Restate's
 * TerminalError, Temporal's non-retryable failure). A plain throw is terminal too; this one
 * carries a code and details the caller gets as they were.
 */
export class TerminalError extends Error {
  override name = "TerminalError";
  readonly code: string;
  readonly details: unknown;
  constructor(message: string, opts: HandlerErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = opts.code ?? ErrorCode.HandlerFailed;
    this.details = opts.details;
  }
}

/**
 * Thrown by a handler: this attempt failed, try the request again after the retry policy's
 * back-off (at least `delayMs`). When the attempts are used up the caller gets TANDEM_POISON
 * with this error as its last.
 */
export class RetryableError extends Error {
  override name = "RetryableError";
  readonly code: string;
  readonly details: unknown;
  readonly delayMs: number | undefined;
  constructor(message: string, opts: HandlerErrorOptions & { delayMs?: number } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = opts.code ?? ErrorCode.HandlerFailed;
    this.details = opts.details;
    this.delayMs = opts.delayMs;
  }
}

/**
 * What a handler's throw says on the wire: its name, code and details kept; retryable only when
 * it is a RetryableError (or a Tandem error of a retryable kind, e.g. TANDEM_STORE).
 */
export function handlerErrorToWire(err: unknown): WireError {
  if (err instanceof RetryableError) {
    const delay = err.delayMs !== undefined && Number.isFinite(err.delayMs) ? Math.max(0, Math.min(86_400_000, Math.round(err.delayMs))) : undefined;
    return {
      code: err.code,
      message: err.message,
      name: err.name,
      retryable: true,
      ...(err.details !== undefined ? { details: err.details } : {}),
      ...(delay !== undefined ? { retryAfterMs: delay } : {}),
    };
  }
  if (err instanceof TerminalError) return { code: err.code, message: err.message, name: err.name, ...(err.details !== undefined ? { details: err.details } : {}) };
  if (err instanceof TandemError) return { ...err.toWire(), ...(err.retryable ? { retryable: true } : {}) };
  if (err instanceof Error) return { code: ErrorCode.HandlerFailed, message: err.message, name: err.name };
  return { code: ErrorCode.HandlerFailed, message: String(err) };
}

export function isErrorCode(s: unknown): s is ErrorCode {
  return typeof s === "string" && (Object.values(ErrorCode) as string[]).includes(s);
}

/** JetStream API error codes we rely on (names from nats-server, not message text). */
export const JsApiCode = {
  /** JetStream system temporarily unavailable (a cluster without a leader). */
  ClusterNotAvailable: 10008,
  ConsumerNotFound: 10014,
  StreamNotFound: 10059,
  StreamWrongLastSequence: 10071,
  StreamWrongLastSequenceUnknown: 10164,
} as const;
