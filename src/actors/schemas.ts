/**
 * The shape and limits of every message an actor reads (docs/design.md §2, I7), each checked once,
 * where it is read, before anything acts on it. TypeBox compiles each schema to a plain JS check
 * (about 13 ns for a request record on this machine, measured): cheap enough for the hot path,
 * where a library that interprets its schema per message would cost more than the parse. The
 * schemas are also JSON Schema, so the wire format is written down once.
 *
 * Limits are in the schemas: ids and service names are subject tokens, request numbers and epochs
 * safe integers, strings bounded. Payloads and restart data are the application's own: any JSON,
 * bounded by the message size (maxPayload) and by `decode`'s nesting limit.
 */
import { Type, type Static, type TSchema } from "@sinclair/typebox";
import { TypeCompiler, type TypeCheck } from "@sinclair/typebox/compiler";
import { TandemError, ErrorCode } from "../runtime/errors.js";
import { RETRY_BOUNDS } from "../machines/retryPolicy.js";

const Token = Type.String({ pattern: "^[A-Za-z0-9_-]{1,64}$" });
const Seq = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER });
const Count = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
const Epoch = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
const Kind = Type.Union([Type.Literal("request"), Type.Literal("update")]);
/** A dispatch key (runtime/dispatch-key.ts). */
const Key = Type.String({ pattern: "^[A-Za-z0-9_-]{22}$" });

export const WireErrSchema = Type.Object({
  code: Type.String({ minLength: 1, maxLength: 128 }),
  message: Type.String({ maxLength: 8192 }),
  context: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  name: Type.Optional(Type.String({ maxLength: 128 })),
  details: Type.Optional(Type.Unknown()),
  retryable: Type.Optional(Type.Boolean()),
  retryAfterMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 86_400_000 })),
});

const bound = (k: keyof typeof RETRY_BOUNDS, integer: boolean) => {
  const [minimum, maximum] = RETRY_BOUNDS[k];
  return Type.Optional(integer ? Type.Integer({ minimum, maximum }) : Type.Number({ minimum, maximum }));
};
/** A retry policy, whole or in part (machines/retryPolicy.ts). */
export const RetrySchema = Type.Object(
  {
    maxAttempts: bound("maxAttempts", true),
    initialMs: bound("initialMs", true),
    factor: bound("factor", false),
    maxMs: bound("maxMs", true),
    jitter: bound("jitter", false),
  },
  { additionalProperties: false },
);
/** An absolute deadline, ms since the epoch. */
const Deadline = Type.Integer({ minimum: 0, maximum: 8_640_000_000_000_000 });

export const MAX_HEDGE_COPIES = 8;
/** The most work messages or deliveries of one session one batched message carries (docs/design.md §6). */
export const MAX_BATCH = 64;
/** The most requests of one session at its server at once (OpenOptions.window). */
export const MAX_WINDOW = 1024;
/** A pool's receipts above its floor: within its window, so at most MAX_WINDOW of them. */
const TakenAlso = Type.Array(Seq, { maxItems: MAX_WINDOW });
export const HedgeSchema = Type.Object({
  copies: Type.Integer({ minimum: 2, maximum: MAX_HEDGE_COPIES }),
  after: Type.Union([Type.Literal("p95"), Type.Number({ minimum: 0, maximum: 3_600_000 })]),
});

// ---- the request queue: `<p>.req.<client>.<session>` ---------------------------------------

export const RequestRecord = Type.Object({
  n: Seq,
  kind: Type.Optional(Kind),
  payload: Type.Unknown(),
  restart: Type.Optional(Type.Unknown()),
  tp: Type.Optional(Type.Unknown()),
  /** Receipts riding on the request: the client's `taken`. */
  taken: Type.Optional(Count),
  /** A pool's receipts above `taken` (bounded by its window). */
  takenAlso: Type.Optional(TakenAlso),
  deadline: Type.Optional(Deadline),
  /** Dispatch no earlier than this, ms since the epoch (a delayed request). */
  notBefore: Type.Optional(Deadline),
  retry: Type.Optional(RetrySchema),
});
/**
 * Several requests of one session that its client sent in one turn, as one record of the session's
 * request queue (docs/design.md §6): each element is a request record, checked on its own.
 */
