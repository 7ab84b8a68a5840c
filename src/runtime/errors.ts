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
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  ErrorCode.Backpressure,
  ErrorCode.NoManager,
  ErrorCode.NotLeader,
  ErrorCode.Store,
]);

export interface TandemErrorOptions {
  cause?: unknown;
  context?: Record<string, unknown>;
}

export class TandemError extends Error {
  override readonly name = "TandemError";
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly context: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, opts: TandemErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.retryable = RETRYABLE.has(code);
    this.context = opts.context ?? {};
  }

  /** The form errors take on the wire: enough to rebuild the error on the other side. */
  toWire(): WireError {
    return { code: this.code, message: this.message, context: this.context };
  }

  static fromWire(w: WireError): TandemError {
    const code = isErrorCode(w.code) ? w.code : ErrorCode.HandlerFailed;
    return new TandemError(code, w.message, { context: w.context ?? {} });
  }
}

export interface WireError {
  code: string;
  message: string;
  context?: Record<string, unknown>;
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
