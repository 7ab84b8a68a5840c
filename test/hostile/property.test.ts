/**
 * Property (issue 13): hostile messages on every subject a client or a server may publish to
 * (and, the deployment being unsecured, on the manager's own subjects to them), while a
 * legitimate client runs a bounded load. fast-check generates the messages: random JSON shapes
 * that do not fit the subject's schema, bytes that are not JSON, nesting past the limit, strings
 * up to 300 kB, extreme numbers and epochs, ids that are not tokens, and well-formed responses
 * under made-up dispatch keys, batches (of deliveries, of work, of requests and responses in the queues) whose elements are hostile or forged, near misses of the batch envelope, and
 * receipts for the hostile client's own pool session (a receipt is a batch too: `takenAlso`, up to
 * 1,024 request numbers) naming numbers never sent, numbers far past the last, repeats, and
 * near misses of the schema (1,025 numbers, 0, fractions, strings).
 * For every run:
 *   - no Tandem process exits (the manager and the server are real processes);
 *   - the legitimate client's requests are all answered, in order, once, with their own answer,
 *     and its p99 stays within 3× its baseline (plus 20 ms: one fsync on this host);
 *   - every hostile message is refused: a reply with a TANDEM_* code where one was asked for, or
 *     a dead-letter entry holding its subject and bytes for what went into a queue;
 *   - the manager's RSS stays under its bound (a 128 MB heap, and 320 MB in all);
 *   - no hostile message opened a session or registered a server;
 *   - the hostile client's own pool session still answers new requests, each once: a receipt that
 *     fits is kept only up to the session's last request (its floor and the numbers above it),
 *     so numbers never sent do not count as taken when they are sent.
 *
 * Bounded: TANDEM_PROPERTY_RUNS (default 6; TANDEM_DEEP=1 makes it 40) within a time budget; the
 * seed is printed and TANDEM_SEED replays it.
 */
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe } from "vitest";
import fc from "fast-check";
import type { ManagerStatus } from "../../src/actors/manager.js";
import { TandemClient, type ClientSession } from "../../src/actors/client.js";
import { fits, V } from "../../src/actors/schemas.js";
import type { Runtime } from "../../src/runtime/runtime.js";
import { decode, encode } from "../../src/runtime/wire.js";
import { faultProperty } from "../helpers/property.js";
import { eventually, fastEnv, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";
import { tandem, type TandemProc } from "../helpers/procs.js";

const SERVER = "hsrv1";
const RSS_BOUND_MIB = 320;

let ns: NatsServer;
let rt: Runtime;
let mgr: TandemProc;
let srv: TandemProc;
let legit: TandemClient;
let session: ClientSession;
let baselineP99 = 0;

async function status(): Promise<ManagerStatus> {
  const r = await rt.nc.request(rt.names.mgr("status"), encode({}), { timeout: 3000 });
  return (decode(r.data) as { value: ManagerStatus }).value;
}
const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;
const p99 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.99))]!;

/** Where a hostile message goes: a queue (stored, then dead-lettered) or a request/reply subject. */
type Target =
  | "req-own" // the hostile client's own session queue
  | "req-other" // the legitimate session's queue
  | "resp" // a response or checkpoint, on the server's own subject or the real server's
  | "open" | "resume" | "close"
  | "register" | "heartbeat"
  | "work" | "cancel" | "deliver" | "srv-restart" | "cli-restart"
  | "deliver-batch" // a well-formed batch envelope to the legitimate session, its elements hostile
  | "work-batch" // the same to the real server's work subject
  | "receipt" // a receipt record for the hostile client's own pool session
  | "req-batch" // a well-formed request batch record in the hostile client's own queue, its elements hostile
  | "resp-batch"; // a well-formed response batch record on the real server's subject, its elements hostile or forged

