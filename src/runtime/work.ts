/**
 * Built-in server handlers for the CLI and the demo: echo, hash (CPU work that records its
 * progress as server restart data) and sleep (abortable waiting).
 */
import { createHash } from "node:crypto";
import type { Handler } from "../actors/server.js";
import { ErrorCode, TandemError } from "./errors.js";

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

export function builtinHandlers(opts: WorkOptions = {}): Record<"echo" | "hash" | "sleep", Handler> {
  return {
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
