/**
 * Built-in server handlers for the CLI and the demo: echo, hash (CPU work that records its
 * progress as server restart data), sleep (abortable waiting) and chaos (fails as the payload
 * says: for trying out and testing what happens when work fails).
 */
import { createHash } from "node:crypto";
import type { Handler } from "../actors/server.js";
import { ErrorCode, RetryableError, TandemError, TerminalError } from "../runtime/errors.js";

export interface WorkOptions {
  /** sleep: milliseconds per request (a payload {ms} overrides). */
  sleepMs?: number;
  /** hash: rounds per request (a payload {rounds} overrides). */
  rounds?: number;
  /** hash: record progress every this many rounds. */
  checkpointEvery?: number;
}

function abortable(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

const num = (v: unknown, key: string): number | undefined => {
  if (typeof v === "object" && v !== null && key in v) {
    const x = (v as Record<string, unknown>)[key];
    if (typeof x === "number" && Number.isFinite(x) && x >= 0) return x;
  }
  return undefined;
};

/**
 * A straggler: `pct` percent of calls wait `ms` first (abortably), like a server with a slow
 * disk or a long GC pause now and then. For the hedging demo and benchmark.
 */
export function straggle(handler: Handler, pct: number, ms: number, random: () => number = Math.random): Handler {
  if (pct <= 0 || ms <= 0) return handler;
  return async (req, ctx) => {
    if (random() * 100 < pct) await abortable(ms, ctx.signal);
    return handler(req, ctx);
  };
}

/**
 * What the chaos handler does with a request, from its payload `{ do, ... }`:
 *  - "ok" (or no `do`): answers `{ ok: value }` after `ms` (default 0);
 *  - "throw": throws a TerminalError (code CHAOS_TERMINAL, details = the payload);
 *  - "retry": throws a RetryableError (code CHAOS_RETRY, delayMs = `delayMs`) while the attempt
 *    is at most `failTimes` (default: always), then answers as "ok";
 *  - "exit": ends the server process at once (exit code 1), as an out-of-memory crash or a
 *    native fault would: a poison request; `untilAttempt` makes it pass from that attempt on;
 *  - "hang": waits until its signal fires (cancel, deadline), then throws.
 */
export const chaosHandler: Handler = async (req, ctx) => {
  const p = (typeof req.payload === "object" && req.payload !== null ? req.payload : {}) as Record<string, unknown>;
  const what = typeof p.do === "string" ? p.do : "ok";
  const ms = num(p, "ms") ?? 0;
  const ok = async () => {
    if (ms > 0) await abortable(ms, ctx.signal);
    return { ok: p.value ?? null, attempt: req.attempt };
  };
  switch (what) {
    case "throw":
      throw new TerminalError("the chaos handler was asked to fail", { code: "CHAOS_TERMINAL", details: p });
    case "retry": {
      const failTimes = num(p, "failTimes") ?? Infinity;
      if (req.attempt <= failTimes) throw new RetryableError(`the chaos handler fails attempt ${req.attempt}`, { code: "CHAOS_RETRY", delayMs: num(p, "delayMs") ?? 0, details: { attempt: req.attempt } });
      return ok();
    }
    case "exit": {
      const until = num(p, "untilAttempt") ?? Infinity;
      if (req.attempt < until) {
        ctx.log.warn({ attempt: req.attempt }, "the chaos handler ends this process (a poison request)");
        process.exit(1);
      }
      return ok();
    }
    case "hang":
      await abortable(2 ** 31 - 1, ctx.signal);
      return ok();
    default:
      return ok();
  }
};

export function builtinHandlers(opts: WorkOptions = {}): Record<"echo" | "hash" | "sleep" | "chaos", Handler> {
  return {
    chaos: chaosHandler,
    echo: (req) => req.payload,
    sleep: async (req, ctx) => {
      const ms = num(req.payload, "ms") ?? opts.sleepMs ?? 10;
      await abortable(ms, ctx.signal);
      return { slept: ms, payload: req.payload };
    },
    hash: async (req, ctx) => {
      const rounds = Math.floor(num(req.payload, "rounds") ?? opts.rounds ?? 20_000);
      const every = Math.max(1, opts.checkpointEvery ?? Math.ceil(rounds / 4));
      // Continue from the progress a dead server recorded for this very request.
      const prev = req.restart as { n?: number; round?: number; digest?: string } | undefined;
      let round = 0;
      let digest = createHash("sha256").update(JSON.stringify(req.payload ?? null)).digest("hex");
      if (prev && prev.n === req.n && typeof prev.round === "number" && typeof prev.digest === "string") {
        round = prev.round;
        digest = prev.digest;
        ctx.log.info({ round }, "continuing hash work from server restart data");
      }
      while (round < rounds) {
        if (ctx.signal.aborted) throw new TandemError(ErrorCode.Cancelled, "hash cancelled");
        const stop = Math.min(rounds, round + every);
        for (; round < stop; round++) digest = createHash("sha256").update(digest).digest("hex");
        await ctx.checkpoint({ n: req.n, round, digest });
        await new Promise((r) => setImmediate(r)); // let heartbeats through
      }
      return { rounds, digest };
    },
  };
}