interface Hostile {
  target: Target;
  /** A body: a JSON value, or raw bytes (not JSON, or nested past the limit). */
  body: { json: unknown } | { raw: string };
  /** For resp: write under the real server's id or a made-up one. */
  asRealServer: boolean;
  /** For deliver-batch: the elements, none of which fits a delivery. */
  items?: unknown[];
  /** For receipt: whether it fits the receipt schema (then kept in part), or is a near miss (dead-lettered). */
  fits?: boolean;
}

// The shapes each subject refuses: anything that fails its schema (and, for queue records, all
// three record kinds a request queue holds).
const refuses: Record<Target, (v: unknown) => boolean> = {
  "req-own": (v) => !isRecord(v),
  "req-other": (v) => !isRecord(v),
  resp: (v) => !fits(V.response, v) && !fits(V.checkpoint, v) && !fits(V.responseBatch, v),
  open: (v) => !fits(V.open, v),
  resume: (v) => !fits(V.resume, v),
  close: (v) => !fits(V.close, v),
  register: (v) => !fits(V.register, v),
  heartbeat: (v) => !fits(V.heartbeat, v),
  work: (v) => !fits(V.work, v) && !fits(V.workBatch, v),
  cancel: (v) => !fits(V.cancel, v),
  deliver: (v) => !fits(V.deliver, v) && !fits(V.deliverBatch, v),
  "deliver-batch": (v) => !fits(V.deliverItem, v),
  "work-batch": (v) => !fits(V.work, v),
  "srv-restart": (v) => !fits(V.restart, v),
  "cli-restart": (v) => !fits(V.restart, v),
  receipt: (v) => !isRecord(v),
  "req-batch": (v) => !(fits(V.request, v) && typeof v === "object" && v !== null && "payload" in v),
  // Any element is refused: a well-formed one carries a made-up key (below).
  "resp-batch": () => true,
};
function isRecord(v: unknown): boolean {
  return fits(V.openRecord, v) || fits(V.taken, v) || fits(V.requestBatch, v) || (fits(V.request, v) && typeof v === "object" && v !== null && "payload" in v);
}

const extremeNumber = fc.oneof(
  fc.constantFrom(0, -1, 2 ** 53, -(2 ** 53), 1e308, -1e308, 0.5, 1e15),
  fc.integer(),
  fc.double({ noNaN: true }),
);
const badId = fc.oneof(fc.constantFrom("", "a.b", "*", ">", "x".repeat(65), "sp ace", "ünï"), fc.string({ maxLength: 80 }));
const field = fc.constantFrom("n", "k", "epoch", "session", "client", "service", "server", "taken", "open", "ok", "error", "restart", "payload", "kind", "sessions", "capacity", "lastReq", "copy", "tp");
const shaped = fc.dictionary(field, fc.oneof(extremeNumber, badId, fc.jsonValue({ maxDepth: 3 }), fc.constant(null), fc.boolean()), { maxKeys: 8 });
const json = fc.oneof(shaped, fc.jsonValue({ maxDepth: 4 }), fc.string({ maxLength: 40 }).map((s) => ({ n: 1, payload: s, kind: s })));
const raw = fc.oneof(
  fc.string({ maxLength: 60 }), // rarely JSON
  fc.integer({ min: 65, max: 3000 }).map((d) => `{"n":1,"payload":${"[".repeat(d)}${"]".repeat(d)}}`),
  fc.integer({ min: 1, max: 300 }).map((kb) => `{"n":1,"payload":"${"x".repeat(kb * 1024)}"`), // huge and cut short
);
const target = fc.constantFrom<Target>("req-own", "req-other", "resp", "open", "resume", "close", "register", "heartbeat", "work", "cancel", "deliver", "srv-restart", "cli-restart");

const hostile: fc.Arbitrary<Hostile> = fc
  .record({ target, body: fc.oneof({ arbitrary: json.map((j) => ({ json: j })), weight: 3 }, { arbitrary: raw.map((r) => ({ raw: r })), weight: 1 }), asRealServer: fc.boolean() })
  .filter((h) => {
    if ("raw" in h.body) {
      try {
        return refuses[h.target](JSON.parse(h.body.raw));
      } catch {
        return true;
      }
    }
    return refuses[h.target](h.body.json);
  });
