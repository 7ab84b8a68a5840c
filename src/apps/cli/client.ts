/**
 * `tandem client`: send requests to a service and report the responses.
 * Its flags and help are declared here together; the common settings, parsing and runtime
 * come from the kit.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { TandemClient, type ClientSession, type PersistedSession } from "../../actors/client.js";
import { parseHedge } from "../../actors/protocol.js";
import type { HedgeOptions } from "../../machines/types.js";
import { transferFor } from "../ledger.js";
import { TandemError } from "../../runtime/errors.js";
import { createLogger } from "../../runtime/logger.js";
import { CHAOS_SESSION_RETRY, chaosBehaviour } from "../chaos-mix.js";
import { fail, parse, configFrom, int, runtime } from "./kit.js";

export const HELP = `Usage: tandem client --service S --requests N [--concurrency C] [--json] [options]

Opens C sessions and sends N requests over them (each session in order).
  --service S        service to call
  --requests N       requests in all (default 100)
  --concurrency C    sessions in parallel (default 1)
  --window W         requests of each session at its server at once (default 1; 32 with
                     --unordered); the responses still come in request order
  --unordered        each session an unordered pool: its requests go to any server of the
                     service with room, its responses come as they complete
  --json             one JSON line per response on stdout (request id, response, latency),
                     then a summary line
  --state FILE       keep the sessions in FILE: a client killed and started again with the
                     same FILE resumes its sessions and gets every response it had not taken
  --id ID            client id (default: random, or the one in --state)
  --payload JSON     request payload (default {"i": <index>})
  --mix SEED         for a --work chaos service: send a reproducible mix of succeeding,
                     failing, retried, server-killing, hanging and cancelled requests, each
                     response line saying the outcomes its behaviour allows ("expect")
  --transfers        send ledger transfers (update requests) instead of a payload
  --hedge K          hedged sessions: up to K copies of each request on different servers
  --hedge-after A    milliseconds before hedging (0 = at once, default 50) or p95
  --keep             do not close the sessions at the end
  --trace SUBJECT    nats-server message tracing: every request publish carries
                     Nats-Trace-Dest: SUBJECT; watch it with \`nats sub SUBJECT\``;

interface ClientState {
  client: string;
  service: string;
  requests: number;
  sessions: PersistedSession[];
}

function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return round2(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!);
}

/** Milliseconds to two decimals: what a person reads (40.99870200000004 -> 41). */
const round2 = (ms: number) => Math.round(ms * 100) / 100;

function writeAtomic(file: string, data: string): void {
  mkdirSync(dirname(resolve(file)), { recursive: true });
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, data);
  renameSync(tmp, file);
}

