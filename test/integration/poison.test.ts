/**
 * A poison request (issue 15, item 1): a handler that ends its process on one payload, on two
 * real server processes that a supervisor (the test) restarts under the same ids. The request is
 * answered TANDEM_POISON after exactly maxAttempts executions, the dead-letter stream holds it
 * with its bytes, another session of the service is served throughout, and `tandem dlq replay`
 * (the real CLI) answers it once the handler is fixed, once however often it is run.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import type { ManagerNode } from "../../src/actors/manager.js";
import { TandemServer } from "../../src/actors/server.js";
import { TandemClient } from "../../src/actors/client.js";
import { bodyOf, listDeadLetters } from "../../src/actors/deadLetters.js";
import { TandemError } from "../../src/runtime/errors.js";
import { eventually, fastEnv, primaryManager, runtimeFor, startNats, type NatsServer } from "../helpers/nats.js";
import { CLI, logLines, tandem, type TandemProc } from "../helpers/procs.js";

const SERVER_TIMEOUT_MS = 1500;
let ns: NatsServer;
let rt: Awaited<ReturnType<typeof runtimeFor>>;
let mgr: ManagerNode;

/** A server id kept alive as a supervisor would: restarted 100 ms after each exit. */
class Supervised {
  readonly procs: TandemProc[] = [];
  private stopped = false;
  constructor(
    readonly id: string,
    private readonly env: Record<string, string>,
  ) {}
  start(): void {
    const p = tandem(`${this.id}#${this.procs.length + 1}`, ["server", "--service", "svc", "--work", "chaos", "--id", this.id], this.env);
    this.procs.push(p);
    void p.exited.then(() => {
      if (!this.stopped) setTimeout(() => this.start(), 100);
    });
  }
  /** Executions of the poison payload: each logs this line just before it ends its process. */
  poisonRuns(): number {
    return this.procs.reduce((k, p) => k + logLines(p).filter((l) => l.msg === "the chaos handler ends this process (a poison request)").length, 0);
  }
  async stop(): Promise<void> {
    this.stopped = true;
    for (const p of this.procs) await p.kill("SIGKILL");
  }
}

beforeAll(async () => {
  ns = await startNats();
  rt = await runtimeFor(ns, { serverTimeoutMs: SERVER_TIMEOUT_MS });
  mgr = await primaryManager(rt);
}, 60_000);

afterAll(async () => {
  await mgr?.stop();
  await rt?.close();
  await ns?.cleanup();
});