// A batch envelope that fits, to the legitimate session at its epoch, every element hostile: each
// is refused on its own and dead-lettered with its own bytes (issue 17, batched deliveries).
const hostileBatch: fc.Arbitrary<Hostile> = fc
  .array(json.filter((v) => refuses["deliver-batch"](v)), { minLength: 1, maxLength: 5 })
  .map((items) => ({ target: "deliver-batch" as const, body: { json: null }, asRealServer: false, items }));
const hostileWorkBatch: fc.Arbitrary<Hostile> = fc
  .array(json.filter((v) => refuses["work-batch"](v)), { minLength: 1, maxLength: 5 })
  .map((items) => ({ target: "work-batch" as const, body: { json: null }, asRealServer: true, items }));
// Batch records in the queues (issue 17: a client's requests of one turn, a server's responses):
// the envelope fits, every element is hostile, and each is dead-lettered with its own bytes.
const hostileReqBatch: fc.Arbitrary<Hostile> = fc
  .array(json.filter((v) => refuses["req-batch"](v)), { minLength: 1, maxLength: 5 })
  .map((items) => ({ target: "req-batch" as const, body: { json: null }, asRealServer: false, items }));
const forgedItem = fc.record({ n: fc.integer({ min: 1, max: 50 }), ok: fc.jsonValue({ maxDepth: 2 }), k: fc.stringMatching(/^[A-Za-z0-9_-]{22}$/) });
const hostileRespBatch: fc.Arbitrary<Hostile> = fc
  .array(fc.oneof(json.filter((v) => !fits(V.response, v) && !fits(V.checkpoint, v)), forgedItem), { minLength: 1, maxLength: 5 })
  .map((items) => ({ target: "resp-batch" as const, body: { json: null }, asRealServer: true, items }));
// Near misses of the batch envelope: refused whole, dead-lettered with the record's bytes.
const nearMissBatch: fc.Arbitrary<Hostile> = fc
  .record({
    target: fc.constantFrom<Target>("req-own", "resp"),
    json: fc.constantFrom<unknown>({ batch: [] }, { batch: "x" }, { batch: null }, { batch: { n: 1 } }, { batch: Array.from({ length: 65 }, (_, i) => ({ n: i + 1, payload: i })) }),
  })
  .map(({ target, json }) => ({ target, body: { json }, asRealServer: true }));
// Well-formed responses under made-up keys: refused as forged.
const forgedResponse: fc.Arbitrary<Hostile> = fc
  .record({ n: fc.integer({ min: 1, max: 50 }), ok: fc.jsonValue({ maxDepth: 2 }), k: fc.stringMatching(/^[A-Za-z0-9_-]{22}$/), asRealServer: fc.boolean() })
  .map(({ n, ok, k, asRealServer }) => ({ target: "resp" as const, body: { json: { n, k, ok } }, asRealServer }));

// Receipts for the hostile client's own pool (which has answered requests 1..POOL_WARM when they
// are sent): a floor and `takenAlso` naming numbers never sent (past the last request, up to
// 2^53 - 1), repeats and already-taken ones; or a near miss of the receipt schema.
const POOL_WARM = 3;
const alsoNumber = fc.oneof(fc.integer({ min: 1, max: POOL_WARM }), fc.integer({ min: POOL_WARM + 1, max: POOL_WARM + 12 }), fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }));
const fittingReceipt: fc.Arbitrary<Hostile> = fc
  .record({ taken: fc.oneof(fc.integer({ min: 0, max: POOL_WARM }), alsoNumber), takenAlso: fc.array(alsoNumber, { maxLength: 1024, size: "medium" }) })
  .map((r) => ({ target: "receipt" as const, body: { json: r }, asRealServer: false, fits: true }));