export const RequestBatchRecord = Type.Object({ batch: Type.Array(Type.Unknown(), { minItems: 1, maxItems: MAX_BATCH }) });
export const TakenRecord = Type.Object({ taken: Count, takenAlso: Type.Optional(TakenAlso) });
/** The caller gave up on request `cancel` (an abort, or its deadline passed). */
export const CancelRecord = Type.Object({ cancel: Seq, reason: Type.Union([Type.Literal("cancelled"), Type.Literal("deadline")]) });
export const OpenRecord = Type.Object({
  open: Type.Object({
    service: Token,
    ordered: Type.Optional(Type.Boolean()),
    /** An unordered pool (`ordered` was written by earlier managers and never acted on). */
    pool: Type.Optional(Type.Literal(true)),
    maxPending: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
    window: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_WINDOW })),
    restart: Type.Optional(Type.Unknown()),
    hedge: Type.Optional(Type.Unknown()),
    retry: Type.Optional(RetrySchema),
  }),
});

// ---- the response queue: `<p>.resp.<server>.<session>` ------------------------------------

export const ResponseRecord = Type.Object({
  n: Seq,
  k: Key,
  ok: Type.Optional(Type.Unknown()),
  error: Type.Optional(WireErrSchema),
  restart: Type.Optional(Type.Unknown()),
  tp: Type.Optional(Type.Unknown()),
});
export const CheckpointRecord = Type.Object({ n: Seq, k: Key, restart: Type.Unknown() });
/** Several responses of one session that its server finished in one turn, as one record (docs/design.md §6). */
export const ResponseBatchRecord = Type.Object({ batch: Type.Array(Type.Unknown(), { minItems: 1, maxItems: MAX_BATCH }) });
/** The manager's record of a failed attempt: the server that held the request died. */
export const AttemptRecord = Type.Object({ n: Seq, k: Key, attempt: Type.Object({ server: Token, error: WireErrSchema, at: Type.Optional(Deadline) }) });

// ---- calls to the manager ------------------------------------------------------------------

export const OpenCall = Type.Object({
  client: Type.Optional(Token),
  service: Token,
  ordered: Type.Optional(Type.Boolean()),
  maxPending: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
  window: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_WINDOW })),
  restart: Type.Optional(Type.Unknown()),
  hedge: Type.Optional(Type.Unknown()),
  retry: Type.Optional(RetrySchema),
});
export const ResumeCall = Type.Object({ client: Type.Optional(Token), session: Token, lastReq: Type.Optional(Count), taken: Type.Optional(Count) });
export const CloseCall = Type.Object({ client: Type.Optional(Token), session: Token });
export const RegisterCall = Type.Object({
  server: Type.Optional(Token),
  service: Type.Optional(Token),
  capacity: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
  incarnation: Type.Optional(Token),
});
export const HeartbeatCall = Type.Object({
  server: Type.Optional(Token),
  epoch: Type.Optional(Epoch),
  working: Type.Optional(Count),
  /** The requests it is running, [session, n]: long work is alive, not lost. */
  running: Type.Optional(Type.Array(Type.Tuple([Token, Seq]), { maxItems: 100_000 })),
});

// ---- manager -> server and client ----------------------------------------------------------

export const WorkMessage = Type.Object({
  epoch: Epoch,
  session: Token,
  client: Token,
  service: Token,
  n: Seq,
  kind: Kind,
  k: Key,
  payload: Type.Unknown(),
  restart: Type.Union([Type.Null(), Type.Object({ data: Type.Unknown(), n: Count, seq: Count })]),
  copy: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_HEDGE_COPIES })),
  tp: Type.Optional(Type.Unknown()),
  attempt: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
  deadline: Type.Optional(Deadline),
});
/** Several work messages of one session in one (docs/design.md §6): each element is checked as a WorkMessage. */
export const WorkBatchMessage = Type.Object({ batch: Type.Array(Type.Unknown(), { minItems: 1, maxItems: MAX_BATCH }) });
// `reason` names why, so the handler's signal says the same as the caller's error (a server's own
// deadline timer and the manager's cancel race); a manager before it sent none: cancelled.
export const CancelMessage = Type.Object({ epoch: Epoch, session: Token, n: Seq, reason: Type.Optional(Type.Union([Type.Literal("cancelled"), Type.Literal("deadline")])) });
export const DeliverMessage = Type.Object({
  epoch: Epoch,
  session: Token,
  n: Seq,
  server: Type.String({ maxLength: 64 }),
  ok: Type.Optional(Type.Unknown()),
  error: Type.Optional(WireErrSchema),
  tp: Type.Optional(Type.Unknown()),
});
/**
 * Several stored responses of one session in one message (docs/design.md §6, batched deliveries).
 * The envelope is checked here; each element on its own (DeliverItem), so one bad element is
 * refused and dead-lettered with its bytes while the rest are taken.
 */
