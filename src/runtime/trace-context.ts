/**
 * W3C Trace Context (`traceparent: 00-<trace id>-<parent id>-<flags>`) for requests: one trace id
 * links a request's hops (its queue entry, its work message, its response and its delivery), and
 * an OpenTelemetry setup can take it from the handler's context. Tandem keeps the caller's
 * traceparent when it has one, and makes a sampled one otherwise.
 */
import { randomFillSync } from "node:crypto";

const TRACEPARENT = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
const ZERO_TRACE = "0".repeat(32);
const ZERO_SPAN = "0".repeat(16);

export function isTraceParent(v: unknown): v is string {
  return typeof v === "string" && TRACEPARENT.test(v) && v.slice(3, 35) !== ZERO_TRACE && v.slice(36, 52) !== ZERO_SPAN;
}

// Random bytes drawn in blocks: one getrandom call per 128 traceparents, not one per request.
const pool = Buffer.alloc(24 * 128);
let used = pool.length;

export function newTraceParent(): string {
  if (used === pool.length) {
    randomFillSync(pool);
    used = 0;
  }
  const hex = pool.toString("hex", used, used + 24);
  used += 24;
  return `00-${hex.slice(0, 32)}-${hex.slice(32, 48)}-01`;
}

/** The trace id of a traceparent (what a trace viewer groups by). */
export function traceIdOf(tp: string): string {
  return tp.slice(3, 35);
}