describe("a poison request", () => {
  it("is answered TANDEM_POISON after exactly maxAttempts executions, dead-lettered with its bytes, while the service's other sessions are served; replay answers it once", async () => {
    const env = { ...fastEnv(ns.url), TANDEM_SERVER_TIMEOUT_MS: String(SERVER_TIMEOUT_MS) };
    const servers = [new Supervised("p1", env), new Supervised("p2", env)];
    for (const s of servers) s.start();
    await eventually(async () => (mgr.status().servers.filter((s) => s.alive).length === 2 ? true : null), "two servers registered", 30_000);

    const c = await TandemClient.connect(rt);
    const poisoned = await c.open("svc", { retry: { maxAttempts: 3, initialMs: 100 } });
    const other = await c.open("svc");
    // The other session's normal latency first.
    const normal: number[] = [];
    for (let i = 0; i < 40; i++) {
      const t = performance.now();
      expect(await other.request({ do: "ok", value: i })).toEqual({ ok: i, attempt: 1 });
      normal.push(performance.now() - t);
    }
    normal.sort((a, b) => a - b);
    const p99 = normal[Math.floor(normal.length * 0.99)]!;

    // It keeps sending while the poison request takes servers down.
    let stop = false;
    const during: number[] = [];
    /** The other session's request number of each latency in `during`. */
    const numbers: number[] = [];
    const loop = (async () => {
      for (let i = 0; !stop; i++) {
        const t = performance.now();
        const v = (await other.request({ do: "ok", value: i })) as { ok: number };
        expect(v.ok).toBe(i);
        during.push(performance.now() - t);
        numbers.push(other.lastRequest);
      }
    })();

    const t0 = performance.now();
    const err = await poisoned.request({ do: "exit", note: "kills its server" }).then(
      () => null,
      (e: unknown) => e,
    );
    const episodeMs = performance.now() - t0;
    expect(err).toBeInstanceOf(TandemError);
    const te = err as TandemError;
    expect(te.code).toBe("TANDEM_POISON");
    expect(te.context.attempts).toBe(3);
    expect((te.context.servers as string[]).length).toBe(3);
    expect((te.context.lastError as { code: string }).code).toBe("TANDEM_SERVER_LOST");
    // The session goes on: its next request is served.
    expect(await poisoned.request({ do: "ok", value: "next" })).toEqual({ ok: "next", attempt: 1 });

    await new Promise((r) => setTimeout(r, 1000)); // no further execution comes late
    stop = true;
    await loop;
    const runs = servers.reduce((k, s) => k + s.poisonRuns(), 0);
    const worst = Math.max(...during);
    // Attempts of the other session's requests lost with a server the poison took down: with
    // two servers, a request moved off one victim can land on the next (a server process
    // restarts in about 0.85 s here, well inside the server timeout).
    const lost = new Map<number, number>();
    for (const l of rt.logs()) {
      if (l.session === other.id && l.code === "TANDEM_SERVER_LOST" && typeof l.n === "number") lost.set(l.n, (lost.get(l.n) ?? 0) + 1);
    }
    console.log(
      `poison: answered TANDEM_POISON after ${runs} executions in ${episodeMs.toFixed(0)} ms; the other session: ${during.length} requests meanwhile, worst ${worst.toFixed(0)} ms (normal p99 ${p99.toFixed(1)} ms, server timeout ${SERVER_TIMEOUT_MS} ms)`,
    );
    expect(runs).toBe(3);
    expect(during.length).toBeGreaterThan(10);
    // A server death costs the other sessions at most the server timeout (plus a heartbeat
    // interval of detection slack, and their usual latency), for each death that took one of
    // their requests with it.
    during.forEach((ms, i) => expect(ms, `request ${numbers[i]} (${lost.get(numbers[i]!) ?? 0} attempts lost)`).toBeLessThan(Math.max(1, lost.get(numbers[i]!) ?? 0) * (SERVER_TIMEOUT_MS + 100) + p99 + 100));
    expect(Math.max(...lost.values(), 0)).toBeLessThanOrEqual(2);

    // The dead-letter stream has it, with the request's subject and bytes.
    const dl = await eventually(async () => (await listDeadLetters(rt, { reason: "poison", session: poisoned.id }))[0], "the poison entry");
    expect(dl.n).toBe(1);
    expect(dl.subject).toBe(rt.names.req(c.id, poisoned.id));
    const body = bodyOf(dl);
    expect(body.kind).toBe("json");
    expect((body as { value: { payload: unknown } }).value.payload).toEqual({ do: "exit", note: "kills its server" });
    expect(dl.context.attempts).toBe(3);

    // The handler is fixed: the chaos servers go, a server that answers comes (and counts).
    for (const s of servers) await s.stop();
    await eventually(async () => (mgr.status().servers.filter((s) => s.alive).length === 0 ? true : null), "chaos servers gone", 15_000);
    let executions = 0;
    const fixedRt = await runtimeFor(ns, {}, "fixed");
    const fixed = await TandemServer.start(fixedRt, {
      service: "svc",
      handler: (r) => {
        executions++;
        return { fixed: true, payload: r.payload };
      },
    });
    // The real CLI, run asynchronously (the manager and the fixed server live in this process).
    const replay = async () => {
      const r = await promisify(execFile)(process.execPath, [CLI, "dlq", "replay", String(dl.id), "--json"], { env: { ...process.env, NATS_URL: ns.url }, encoding: "utf8", timeout: 60_000 });
      const last = r.stdout.trim().split("\n").pop()!;
      expect(last.startsWith("{"), `${r.stdout}\n${r.stderr}`).toBe(true);
      return JSON.parse(last) as { ran: boolean; ok: boolean; value: unknown };
    };
    const first = await replay();
    expect(first).toEqual(expect.objectContaining({ ran: true, ok: true, value: { fixed: true, payload: { do: "exit", note: "kills its server" } } }));
    const second = await replay();
    expect(second).toEqual(expect.objectContaining({ ran: false, ok: true, value: first.value }));
    expect(executions).toBe(1);

    await poisoned.close();
    await other.close();
    await c.close();
    await fixed.stop();
    await fixedRt.close();
  }, 120_000);
});