export const DeliverBatchMessage = Type.Object({
  epoch: Epoch,
  session: Token,
  batch: Type.Array(Type.Unknown(), { minItems: 1, maxItems: MAX_BATCH }),
});
export const DeliverItem = Type.Object({
  n: Seq,
  server: Type.String({ maxLength: 64 }),
  ok: Type.Optional(Type.Unknown()),
  error: Type.Optional(WireErrSchema),
  tp: Type.Optional(Type.Unknown()),
});
export const RestartMessage = Type.Object({
  epoch: Epoch,
  sessions: Type.Array(Type.Object({ session: Token }), { maxItems: 1_000_000 }),
});

// ---- primary -> standby ----------------------------------------------------------------------

const SessionRecordSchema = Type.Object({
  v: Type.Literal(1),
  session: Token,
  client: Token,
  service: Token,
  /** Written by earlier managers and never acted on: read and ignored. */
  ordered: Type.Optional(Type.Boolean()),
  maxPending: Type.Integer({ minimum: 1, maximum: 1_000_000 }),
  window: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_WINDOW })),
  pool: Type.Optional(Type.Literal(true)),
  takenAlso: Type.Optional(TakenAlso),
  hedge: Type.Optional(HedgeSchema),
  retry: Type.Optional(RetrySchema),
  server: Type.Union([Type.Null(), Token]),
  status: Type.Literal("open"),
  lastReq: Count,
  answered: Count,
  taken: Count,
  epoch: Epoch,
});
export const BackupMessage = Type.Object({
  epoch: Epoch,
  node: Token,
  seq: Count,
  full: Type.Boolean(),
  part: Type.Integer({ minimum: 1, maximum: 1_000_000 }),
  parts: Type.Integer({ minimum: 1, maximum: 1_000_000 }),
  records: Type.Array(SessionRecordSchema),
  removed: Type.Array(Token),
  cursor: Type.Object({
    v: Type.Literal(1),
    epoch: Epoch,
    reqSeq: Count,
    respSeq: Count,
    reqFrom: Count,
    respFrom: Count,
    services: Type.Array(Token),
    servers: Type.Array(Type.Object({ id: Token, service: Token, capacity: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })) })),
    hedging: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  }),
});

// ---- checking --------------------------------------------------------------------------------

/** A compiled schema and what to call its messages in an error. */
export interface Validator<T extends TSchema> {
  what: string;
  check: TypeCheck<T>;
}

function compile<T extends TSchema>(what: string, schema: T): Validator<T> {
  return { what, check: TypeCompiler.Compile(schema) };
}

export const V = {
  request: compile("request", RequestRecord),
  requestBatch: compile("request batch", RequestBatchRecord),
  responseBatch: compile("response batch", ResponseBatchRecord),
  taken: compile("receipt", TakenRecord),
  cancelRecord: compile("cancel record", CancelRecord),
  attempt: compile("attempt record", AttemptRecord),
  openRecord: compile("open record", OpenRecord),
  response: compile("response", ResponseRecord),
  checkpoint: compile("checkpoint", CheckpointRecord),
  open: compile("open", OpenCall),
  resume: compile("resume", ResumeCall),
  close: compile("close", CloseCall),
  register: compile("register", RegisterCall),
  heartbeat: compile("heartbeat", HeartbeatCall),
  work: compile("work", WorkMessage),
  workBatch: compile("work batch", WorkBatchMessage),
  cancel: compile("cancel", CancelMessage),
  deliver: compile("delivery", DeliverMessage),
  deliverBatch: compile("delivery batch", DeliverBatchMessage),
  deliverItem: compile("delivery in a batch", DeliverItem),
  restart: compile("restart", RestartMessage),
  backup: compile("backup", BackupMessage),
  hedge: compile("hedge options", HedgeSchema),
  retry: compile("retry options", RetrySchema),
  error: compile("error", WireErrSchema),
};

/**
 * The value, typed, when it fits the schema; otherwise TANDEM_MALFORMED naming the first field
 * that does not and why (e.g. `open: /service must match ...`).
 */
export function parse<T extends TSchema>(v: Validator<T>, value: unknown): Static<T> {
  if (v.check.Check(value)) return value;
  const first = v.check.Errors(value).First();
  const path = first?.path || "/";
  const field = path.split("/")[1] || undefined;
  const why = first ? `${path} ${first.message.replace(/^Expected/, "expected")}` : "does not fit its schema";
  throw new TandemError(ErrorCode.Malformed, `${v.what}: ${why}`, { context: field ? { field } : {} });
}

/** Does the value fit (no error built)? */
export function fits<T extends TSchema>(v: Validator<T>, value: unknown): value is Static<T> {
  return v.check.Check(value);
}
