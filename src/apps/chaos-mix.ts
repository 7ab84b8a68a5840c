/**
 * A reproducible mix of request behaviours for the chaos handler (`tandem server --work chaos`):
 * `tandem client --mix SEED` sends them, and the work-failure property checks that each request
 * ends with the outcome its behaviour implies. The behaviour of request n of a client's i-th
 * session depends only on (seed, i, n), so a resumed client knows what its earlier incarnation
 * sent.
 */
import type { RetryOptions } from "../machines/types.js";

export type ChaosKind = "ok" | "terminal" | "retry" | "exit" | "poison" | "hang" | "cancel";

export interface ChaosBehaviour {
  kind: ChaosKind;
  payload: Record<string, unknown>;
  timeoutMs?: number;
  /** The caller aborts the request this long after sending it. */
  abortAfterMs?: number;
  retry?: RetryOptions;
  /** The outcomes it may end with: "ok", or an error code. */
  expect: string[];
}

/** The sessions' policy under a mix: room for the attempts that faults and exits take. */
export const CHAOS_SESSION_RETRY: RetryOptions = { maxAttempts: 6, initialMs: 50, maxMs: 1000 };
/** A poison request's own policy: it ends its server on every attempt. */
export const CHAOS_POISON_ATTEMPTS = 2;

// Percent of requests of each kind (the rest are "ok").
const MIX: Array<[ChaosKind, number]> = [
  ["terminal", 6],
  ["retry", 6],
  ["exit", 3],
  ["poison", 2],
  ["hang", 4],
  ["cancel", 4],
];

function unit(seed: number, i: number, n: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (const x of [i, n]) {
    h ^= x + 0x7f4a7c15 + (h << 6) + (h >>> 2);
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  }
  return (h >>> 0) / 2 ** 32;
}

export function chaosBehaviour(seed: number, i: number, n: number): ChaosBehaviour {
  let u = unit(seed, i, n) * 100;
  let kind: ChaosKind = "ok";
  for (const [k, pct] of MIX) {
    if (u < pct) {
      kind = k;
      break;
    }
    u -= pct;
  }
  const value = `${i}.${n}`;
  switch (kind) {
    case "terminal":
      return { kind, payload: { do: "throw", value }, expect: ["CHAOS_TERMINAL"] };
    case "retry":
      return { kind, payload: { do: "retry", failTimes: 1, value }, expect: ["ok"] };
    case "exit":
      return { kind, payload: { do: "exit", untilAttempt: 2, value }, expect: ["ok"] };
    case "poison":
      return { kind, payload: { do: "exit", value }, retry: { maxAttempts: CHAOS_POISON_ATTEMPTS }, expect: ["TANDEM_POISON"] };
    case "hang":
      return { kind, payload: { do: "hang", value }, timeoutMs: 300, expect: ["TANDEM_DEADLINE"] };
    case "cancel":
      // The deadline keeps it finite should the caller die before it aborts.
      return { kind, payload: { do: "hang", value }, abortAfterMs: 100, timeoutMs: 5000, expect: ["TANDEM_CANCELLED", "TANDEM_DEADLINE"] };
    default:
      return { kind, payload: { do: "ok", value, ms: 5 }, expect: ["ok"] };
  }
}
