/**
 * When work fails (docs/design.md §9): the retry policy, the back-off schedule and which
 * failures count as retryable. Pure: the manager's core asks it what to do with an attempt
 * that failed; the schedule depends only on its inputs, so a new primary replaying the same
 * attempt records computes the same retry times (a retry survives a failover unchanged).
 */
import type { WireErr } from "./types.js";

export interface RetryPolicy {
  /** Executions in all, the first included; past it the request is quarantined (TANDEM_POISON). */
  maxAttempts: number;
  /** Wait before the second attempt, in ms. */
  initialMs: number;
  /** Each further wait is this many times the one before. */
  factor: number;
  /** No wait is longer than this, in ms. */
  maxMs: number;
  /** Up to this fraction of each wait is taken off at random (0 = none, 1 = "full jitter"). */
  jitter: number;
}

/** What a user of a work queue expects: three tries, a fifth of a second doubling, a little jitter. */
export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 3, initialMs: 200, factor: 2, maxMs: 30_000, jitter: 0.2 };

/** The bounds the settings are checked against (the wire schema uses the same). */
export const RETRY_BOUNDS = {
  maxAttempts: [1, 1000],
  initialMs: [0, 86_400_000],
  factor: [1, 100],
  maxMs: [0, 86_400_000],
  jitter: [0, 1],
} as const satisfies Record<keyof RetryPolicy, readonly [number, number]>;

/** The policy that applies: the request's fields over the session's over the defaults. */
export function resolvePolicy(...layers: Array<Partial<RetryPolicy> | null | undefined>): RetryPolicy {
  const out: RetryPolicy = { ...DEFAULT_RETRY };
  for (const l of layers) {
    if (!l) continue;
    for (const k of Object.keys(RETRY_BOUNDS) as Array<keyof RetryPolicy>) {
      const v = l[k];
      if (typeof v === "number" && Number.isFinite(v)) out[k] = v;
    }
  }
  return out;
}

/** FNV-1a over a string, to [0, 1): jitter that every replica computes alike. */
function unitHash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) / 2 ** 32;
}

/**
 * The wait after the `failures`-th failed attempt (1 = after the first), in ms: exponential,
 * capped, with deterministic jitter seeded by the request (`seed`, e.g. "<session>.<n>"). A
 * retryable error's own delay (`retryAfterMs`) is a floor.
 */
export function retryDelay(p: RetryPolicy, failures: number, seed: string, retryAfterMs = 0): number {
  const base = Math.min(p.maxMs, p.initialMs * p.factor ** Math.max(0, failures - 1));
  const jittered = base * (1 - p.jitter * unitHash(`${seed}#${failures}`));
  return Math.max(Math.round(jittered), retryAfterMs);
}

/** Error codes of failures that are the infrastructure's, not the handler's: always retried. */
export const INFRASTRUCTURE_FAILURES: ReadonlySet<string> = new Set(["TANDEM_SERVER_LOST", "TANDEM_STORE"]);

/**
 * Does this failed attempt ask for another? Infrastructure failures (the server died, the store
 * was unreachable) do; a handler's error only when it was marked retryable (RetryableError).
 * A plain throw, or a TerminalError, is the answer.
 */
export function isRetryable(e: WireErr): boolean {
  return e.retryable === true || INFRASTRUCTURE_FAILURES.has(e.code);
}

/** One request's failed attempts, as the attempt records in its response queue tell them. */
export interface AttemptState {
  /** Failed attempts counted. */
  failures: number;
  /** Servers that held it when an attempt failed, in order. */
  servers: string[];
  lastError: WireErr | null;
  /** Not dispatched again before this time (core clock). */
  retryAt: number;
  /** Stream sequences of the records applied (each counts once, however often it is read). */
  seqs: number[];
}

export function newAttempts(): AttemptState {
  return { failures: 0, servers: [], lastError: null, retryAt: 0, seqs: [] };
}

/**
 * Count one failed attempt (read from the record at stream sequence `seq`, written at `at`):
 * "retry" at a time, or "quarantine" when the policy's attempts are used up. Null when that
 * record was counted already.
 */
export function countFailure(
  a: AttemptState,
  p: RetryPolicy,
  f: { seq: number; at: number; server: string; error: WireErr; seed: string },
): { action: "retry"; at: number } | { action: "quarantine" } | null {
  if (a.seqs.includes(f.seq)) return null;
  a.seqs.push(f.seq);
  a.failures++;
  a.servers.push(f.server);
  a.lastError = f.error;
  if (a.failures >= p.maxAttempts) return { action: "quarantine" };
  a.retryAt = Math.max(a.retryAt, f.at + retryDelay(p, a.failures, f.seed, f.error.retryAfterMs ?? 0));
  return { action: "retry", at: a.retryAt };
}