export async function cmdClient(argv: string[]): Promise<void> {
  const v = parse("client", HELP, argv, {
    service: { type: "string" },
    requests: { type: "string" },
    concurrency: { type: "string" },
    window: { type: "string" },
    unordered: { type: "boolean" },
    json: { type: "boolean" },
    state: { type: "string" },
    id: { type: "string" },
    payload: { type: "string" },
    keep: { type: "boolean" },
    transfers: { type: "boolean" },
    hedge: { type: "string" },
    "hedge-after": { type: "string" },
    trace: { type: "string" },
    mix: { type: "string" },
  });
  const mix = v.mix === undefined ? undefined : int(v.mix, "mix", 0);
  let hedge: HedgeOptions | undefined;
  if (v.hedge !== undefined) {
    const after = v["hedge-after"] === "p95" ? "p95" : int(v["hedge-after"], "hedge-after", 50);
    try {
      hedge = parseHedge({ copies: int(v.hedge, "hedge", 2, 2), after });
    } catch (err) {
      fail((err as Error).message);
    }
  }
  const transfers = v.transfers === true;
  const cfg = configFrom(v);
  const log = createLogger({ level: cfg.logLevel, name: `client ${typeof v.id === "string" ? v.id : process.pid}` });
  const json = v.json === true;
  const stateFile = typeof v.state === "string" ? v.state : undefined;
  let state: ClientState | null = null;
  if (stateFile && existsSync(stateFile)) {
    try {
      state = JSON.parse(readFileSync(stateFile, "utf8")) as ClientState;
    } catch (err) {
      fail(`--state ${stateFile} is not a Tandem client state file (${(err as Error).message}); remove it to start fresh`);
    }
  }
  const service = state?.service ?? (typeof v.service === "string" ? v.service : fail("--service is required (run `tandem client --help`)"));
  const total = state?.requests ?? int(v.requests, "requests", 100, 1);
  const concurrency = int(v.concurrency, "concurrency", 1, 1);
  const unordered = v.unordered === true;
  const window = int(v.window, "window", unordered ? 32 : 1, 1);
  if (hedge && window > 1) fail("--window and --hedge do not go together: a hedged session runs one request at a time");
  if (hedge && unordered) fail("--unordered and --hedge do not go together: a hedged session races copies of one request at a time");
  let payloadTemplate: unknown;
  if (typeof v.payload === "string") {
    try {
      payloadTemplate = JSON.parse(v.payload);
    } catch {
      fail("--payload must be JSON");
    }
  }
  const rt = await runtime(cfg, log, "tandem-client");
  const traceDest = typeof v.trace === "string" ? v.trace : undefined;
  let client: TandemClient;
  try {
    client = await TandemClient.connect(rt, { id: state?.client ?? (typeof v.id === "string" ? v.id : undefined), ...(traceDest ? { traceDest } : {}) });
  } catch (err) {
    await rt.close();
    fail((err as Error).message);
  }
  const out = (o: unknown) => {
    if (json) process.stdout.write(`${JSON.stringify(o)}\n`);
  };
  const started = performance.now();
  const latencies: number[] = [];
  let answered = 0;
  let errors = 0;
  const errorCodes: Record<string, number> = {};
  let sent = 0;
  const sessions: ClientSession[] = [];
  const quotas: number[] = [];
  try {
    if (state) {
      for (const p of state.sessions) {
        const s = await client.resume(p);
        sessions.push(s);
        const also = s.takenSet.also;
        out({ type: "resumed", session: s.id, restart: s.restart ?? null, lastReq: s.lastRequest, taken: s.takenUpTo, ...(s.ordered ? {} : { unordered: true, takenAlso: also ?? [] }) });
      }
      log.info({ sessions: sessions.length }, "resumed sessions from the state file");
    } else {
      for (let i = 0; i < Math.min(concurrency, total); i++) sessions.push(await client.open(service, { ...(hedge ? { hedge } : {}), ...(window > 1 ? { window } : {}), ...(unordered ? { ordered: false } : {}), ...(mix !== undefined ? { retry: CHAOS_SESSION_RETRY } : {}) }));
      state = { client: client.id, service, requests: total, sessions: sessions.map((s) => s.snapshot()) };
      if (stateFile) writeAtomic(stateFile, JSON.stringify(state));
    }
  } catch (err) {
    fail(err instanceof TandemError ? `${err.code}: ${err.message}` : String(err), 1);
  }
  // Committed receipts, for anyone checking exactly-once on this output.
  for (const s of sessions) s.onCommit((upTo) => out({ type: "taken", session: s.id, upTo, ...(s.ordered ? {} : { also: s.takenSet.also ?? [] }) }));
  const k = sessions.length;
  for (let i = 0; i < k; i++) quotas.push(Math.floor(total / k) + (i < total % k ? 1 : 0));
  // Progress as a line of its own every 2 s (a line rewritten in place ran into log lines).
  const t0 = performance.now();
  const progress =
    process.stderr.isTTY && !json
      ? setInterval(() => {
          const s = (performance.now() - t0) / 1000;
          process.stderr.write(`client: ${answered}/${total} answered (${Math.round((100 * answered) / Math.max(1, total))}%), ${Math.round(answered / s)}/s, ${Math.round(s)} s\n`);
        }, 2000)
      : undefined;
  let stopping = false;
  const onSignal = () => {
    if (stopping) process.exit(130);
    stopping = true;
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const record = (s: ClientSession, n: number, ok: boolean, value: unknown, error: TandemError | undefined, latency: number | null, server: string) => {
    if (ok) answered++;
    else {
      errors++;
      const code = error?.code ?? "unknown";
      errorCodes[code] = (errorCodes[code] ?? 0) + 1;
    }
    if (latency !== null) latencies.push(latency);
    // Under --mix, the outcomes the request's behaviour allows (for the history checker).
    const b = mix !== undefined ? chaosBehaviour(mix, sessions.indexOf(s), n) : undefined;
    out({ type: "response", request: `${s.id}.${n}`, session: s.id, n, ok, ...(ok ? { response: value } : { error: error?.code }), latencyMs: latency === null ? null : round2(latency), server, ...(b ? { behaviour: b.kind, expect: b.expect } : {}) });
  };

  await Promise.all(
    sessions.map(async (s, i) => {
      // Responses to requests an earlier incarnation sent (after a resume).
      const orphans = s.unclaimed;
      if (orphans > 0) {
        const it = s.responses();
        for (let c = 0; c < orphans; c++) {
          const r = await it.next();
          if (r.done) break;
          record(s, r.value.n, r.value.ok, r.value.value, r.value.error, null, r.value.server);
        }
      }
      const quota = quotas[i]!;
      // Up to `window` requests out at once; the next goes when one is answered (in order, the
      // oldest; in a pool, whichever completes first).
      const outstanding = new Set<Promise<boolean>>();
      while (!stopping && s.lastRequest < quota) {
        const n = s.lastRequest + 1;
        const b = mix !== undefined ? chaosBehaviour(mix, i, n) : null;
        const payload = b ? b.payload : transfers ? transferFor(n * 7 + i) : (payloadTemplate ?? { i: n, session: i });
        const t0 = performance.now();
        sent++;
        try {
          let signal: AbortSignal | undefined;
          if (b?.abortAfterMs !== undefined) {
            const ac = new AbortController();
            setTimeout(() => ac.abort(), b.abortAfterMs);
            signal = ac.signal;
          }
          // Client restart data: how far this session has sent (a resumed client continues there).
          const { response } = await s.send(payload, {
            restart: { sent: n },
            ...(transfers ? { kind: "update" as const } : {}),
            ...(b?.timeoutMs !== undefined ? { timeoutMs: b.timeoutMs } : {}),
            ...(b?.retry ? { retry: b.retry } : {}),
            ...(signal ? { signal } : {}),
          });
          const done = response.then((r) => {
            outstanding.delete(done);
            if (!r.ok && r.error?.code === "TANDEM_CLOSED") return false;
            record(s, n, r.ok, r.value, r.error, performance.now() - t0, r.server);
            return true;
          });
          outstanding.add(done);
          if (outstanding.size >= window && !(await Promise.race(outstanding))) break;
        } catch (err) {
          // Refused before queueing (back-pressure, too large): nothing was sent.
          sent--;
          const te = err instanceof TandemError ? err : undefined;
          log.error({ err }, te ? `${te.code}: ${te.message}` : "request failed");
          break;
        }
      }
      await Promise.all(outstanding);
    }),
  );
  clearInterval(progress);
  const done = sessions.every((s, i) => s.lastRequest >= quotas[i]! && s.pending === 0);
  if (done && v.keep !== true) {
    for (const s of sessions) await s.close().catch(() => {});
    if (stateFile) rmSync(stateFile, { force: true });
  }
  latencies.sort((a, b) => a - b);
  const summary = {
    type: "summary",
    client: client.id,
    service,
    sessions: sessions.length,
    sent,
    answered,
    errors,
    ...(errors > 0 ? { errorCodes } : {}),
    complete: done,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    durationMs: Math.round(performance.now() - started),
  };
  if (json) out(summary);
  else process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  await client.close();
  await rt.close();
}