const nearMissReceipt: fc.Arbitrary<Hostile> = fc
  .oneof(
    fc.constant({ taken: 1, takenAlso: Array.from({ length: 1025 }, (_, i) => i + 2) }),
    fc.record({ taken: fc.integer({ min: 0, max: POOL_WARM }), takenAlso: fc.array(fc.oneof(fc.constantFrom(0, -1, 0.5, 1e308, 2 ** 53, "7", null), alsoNumber), { minLength: 1, maxLength: 8 }) }),
    fc.record({ taken: fc.constantFrom(-1, 0.5, "2", null), takenAlso: fc.array(alsoNumber, { maxLength: 4 }) }),
    fc.record({ taken: fc.integer({ min: 0, max: POOL_WARM }), takenAlso: fc.oneof(fc.constant("1,2"), fc.constant({ 4: true }), fc.integer()) }),
  )
  .filter((v) => refuses.receipt(v))
  .map((v) => ({ target: "receipt" as const, body: { json: v }, asRealServer: false, fits: false }));

const runArb = fc.array(fc.oneof({ arbitrary: hostile, weight: 4 }, { arbitrary: forgedResponse, weight: 1 }, { arbitrary: hostileBatch, weight: 1 }, { arbitrary: hostileWorkBatch, weight: 1 }, { arbitrary: fittingReceipt, weight: 1 }, { arbitrary: nearMissReceipt, weight: 1 }, { arbitrary: hostileReqBatch, weight: 1 }, { arbitrary: hostileRespBatch, weight: 1 }, { arbitrary: nearMissBatch, weight: 1 }), { minLength: 4, maxLength: process.env.TANDEM_DEEP === "1" ? 40 : 14 });

beforeAll(async () => {
  ns = await startNats();
  const env = { ...fastEnv(ns.url), NODE_OPTIONS: "--max-old-space-size=128" };
  mgr = tandem("manager", ["manager", "--node", "hm1"], env);
  rt = await runtimeFor(ns);
  await eventually(async () => (await status().catch(() => null))?.state.includes("primary") || null, "the manager to be primary", 30_000);
  srv = tandem("server", ["server", "--service", "svc", "--work", "echo", "--id", SERVER], fastEnv(ns.url));
  await eventually(async () => (await status()).servers.some((s) => s.id === SERVER && s.alive) || null, "the server to register", 30_000);
  legit = await TandemClient.connect(rt, { id: "legit" });
  session = await legit.open("svc");
  for (let i = 0; i < 100; i++) await session.request({ warm: i });
  const lat: number[] = [];
  for (let i = 0; i < 200; i++) {
    const t0 = performance.now();
    await session.request({ warm: i });
    lat.push(performance.now() - t0);
  }
  baselineP99 = p99(lat);
  console.log(`hostile property: legitimate client baseline p99 ${baselineP99.toFixed(2)} ms`);
}, 90_000);

afterAll(async () => {
  await legit?.close().catch(() => {});
  await srv?.kill("SIGTERM");
  await mgr?.kill("SIGTERM");
  await rt?.close();
  await ns?.cleanup();
});

let sent = 0;

type Sent = { reply?: { ok: boolean; error?: { code?: string }; value?: unknown } | "none"; dlq?: Array<{ subject: string; data: Uint8Array }> };

