/**
 * The one way Tandem tries again: `withBackoff` for work that must get done (a publish into a
 * queue, a registration, a connection) and `pollUntil` for waiting on a condition. The back-off
 * is p-retry's (exponential, capped, cancellable; well kept and tested far beyond a hand-written
 * loop), behind a first attempt made directly: the hot path (a request's publish, a response's
 * store) pays nothing for the library unless the first attempt fails.
 */
import pRetry from "p-retry";

export interface BackoffOptions {
  /** Wait before the second attempt, ms (default 50). */
  initialMs?: number;
  /** No wait longer than this, ms (default 1000). */
  maxMs?: number;
  /** Each wait is this many times the one before (default 2). */
  factor?: number;
  /** Keep trying only while this holds (checked after each failure); default: forever. */
  while?: () => boolean;
  /** Give up this long after the first attempt, ms; default: never. */
  forMs?: number;
  /** Errors not worth another attempt (bad credentials, a refusal): thrown at once. */
  fatal?: (err: unknown) => boolean;
  /** Told of each failure, attempts counted from 1 (to warn once, say at the fifth). */
  onFailure?: (err: unknown, attempt: number) => void;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const asError = (err: unknown): Error => (err instanceof Error ? err : new Error(String(err)));

/**
 * Run `fn` until it resolves, waiting more between attempts each time; rejects with the last
 * error when `while` stops holding, `forMs` passes, or an error is `fatal`.
 */
export async function withBackoff<T>(fn: (attempt: number) => Promise<T>, o: BackoffOptions = {}): Promise<T> {
  const started = Date.now();
  try {
    return await fn(1);
  } catch (err) {
    o.onFailure?.(err, 1);
    if (o.fatal?.(err) || (o.while && !o.while()) || (o.forMs !== undefined && Date.now() - started >= o.forMs)) throw err;
  }
  const initialMs = o.initialMs ?? 50;
  const factor = o.factor ?? 2;
  const maxMs = o.maxMs ?? 1000;
  await sleep(initialMs);
  return pRetry(
    async (n) => {
      try {
        return await fn(n + 1);
      } catch (err) {
        throw asError(err);
      }
    },
    {
      retries: Number.POSITIVE_INFINITY,
      minTimeout: Math.min(initialMs * factor, maxMs),
      maxTimeout: maxMs,
      factor,
      randomize: false,
      ...(o.forMs !== undefined ? { maxRetryTime: Math.max(0, o.forMs - (Date.now() - started)) } : {}),
      onFailedAttempt: ({ error, attemptNumber }) => o.onFailure?.(error, attemptNumber + 1),
      shouldRetry: ({ error }) => !o.fatal?.(error) && (o.while ? o.while() : true),
    },
  );
}

/** Wait until `cond` holds, checking every `everyMs`; throws naming `what` after `timeoutMs`. */
export async function pollUntil(cond: () => boolean | Promise<boolean>, what: string, timeoutMs: number, everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}