async function send(h: Hostile, own: { client: string; session: string; pool: string }): Promise<Sent> {
  const data =
    h.target === "deliver-batch"
      ? encode({ epoch: session.epoch, session: session.id, batch: h.items })
      : h.target === "work-batch" || h.target === "req-batch" || h.target === "resp-batch"
        ? encode({ batch: h.items })
        : "json" in h.body
        ? encode(h.body.json)
        : new TextEncoder().encode(h.body.raw);
  const n = rt.names;
  const stored = async (subject: string) => {
    await rt.js.publish(subject, data, { msgID: `hostile.${++sent}.${Date.now()}` });
    return { dlq: [{ subject, data }] };
  };
  const ask = async (subject: string) => {
    const r = await rt.nc.request(subject, data, { timeout: 4000 }).then(
      (m) => decode(m.data) as { ok: boolean; error?: { code?: string } },
      () => "none" as const,
    );
    return { reply: r };
  };
  switch (h.target) {
    case "req-own":
      return stored(n.req(own.client, own.session));
    case "req-other":
      return stored(n.req("legit", session.id));
    case "receipt":
      if (h.fits) {
        // Fits: taken in part, nothing to dead-letter; what it must not do is checked after the run.
        await rt.js.publish(n.req(own.client, own.pool), data, { msgID: `hostile.${++sent}.${Date.now()}` });
        return {};
      }
      return stored(n.req(own.client, own.pool));
    case "resp":
      return stored(n.resp(h.asRealServer ? SERVER : "mallory", h.asRealServer ? session.id : own.session));
    case "open":
    case "resume":
    case "close":
      return ask(n.clientCall(h.target, own.client));
    case "register":
      return ask(n.register("mallory", "svc"));
    case "heartbeat":
      return ask(n.heartbeat(h.asRealServer ? SERVER : "mallory"));
    case "work":
      return ask(n.work(SERVER, session.id));
    case "cancel":
      return ask(n.cancel(SERVER, session.id));
    case "deliver":
      return ask(n.deliver("legit", session.id));
    case "deliver-batch":
    case "work-batch": {
      const subject = h.target === "work-batch" ? n.work(SERVER, session.id) : n.deliver("legit", session.id);
      return { ...(await ask(subject)), dlq: h.items!.map((i) => ({ subject, data: encode(i) })) };
    }
    case "req-batch":
    case "resp-batch": {
      const subject = h.target === "req-batch" ? n.req(own.client, own.session) : n.resp(SERVER, session.id);
      await rt.js.publish(subject, data, { msgID: `hostile.${++sent}.${Date.now()}` });
      return { dlq: h.items!.map((i) => ({ subject, data: encode(i) })) };
    }
    case "srv-restart":
      return ask(n.srv(SERVER, "restart"));
    case "cli-restart":
      return ask(n.cli("legit", "restart"));
  }
}

/** DLQ entries as the stream holds them, from a sequence on. */
async function dlqSince(seq: number): Promise<Array<{ subject: string; data: string | null }>> {
  const out: Array<{ subject: string; data: string | null }> = [];
  const info = await rt.jsm.streams.info(rt.names.streamDlq);
  for (let s = Math.max(seq, info.state.first_seq); s <= info.state.last_seq; s++) {
    const m = await rt.jsm.streams.getMessage(rt.names.streamDlq, { seq: s }).catch(() => null);
    if (m) out.push(m.json<{ subject: string; data: string | null }>());
  }
  return out;
}

describe("hostile input (issue 13)", () => {
  let round = 0;
  faultProperty(
    "hostile messages on every subject: nothing exits, the legitimate client is served in order and on time, each message is refused or dead-lettered, memory stays bounded",
    "hostile property",
    runArb,
    async (msgs) => {
      const problems: string[] = [];
      round++;
      const mallory = await TandemClient.connect(rt, { id: `mallory${round}` });
      const pool = await mallory.open("svc", { ordered: false, window: 4 });
      for (let i = 1; i <= POOL_WARM; i++) await pool.request({ pool: i });
      const own = { client: mallory.id, session: (await mallory.open("svc")).id, pool: pool.id };
      const before = await status();
      const dlqFrom = (await rt.jsm.streams.info(rt.names.streamDlq)).state.last_seq + 1;
      // The legitimate load, alongside.
      const lat: number[] = [];
      const got: unknown[] = [];
      let stop = false;
      const load = (async () => {
        for (let i = 0; !stop || i < 20; i++) {
          const t0 = performance.now();
          got.push(await session.request({ r: round, i }));
          lat.push(performance.now() - t0);
        }
      })();
      const outcomes = [];
      for (const h of msgs) outcomes.push({ h, out: await send(h, own) });
      stop = true;
      await load.catch((err: Error) => problems.push(`legitimate request failed: ${err.message}`));

      // Answered in order, once, each with its own answer.
      got.forEach((v, i) => {
        if (JSON.stringify(v) !== JSON.stringify({ r: round, i })) problems.push(`legitimate answer ${i} was ${JSON.stringify(v)}`);
      });
      const bound = 3 * baselineP99 + 20;
      if (lat.length && p99(lat) > bound) problems.push(`legitimate p99 ${p99(lat).toFixed(1)} ms > ${bound.toFixed(1)} ms (3× baseline + 20)`);
      // Refused where a reply was asked for.
      for (const { h, out } of outcomes) {
        if (!out.reply) continue;
        const r = out.reply;
        if (h.target === "deliver-batch" || h.target === "work-batch") {
          // Taken as a batch, each element refused with a code.
          const results = r !== "none" && r.ok ? (r.value as { results?: Array<{ error?: { code?: string } }> }).results : undefined;
          if (!results || results.length !== h.items!.length || !results.every((x) => /^TANDEM_/.test(x.error?.code ?? ""))) problems.push(`${h.target} ${JSON.stringify(h.items).slice(0, 120)} got ${JSON.stringify(r).slice(0, 160)}`);
          continue;
        }
        if (r === "none" || r.ok || !/^TANDEM_/.test(r.error?.code ?? "")) problems.push(`${h.target} ${JSON.stringify(h.body).slice(0, 120)} got ${JSON.stringify(r).slice(0, 160)}`);
      }
      // Dead-lettered with their bytes where they went into a queue.
      const wanted = outcomes.flatMap((o) => o.out.dlq ?? []);
      const key = (subject: string, b64: string | null) => `${subject} ${b64}`;
      try {
        await eventually(async () => {
          const have = new Set((await dlqSince(dlqFrom)).map((e) => key(e.subject, e.data)));
          return wanted.every((w) => have.has(key(w.subject, Buffer.from(w.data).toString("base64")))) || null;
        }, "every stored hostile message in the DLQ with its bytes", 15_000);
      } catch (err) {
        const have = new Set((await dlqSince(dlqFrom)).map((e) => key(e.subject, e.data)));
        for (const w of wanted) if (!have.has(key(w.subject, Buffer.from(w.data).toString("base64")))) problems.push(`not dead-lettered: ${w.subject} ${new TextDecoder().decode(w.data).slice(0, 120)}`);
        if (!problems.length) problems.push(String(err));
      }
      // The hostile client's own pool goes on: numbers its receipts named before they were sent
      // are answered when they are sent, each once.
      const later = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          Promise.race([
            pool.request({ pool: POOL_WARM + 1 + i }),
            new Promise((r) => setTimeout(() => r("no answer in 15 s"), 15_000)),
          ]),
        ),
      );
      later.forEach((v, i) => {
        if (JSON.stringify(v) !== JSON.stringify({ pool: POOL_WARM + 1 + i })) problems.push(`the hostile client's pool: request ${POOL_WARM + 1 + i} got ${JSON.stringify(v)}`);
      });
      for (const p of [mgr, srv]) if (!p.running()) problems.push(`${p.name} exited: ${p.stderr().slice(-800)}`);
      if (mgr.running() && rssMiB(mgr.pid) > RSS_BOUND_MIB) problems.push(`manager RSS ${rssMiB(mgr.pid).toFixed(0)} MiB > ${RSS_BOUND_MIB}`);
      const after = await status().catch(() => null);
      if (!after) problems.push("the manager does not answer status");
      else {
        if (after.sessions !== before.sessions) problems.push(`sessions ${before.sessions} -> ${after.sessions}`);
        const servers = after.servers.map((s) => s.id).sort();
        if (JSON.stringify(servers) !== JSON.stringify([SERVER])) problems.push(`servers ${servers.join(",")}`);
      }
      await mallory.close();
      return problems;
    },
    (msgs) => `${msgs.length} hostile messages (${[...new Set(msgs.map((m) => m.target))].join(" ")})`,
    { runs: 6, deepRuns: 40, budgetMs: 90_000, deepBudgetMs: 900_000 },
  );
});
