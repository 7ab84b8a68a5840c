/**
 * `npm run bench`: Tandem against raw NATS, side by side, in one run on one nats-server
 * (docs/design.md §7). Never part of `npm test`. Writes bench-results/latest.json, prints a Markdown
 * table, and draws SVG charts (latency CDF, throughput vs sessions, failover timeline).
 *
 *   --quick          a run of about a minute
 *   --part P         raw,brokered,pool,path,scale,failover,restart,hedging (comma-separated; default all)
 *   --out DIR        where results go (default bench-results)
 *   --report FILE    print the tables of an earlier run's JSON again
 *   --logs DIR       keep the log of every process the bench starts (info level) in DIR
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { AckPolicy, DeliverPolicy, jetstream, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { TandemClient, type ClientSession } from "../actors/client.js";
import { unwrap } from "../actors/protocol.js";
import type { ManagerStatus } from "../actors/manager.js";
import { resolveConfig } from "../runtime/config.js";
import { createLogger } from "../runtime/logger.js";
import { NatsServer, serverConfig } from "../runtime/dev/nats-server.js";
import { natsCliBin } from "../runtime/dev/nats-bin.js";
import { startRuntime, type Runtime } from "../runtime/runtime.js";
import { setTraceDir } from "../runtime/trace.js";
import { encode } from "../runtime/wire.js";

const CLI = fileURLToPath(new URL("./cli.js", import.meta.url));

interface Latency {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  /** The longest: a stall of a few requests hides below p99 and shows here (and in the rate). */
  max: number;
}

function stats(samples: number[]): Latency {
  const s = [...samples].sort((a, b) => a - b);
  const at = (p: number) => (s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))]! : NaN);
  return { n: s.length, p50: at(0.5), p90: at(0.9), p99: at(0.99), p999: at(0.999), max: s.length ? s[s.length - 1]! : NaN };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function progress(label: string): (done: number, total: number) => void {
  const tty = process.stderr.isTTY;
  let last = -1;
  return (done, total) => {
    const pct = Math.floor((done / total) * 100);
    if (pct === last) return;
    last = pct;
    if (tty) process.stderr.write(`\r  ${label.padEnd(40)} ${String(pct).padStart(3)}%${pct >= 100 ? "\n" : ""}`);
    else if (pct % 25 === 0) process.stderr.write(`  ${label} ${pct}%\n`);
  };
}

/** Run `op` from `window` loops for `ms`; latencies in ms and the rate per second. */
async function load(
  window: number,
  ms: number,
  op: (i: number) => Promise<void>,
  label: string,
  display: (label: string) => (done: number, total: number) => void = progress,
): Promise<{ rate: number; latency: Latency; samples: number[] }> {
  const samples: number[] = [];
  const end = performance.now() + ms;
  const show = display(label);
  const started = performance.now();
  const tick = setInterval(() => show(Math.min(ms, performance.now() - started), ms), 200);
  await Promise.all(
    Array.from({ length: window }, async (_, i) => {
      while (performance.now() < end) {
        const t = performance.now();
        await op(i);
        samples.push(performance.now() - t);
      }
    }),
  );
  clearInterval(tick);
  show(ms, ms);
  return { rate: samples.length / ((performance.now() - started) / 1000), latency: stats(samples), samples };
}

interface Proc {
  child: ChildProcess;
  name: string;
}

class Fleet {
  procs: Proc[] = [];
  private started = 0;
  /** `logDir`: keep each process's log (info level) in `<logDir>/<n>-<name>.log`. */
  constructor(
    private readonly env: Record<string, string>,
    private readonly logDir?: string,
  ) {}
  start(name: string, args: string[], env: Record<string, string> = {}): Proc {
    const out = this.logDir ? openSync(join(this.logDir, `${++this.started}-${name}.log`), "a") : "ignore";
    const logEnv = this.logDir ? { TANDEM_LOG_LEVEL: "info" } : {};
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...this.env, ...logEnv, ...env }, stdio: ["ignore", out, out] });
    if (typeof out === "number") closeSync(out);
    const p = { child, name };
    this.procs.push(p);
    return p;
  }
  kill(p: Proc, signal: NodeJS.Signals = "SIGKILL"): void {
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill(signal);
  }
  stopAll(): void {
    for (const p of this.procs) this.kill(p);
  }
}

/** CPU time (user + system) a process has used, in µs; this process's own without a pid. */
function cpuUs(pid?: number): number {
  if (pid === undefined) {
    const u = process.cpuUsage();
    return u.user + u.system;
  }
  try {
    // Fields 14 and 15 of /proc/<pid>/stat, after the command name's closing parenthesis.
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(")").pop()!.trim().split(" ");
    return ((Number(f[11]) + Number(f[12])) / 100) * 1e6; // clock ticks at USER_HZ = 100
  } catch {
    return NaN;
  }
}

function rssMb(pid: number | undefined): number | null {
  if (!pid) return null;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Math.round(Number(m[1]) / 1024) : null;
  } catch {
    return null;
  }
}

async function status(rt: Runtime): Promise<ManagerStatus | null> {
  try {
    const r = await rt.nc.request(rt.names.mgr("status"), encode({}), { timeout: 500 });
    return unwrap<ManagerStatus>(r.data);
  } catch {
    return null;
  }
}

async function until(cond: () => Promise<boolean> | boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error("bench: timed out waiting for the deployment");
    await sleep(25);
  }
}

/** The raw baseline's responder, in a process of its own; says "ready" and answers until killed. */
async function echoResponder(url: string): Promise<never> {
  const nc = await connect({ servers: url, noAsyncTraces: true });
  nc.subscribe("bench.echo", { callback: (_e, m) => void m.respond(m.data) });
  await nc.flush();
  process.stdout.write("ready\n");
  return new Promise<never>(() => {});
}

/** One "stats:" line of `nats bench`: messages per second and the p50 in ms. */
function natsBenchStats(out: string): { ratePerS: number; p50Ms: number | null } | null {
  const line = out.split("\n").find((l) => /stats: [\d,]+ msgs\/sec/.test(l));
  if (!line) return null;
  const rate = Number(/stats: ([\d,]+) msgs\/sec/.exec(line)![1]!.replace(/,/g, ""));
  const p50 = /P50: ([\d,.]+)us/.exec(line);
  return { ratePerS: rate, p50Ms: p50 ? Number(p50[1]!.replace(/,/g, "")) / 1000 : null };
}

/**
 * Figures from the real `nats bench` (natscli, Go) on the same server, as context for the
 * nats.js figures: a service request/reply one at a time, and async JetStream publishes.
 */
async function natsBench(url: string): Promise<Record<string, unknown>> {
  const bin = natsCliBin();
  const common = ["--server", url, "--no-progress"];
  const serve = spawn(bin, ["bench", "service", "serve", "bench.nb.svc", ...common], { stdio: "ignore" });
  try {
    await sleep(500);
    const req = spawnSync(bin, ["bench", "service", "request", "bench.nb.svc", "--msgs", "20000", ...common], { encoding: "utf8", timeout: 60_000 });
    const pub = spawnSync(bin, ["bench", "js", "pub", "async", "bench.nb.js", "--msgs", "200000", "--create", "--purge", "--stream", "BENCH_NB", ...common], { encoding: "utf8", timeout: 60_000 });
    return {
      tool: spawnSync(bin, ["--version"], { encoding: "utf8" }).stdout.trim() || bin,
      serviceRequestReply: natsBenchStats(`${req.stdout}${req.stderr}`),
      jsPublishAsync: natsBenchStats(`${pub.stdout}${pub.stderr}`),
    };
  } catch (err) {
    return { error: (err as Error).message };
  } finally {
    serve.kill("SIGKILL");
    spawnSync(bin, ["stream", "rm", "BENCH_NB", "-f", "--server", url], { stdio: "ignore" });
  }
}

/** Streams of the raw JetStream work-queue round trip (the like-for-like baseline). */
const WQ = { req: "BENCH_WQ_REQ", resp: "BENCH_WQ_RESP", worker: "worker" } as const;

async function provisionWorkQueue(rt: Runtime): Promise<void> {
  for (const name of [WQ.req, WQ.resp]) await rt.jsm.streams.delete(name).catch(() => {});
  await rt.jsm.streams.add({ name: WQ.req, subjects: ["bench.wq.req.>"], retention: RetentionPolicy.Workqueue, storage: StorageType.File });
  await rt.jsm.streams.add({ name: WQ.resp, subjects: ["bench.wq.resp.>"], storage: StorageType.File });
  await rt.jsm.consumers.add(WQ.req, { durable_name: WQ.worker, ack_policy: AckPolicy.Explicit, max_ack_pending: 10_000 });
}

/**
 * The raw work-queue worker, in a process of its own: consumes the request stream, acks, and
 * publishes each result, acknowledged, into the response stream. The plain nats.js API, as a
 * user would write it.
 */
async function wqWorker(url: string): Promise<never> {
  const nc = await connect({ servers: url, noAsyncTraces: true });
  const js = jetstream(nc);
  const c = await js.consumers.get(WQ.req, WQ.worker);
  await c.consume({
    max_messages: 512,
    callback: (m) => {
      m.ack();
      js.publish(`bench.wq.resp.${m.subject.slice("bench.wq.req.".length)}`, m.data).catch(() => {});
    },
  });
  process.stdout.write("ready\n");
  return new Promise<never>(() => {});
}

/**
 * The caller's side of the raw work-queue round trip: publish (acknowledged) into the request
 * stream, and take the result from the response stream with a consumer: two stored messages
 * and two deliveries, the same physical work as a Tandem round trip.
 */
async function wqCaller(nc: NatsConnection): Promise<(payload: Uint8Array) => Promise<void>> {
  const js = jetstream(nc);
  const waiting = new Map<string, () => void>();
  const oc = await js.consumers.get(WQ.resp, { filter_subjects: "bench.wq.resp.>", deliver_policy: DeliverPolicy.New });
  const skip = "bench.wq.resp.".length;
  await oc.consume({
    callback: (m) => {
      const id = m.subject.slice(skip);
      const done = waiting.get(id);
      waiting.delete(id);
      done?.();
    },
  });
  let seq = 0;
  return (payload) => {
    const id = (++seq).toString(36);
    const answered = new Promise<void>((r) => waiting.set(id, r));
    return Promise.all([js.publish(`bench.wq.req.${id}`, payload), answered]).then(() => {});
  };
}

/**
 * The raw baseline's client for the paired rounds, in a fresh process of its own: the bench's
 * process has by then run Tandem's client through heavy load (a bigger heap, more GC), which
 * slowed raw publishes from it by a third. Reads "rr MS" or "async MS" lines, answers each with
 * a JSON line {p50, rate}.
 */
async function rawRunner(url: string): Promise<never> {
  const nc = await connect({ servers: url, noAsyncTraces: true });
  const js = jetstream(nc);
  const payload = new Uint8Array(128);
  const quiet = () => () => {};
  const wq = await wqCaller(nc);
  // Warm up as Tandem's processes were before they are measured.
  await load(1, 1000, async () => void (await nc.request("bench.echo", payload)), "", quiet);
  await load(256, 1000, async () => void (await js.publish("bench.js.b", payload)), "", quiet);
  await load(128, 2000, () => wq(payload), "", quiet);
  process.stdout.write("ready\n");
  for await (const line of createInterface({ input: process.stdin })) {
    const [what, ms] = line.trim().split(" ");
    const r =
      what === "rr"
        ? await load(1, Number(ms), async () => void (await nc.request("bench.echo", payload)), "", quiet)
        : what === "wq1"
          ? await load(1, Number(ms), () => wq(payload), "", quiet)
          : what === "wq128"
            ? await load(128, Number(ms), () => wq(payload), "", quiet)
            : await load(256, Number(ms), async () => void (await js.publish("bench.js.b", payload)), "", quiet);
    process.stdout.write(JSON.stringify({ p50: r.latency.p50, rate: r.rate, count: r.samples.length }) + "\n");
  }
  process.exit(0);
}

export async function main(argv = process.argv.slice(2)): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean" },
      part: { type: "string" },
      out: { type: "string" },
      report: { type: "string" },
      logs: { type: "string" },
      echo: { type: "string" },
      raw: { type: "string" },
      "wq-worker": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.echo) return echoResponder(values.echo);
  if (values["wq-worker"]) return wqWorker(values["wq-worker"]);
  if (values.raw) return rawRunner(values.raw);
  if (values.report) {
    // Print the tables of an earlier run's result file again (no measuring).
    process.stdout.write(markdown(JSON.parse(readFileSync(values.report, "utf8")) as Record<string, unknown>));
    return;
  }
  if (values.help) {
    process.stdout.write("Usage: npm run bench -- [--quick] [--part raw,brokered,pool,path,scale,failover,restart,hedging] [--out DIR] [--logs DIR] | --report FILE.json\n");
    return;
  }
  const quick = values.quick === true;
  const parts = new Set((values.part ?? "raw,brokered,pool,sync,path,scale,failover,restart,hedging").split(","));
  const outDir = values.out ?? "bench-results";
  const D = quick ? 2500 : 8000; // ms per measurement
  mkdirSync(outDir, { recursive: true });
  const ns = await NatsServer.start();
  // The scale part opens 10,000 sessions from one client: above the default per-client limit.
  const env = { NATS_URL: ns.url, TANDEM_LOG_LEVEL: "warn", TANDEM_LOG_JSON: "1", TANDEM_MAX_SESSIONS_PER_CLIENT: "20000" };
  const log = createLogger({ level: "warn" });
  const rt = await startRuntime(resolveConfig({ natsUrls: [ns.url] }), { logger: log, name: "bench" });
  if (values.logs) mkdirSync(values.logs, { recursive: true });
  const fleet = new Fleet(env, values.logs);
  const result: Record<string, unknown> = {
    machine: { cpus: cpus().length, model: cpus()[0]?.model ?? "?", memGiB: Math.round(totalmem() / 2 ** 30), node: process.version },
    at: new Date().toISOString(),
    quick,
  };
  const ratios: Record<string, number> = {};
  const cdf: Record<string, number[]> = {};
  // The raw baseline stays up through the brokered part, for the paired rounds (see there).
  type RawWhat = "rr" | "async" | "wq1" | "wq128";
  let rawKit: { run: (what: RawWhat, ms: number) => Promise<{ p50: number; rate: number; count: number }>; pids: number[]; close: () => Promise<void> } | null = null;
  try {
    // ---- raw NATS: the physical limits ----------------------------------------------
    if (parts.has("raw") || parts.has("brokered") || parts.has("pool")) {
      process.stderr.write("raw NATS\n");
      // The same client settings as Tandem's own connections, so the ratios compare like with like.
      const a = await connect({ servers: ns.url, noAsyncTraces: true });
      const b = await connect({ servers: ns.url, noAsyncTraces: true });
      b.subscribe("bench.echo.here", { callback: (_e, m) => void m.respond(m.data) });
      await b.flush();
      // The baseline's responder runs in a process of its own, as every Tandem hop does (client,
      // manager, server are processes). The same-process figure is measured too and reported.
      const echo = spawn(process.execPath, [fileURLToPath(import.meta.url), "--echo", ns.url], { stdio: ["ignore", "pipe", "inherit"] });
      await new Promise<void>((r, j) => {
        echo.stdout!.once("data", () => r());
        echo.once("exit", () => j(new Error("bench: the echo responder exited")));
      });
      const payload = new Uint8Array(128);
      const coreSame = await load(1, D, async () => void (await a.request("bench.echo.here", payload)), "core request-reply, same process");
      const coreSeq = await load(1, D, async () => void (await a.request("bench.echo", payload)), "core request-reply, sequential");
      const coreWin = await load(100, D, async () => void (await a.request("bench.echo", payload, { timeout: 5000 })), "core request-reply, 100 in flight");
      await rt.jsm.streams.add({ name: "BENCH", subjects: ["bench.js.>"] });
      const js = jetstream(a);
      const jsSync = await load(1, D, async () => void (await js.publish("bench.js.a", payload)), "JetStream publish, sync");
      const cpu0 = { client: cpuUs(), natsServer: cpuUs(ns.pid) };
      const jsAsync = await load(256, D, async () => void (await js.publish("bench.js.b", payload)), "JetStream publish, async (256 in flight)");
      const jsAsyncCpu = { client: Math.round((cpuUs() - cpu0.client) / jsAsync.samples.length), natsServer: Math.round((cpuUs(ns.pid) - cpu0.natsServer) / jsAsync.samples.length) };
      const kvPut = await load(1, D, async () => void (await rt.kv.fence.put("bench", payload)), "KV put");
      await rt.jsm.streams.purge("BENCH");
      // The like-for-like baseline: a JetStream work-queue round trip, its worker in its own process.
      await provisionWorkQueue(rt);
      const worker = spawn(process.execPath, [fileURLToPath(import.meta.url), "--wq-worker", ns.url], { stdio: ["ignore", "pipe", "inherit"] });
      await new Promise<void>((r, j) => {
        worker.stdout!.once("data", () => r());
        worker.once("exit", () => j(new Error("bench: the work-queue worker exited")));
      });
      const runner = spawn(process.execPath, [fileURLToPath(import.meta.url), "--raw", ns.url], { stdio: ["pipe", "pipe", "inherit"] });
      const answers = createInterface({ input: runner.stdout! })[Symbol.asyncIterator]();
      if ((await answers.next()).value !== "ready") throw new Error("bench: the raw runner did not start");
      rawKit = {
        run: async (what: RawWhat, ms: number) => {
          runner.stdin!.write(`${what} ${ms}\n`);
          const { value } = await answers.next();
          if (what.startsWith("wq")) await rt.jsm.streams.purge(WQ.resp);
          return JSON.parse(String(value)) as { p50: number; rate: number; count: number };
        },
        pids: [runner.pid!, worker.pid!],
        close: async () => {
          runner.kill("SIGKILL");
          echo.kill("SIGKILL");
          worker.kill("SIGKILL");
          await rt.jsm.streams.delete("BENCH").catch(() => {});
          for (const name of [WQ.req, WQ.resp]) await rt.jsm.streams.delete(name).catch(() => {});
          await a.close();
          await b.close();
        },
      };
      // CPU per round trip of the raw side: caller, worker and nats-server.
      const rawCpu = (pids: number[]) => pids.reduce<number>((t, pid) => t + cpuUs(pid), 0);
      const wqPids = [runner.pid!, worker.pid!, ns.pid!];
      const wq1 = await rawKit.run("wq1", D);
      const c0 = rawCpu(wqPids);
      const wq128 = await rawKit.run("wq128", D);
      const wqCpu = Math.round((rawCpu(wqPids) - c0) / wq128.count);
      process.stderr.write(`  raw JetStream work-queue round trip: 1 in flight p50 ${wq1.p50.toFixed(3)} ms, ${Math.round(wq1.rate)}/s; 128 in flight ${Math.round(wq128.rate)}/s, ${wqCpu} µs CPU each\n`);
      ratios.rawWq1P50 = wq1.p50;
      ratios.rawWq128 = wq128.rate;
      ratios.rawWqCpuUs = wqCpu;
      result.raw = {
        coreRequestReply: {
          sequential: { ratePerS: coreSeq.rate, latencyMs: coreSeq.latency },
          sameProcess: { ratePerS: coreSame.rate, latencyMs: coreSame.latency },
          window100: { ratePerS: coreWin.rate },
        },
        jetstreamPublish: { sync: { ratePerS: jsSync.rate, latencyMs: jsSync.latency }, async256: { ratePerS: jsAsync.rate, cpuUsPerMsg: jsAsyncCpu } },
        kvPut: { ratePerS: kvPut.rate, latencyMs: kvPut.latency },
        jetstreamWorkQueueRoundTrip: {
          window1: { ratePerS: wq1.rate, p50Ms: wq1.p50 },
          window128: { ratePerS: wq128.rate, p50Ms: wq128.p50, cpuUsPerRoundTrip: wqCpu },
        },
        natsBench: await natsBench(ns.url),
      };
      cdf["raw core request-reply"] = coreSeq.samples;
      ratios.rawCoreP50 = coreSeq.latency.p50;
      ratios.rawCoreSameP50 = coreSame.latency.p50;
      ratios.rawJsAsync = jsAsync.rate;
    }

    // ---- brokered round trips ---------------------------------------------------------
    const deploy = async (servers: number, managers = 1, env: Record<string, string> = {}) => {
      const ms: Proc[] = [];
      for (let i = 0; i < managers; i++) {
        const node = `bench-m${Date.now() % 100000}-${i}`;
        const p = fleet.start(`manager-${i}`, ["manager", "--node", node], env);
        nodeNames.set(p, node);
        ms.push(p);
        if (i === 0) await until(async () => (await status(rt)) !== null);
      }
      const ss: Proc[] = [];
      for (let i = 0; i < servers; i++) ss.push(fleet.start(`server-${i}`, ["server", "--service", "bench", "--work", "echo", "--capacity", "256"], env));
      await until(async () => {
        const st = await status(rt);
        return !!st && st.servers.filter((x) => x.alive).length >= servers && st.standbys.length >= managers - 1;
      });
      return { managers: ms, servers: ss };
    };
    const undeploy = async (d: { managers: Proc[]; servers: Proc[] }) => {
      for (const p of [...d.servers, ...d.managers]) fleet.kill(p);
      await sleep(300);
    };
    const client = await TandemClient.connect(rt);
    const openSessions = async (k: number, maxPending = 1000): Promise<ClientSession[]> => {
      const out: ClientSession[] = [];
      const show = progress(`opening ${k} sessions`);
      for (let i = 0; i < k; i += 64) {
        const batch = await Promise.all(Array.from({ length: Math.min(64, k - i) }, () => client.open("bench", { maxPending })));
        out.push(...batch);
        show(out.length, k);
      }
      return out;
    };
    if (parts.has("brokered")) {
      process.stderr.write("brokered round trips\n");
      const d = await deploy(1);
      const rows: Record<string, unknown> = {};
      // Freshly started processes run unoptimised code for their first thousands of messages:
      // warm the manager and server up (as the raw baseline's tiny path warms up in its first
      // milliseconds) before anything is measured.
      {
        const warm = await openSessions(16);
        await load(16, 3000, async (i) => void (await warm[i]!.request({ x: "y".repeat(100) })), "warm-up");
        for (const s of warm) await s.close();
      }
      const procs = { manager: d.managers[0]!.child.pid, server: d.servers[0]!.child.pid, natsServer: ns.pid, client: undefined };
      for (const c of [1, 16, 128]) {
        const sessions = await openSessions(c);
        const payload = { x: "y".repeat(100) };
        const before = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, cpuUs(pid)]));
        const r = await load(c, D, async (i) => void (await sessions[i]!.request(payload)), `brokered, ${c} session(s)`);
        // Where the CPU goes per round trip: on 2 cores the processes share, this bounds the rate.
        const cpuUsPerRoundTrip = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, Math.round((cpuUs(pid) - before[k]!) / r.samples.length)]));
        rows[`c${c}`] = { sessions: c, ratePerS: r.rate, latencyMs: r.latency, cpuUsPerRoundTrip };
        if (c === 1) {
          cdf["tandem brokered"] = r.samples;
          ratios.brokeredP50 = r.latency.p50;
        }
        ratios[`brokeredRate${c}`] = r.rate;
        for (const s of sessions) await s.close();
      }
      result.brokered = rows;
      // One session with a window (issue 17): w of its requests at the server at once, the
      // responses in order. The rate against the same session's window-1 rate.
      {
        const payload = { x: "y".repeat(100) };
        const byWindow: Array<{ window: number; ratePerS: number; latencyMs: Latency; workPerRoundTrip: number; deliveriesPerRoundTrip: number; requestRecordsPerRoundTrip: number; responseRecordsPerRoundTrip: number; cpuUsPerRoundTrip: Record<string, number> }> = [];
        for (const w of [1, 4, 16, 32, 64]) {
          const s = await client.open("bench", { window: w, maxPending: 1000 });
          // Messages on the session's work and deliver subjects per round trip: what batching
          // saves (one message carries several dispatches or deliveries of the session).
          let work = 0;
          let deliveries = 0;
          // And the records its requests and responses take in the queues (a batch record is one;
          // the session's receipts are not counted).
          let requestRecords = 0;
          let responseRecords = 0;
          // Without decoding (this process's CPU is the client's figure): a request or response
          // body starts {"n": and a batch {"batch":, a receipt {"taken":.
          const isRecord = (data: Uint8Array) => data[2] === 0x6e || data[2] === 0x62;
          const subs = [
            rt.nc.subscribe(rt.names.work("*", s.id), { callback: () => void work++ }),
            rt.nc.subscribe(rt.names.deliver(client.id, s.id), { callback: () => void deliveries++ }),
            rt.nc.subscribe(rt.names.req(client.id, s.id), { callback: (_e, m) => void (isRecord(m.data) && requestRecords++) }),
            rt.nc.subscribe(rt.names.resp("*", s.id), { callback: (_e, m) => void (isRecord(m.data) && responseRecords++) }),
          ];
          // Which process a window's rate is bound by: its CPU per round trip, as for the sessions above.
          const before = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, cpuUs(pid)]));
          const r = await load(w, D, async () => void (await s.request(payload)), `one session, window ${w}`);
          for (const sub of subs) sub.unsubscribe();
          const trips = r.samples.length;
          const cpuUsPerRoundTrip = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, Math.round((cpuUs(pid) - before[k]!) / trips)]));
          byWindow.push({ window: w, ratePerS: r.rate, latencyMs: r.latency, workPerRoundTrip: work / trips, deliveriesPerRoundTrip: deliveries / trips, requestRecordsPerRoundTrip: requestRecords / trips, responseRecordsPerRoundTrip: responseRecords / trips, cpuUsPerRoundTrip });
          await s.close();
        }
        const w1 = byWindow[0]!.ratePerS;
        result.windows = { byWindow, window32VsWindow1: byWindow.find((x) => x.window === 32)!.ratePerS / w1 };
      }
      // Paired rounds for the two ratios of docs/design.md §7: this host's speed drifts over a run
      // (a raw figure taken minutes before the brokered one moved by up to a factor of two), so
      // each round measures raw and brokered back to back and the targets use the median ratio.
      if (rawKit) {
        const kit = rawKit;
        const payload = { x: "y".repeat(100) };
        const rounds = quick ? 3 : 5;
        const T = quick ? 1000 : 2000;
        const one = await openSessions(1);
        const many = await openSessions(128);
        const paired: PairedRound[] = [];
        const tandemPids = [d.managers[0]!.child.pid!, d.servers[0]!.child.pid!, ns.pid!];
        const rawPids = [...kit.pids, ns.pid!];
        const cpuOf = (pids: number[], self: boolean) => pids.reduce<number>((t, pid) => t + cpuUs(pid), self ? cpuUs() : 0);
        for (let i = 0; i < rounds; i++) {
          process.stderr.write(`  paired round ${i + 1}/${rounds}\n`);
          const rr = await kit.run("rr", T);
          const wq1 = await kit.run("wq1", T);
          const b1 = await load(1, T, async () => void (await one[0]!.request(payload)), `paired round ${i + 1}/${rounds}: brokered, 1 session`);
          const idle0 = cpuUs(d.managers[0]!.child.pid) + cpuUs(d.servers[0]!.child.pid);
          const ra = await kit.run("async", T);
          const idle1 = cpuUs(d.managers[0]!.child.pid) + cpuUs(d.servers[0]!.child.pid);
          await rt.jsm.streams.purge("BENCH");
          const r0 = cpuOf(rawPids, false);
          const wq128 = await kit.run("wq128", T);
          const rawCpuUs = (cpuOf(rawPids, false) - r0) / wq128.count;
          const t0 = cpuOf(tandemPids, true);
          const b128 = await load(128, T, async (k) => void (await many[k]!.request(payload)), `paired round ${i + 1}/${rounds}: brokered, 128 sessions`);
          const tandemCpuUs = (cpuOf(tandemPids, true) - t0) / b128.samples.length;
          paired.push({
            rawWqP50Ms: wq1.p50,
            rawCoreP50Ms: rr.p50,
            brokeredP50Ms: b1.latency.p50,
            p50Ratio: b1.latency.p50 / wq1.p50,
            p50RatioCore: b1.latency.p50 / rr.p50,
            rawWqRate: wq128.rate,
            rawAsyncRate: ra.rate,
            brokeredRate: b128.rate,
            rateRatio: b128.rate / wq128.rate,
            rateRatioAsync: b128.rate / ra.rate,
            rawCpuUs: Math.round(rawCpuUs),
            tandemCpuUs: Math.round(tandemCpuUs),
            cpuRatio: tandemCpuUs / rawCpuUs,
            // What the idle Tandem processes took while raw publishes ran (a share of one core).
            idleTandemCpuPct: Math.round(((idle1 - idle0) / (T * 1000)) * 100),
          });
        }
        for (const s of [...one, ...many]) await s.close();
        const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
        const span = (xs: number[]) => ({ median: med(xs), min: Math.min(...xs), max: Math.max(...xs) });
        result.paired = {
          rounds: paired,
          msPerMeasurement: T,
          p50Ratio: span(paired.map((p) => p.p50Ratio)),
          rateRatio: span(paired.map((p) => p.rateRatio)),
          cpuRatio: span(paired.map((p) => p.cpuRatio)),
          p50RatioCore: span(paired.map((p) => p.p50RatioCore)),
          rateRatioAsync: span(paired.map((p) => p.rateRatioAsync)),
        };
      }
      await undeploy(d);
    }

    // ---- an unordered pool (issue 17): one session, 128 in flight, spread over 4 servers ------
    // Paired with the raw work-queue round trip at 128 in flight, as the brokered ratios are.
    if (parts.has("pool")) {
      process.stderr.write("an unordered pool on 4 servers\n");
      const d = await deploy(4);
      const payload = { x: "y".repeat(100) };
      const rounds = quick ? 3 : 5;
      const T = quick ? 1000 : 2000;
      // Messages per round trip, counted in the warm-up (the counting costs this process CPU, so
      // not in the measured rounds): what batching saves in a pool, as in the window table.
      let pooledMessages: Record<string, number> = {};
      {
        const warm = await client.open("bench", { ordered: false, window: 128 });
        const count = { work: 0, deliveries: 0, requestRecords: 0, responseRecords: 0 };
        const isRecord = (data: Uint8Array) => data[2] === 0x6e || data[2] === 0x62;
        const subs = [
          rt.nc.subscribe(rt.names.work("*", warm.id), { callback: () => void count.work++ }),
          rt.nc.subscribe(rt.names.deliver(client.id, warm.id), { callback: () => void count.deliveries++ }),
          rt.nc.subscribe(rt.names.req(client.id, warm.id), { callback: (_e, m) => void (isRecord(m.data) && count.requestRecords++) }),
          rt.nc.subscribe(rt.names.resp("*", warm.id), { callback: (_e, m) => void (isRecord(m.data) && count.responseRecords++) }),
        ];
        const r = await load(128, 2000, async () => void (await warm.request(payload)), "pool warm-up");
        for (const sub of subs) sub.unsubscribe();
        pooledMessages = Object.fromEntries(Object.entries(count).map(([k, v]) => [`${k}PerRoundTrip`, v / r.samples.length]));
        await warm.close();
      }
      const pool = await client.open("bench", { ordered: false, window: 128 });
      const byServer = new Map<string, number>();
      const pids = [...d.managers, ...d.servers].map((p) => p.child.pid!).concat(ns.pid!);
      const cpuOf = (ps: number[]) => ps.reduce<number>((t, pid) => t + cpuUs(pid), cpuUs());
      const poolRounds: Array<{ rawWqRate: number; poolRate: number; rateRatio: number; poolCpuUs: number; rawCpuUs: number; cpuRatio: number; cpuUsPerRoundTrip: Record<string, number> }> = [];
      // Which process the pool's rate is bound by, as for the sessions above (the servers summed).
      const procs = { manager: d.managers.map((p) => p.child.pid!), servers: d.servers.map((p) => p.child.pid!), natsServer: [ns.pid!] };
      const cpuBy = () => Object.fromEntries(Object.entries(procs).map(([k, ps]) => [k, ps.reduce<number>((t, pid) => t + cpuUs(pid), 0)]).concat([["client", cpuUs()]]));
      for (let i = 0; i < rounds; i++) {
        process.stderr.write(`  pool round ${i + 1}/${rounds}\n`);
        let raw = { rate: 0, count: 1 };
        let rawCpu = 0;
        if (rawKit) {
          await rt.jsm.streams.purge("BENCH");
          const r0 = rawKit.pids.concat(ns.pid!).reduce<number>((t, pid) => t + cpuUs(pid), 0);
          raw = await rawKit.run("wq128", T);
          rawCpu = (rawKit.pids.concat(ns.pid!).reduce<number>((t, pid) => t + cpuUs(pid), 0) - r0) / raw.count;
        }
        const c0 = cpuOf(pids);
        const by0 = cpuBy();
        const r = await load(128, T, async () => {
          const resp = await pool.send(payload).then((x) => x.response);
          byServer.set(resp.server, (byServer.get(resp.server) ?? 0) + 1);
        }, `pool round ${i + 1}/${rounds}: 128 in flight`);
        const poolCpu = (cpuOf(pids) - c0) / r.samples.length;
        const by1 = cpuBy();
        const cpuUsPerRoundTrip = Object.fromEntries(Object.keys(by1).map((k) => [k, Math.round((by1[k]! - by0[k]!) / r.samples.length)]));
        poolRounds.push({ rawWqRate: raw.rate, poolRate: r.rate, rateRatio: raw.rate ? r.rate / raw.rate : 0, poolCpuUs: Math.round(poolCpu), rawCpuUs: Math.round(rawCpu), cpuRatio: rawCpu ? poolCpu / rawCpu : 0, cpuUsPerRoundTrip });
      }
      await pool.close();
      const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
      result.pool = {
        servers: 4,
        inFlight: 128,
        rounds: poolRounds,
        rateRatio: med(poolRounds.map((x) => x.rateRatio)),
        cpuRatio: med(poolRounds.map((x) => x.cpuRatio)),
        ratePerS: med(poolRounds.map((x) => x.poolRate)),
        // How evenly the pool spread: responses per server over all rounds.
        byServer: Object.fromEntries([...byServer].sort()),
        messagesInWarmUp: pooledMessages,
      };
      await undeploy(d);
    }

    // ---- durability: fsync per write (tandem nats --sync always) against the default ------
    if (parts.has("sync")) {
      process.stderr.write("durability: nats-server sync_interval always vs the default (2 min)\n");
      const rows: Array<{ sync: string; round: number; ratePerS: number; p50Ms: number; p99Ms: number }> = [];
      const servers = { default: await NatsServer.start(), always: await NatsServer.start({ config: serverConfig({ sync: "always" }) }) };
      try {
        const kits: Record<string, { rt: Runtime; sessions: ClientSession[]; procs: Proc[] }> = {};
        for (const [mode, srv] of Object.entries(servers)) {
          const env2 = { NATS_URL: srv.url };
          const rt2 = await startRuntime(resolveConfig({ natsUrls: [srv.url] }), { logger: log, name: `bench-sync-${mode}` });
          const procs = [fleet.start(`sync-${mode}-manager`, ["manager"], env2), fleet.start(`sync-${mode}-server`, ["server", "--service", "bench", "--work", "echo", "--capacity", "256"], env2)];
          await until(async () => (await status(rt2))?.servers.some((x) => x.alive) === true);
          const c2 = await TandemClient.connect(rt2);
          const sessions = await Promise.all(Array.from({ length: 128 }, () => c2.open("bench")));
          await load(128, 2000, async (i) => void (await sessions[i]!.request({ x: "y".repeat(100) })), `warm-up (${mode})`);
          kits[mode] = { rt: rt2, sessions, procs };
        }
        const rounds = quick ? 2 : 3;
        for (let round = 1; round <= rounds; round++) {
          for (const mode of Object.keys(servers)) {
            const k = kits[mode]!;
            const r = await load(128, quick ? 1500 : 3000, async (i) => void (await k.sessions[i]!.request({ x: "y".repeat(100) })), `${mode} fsync, round ${round}/${rounds}, 128 sessions`);
            rows.push({ sync: mode, round, ratePerS: r.rate, p50Ms: r.latency.p50, p99Ms: r.latency.p99 });
          }
        }
        for (const k of Object.values(kits)) {
          for (const p of k.procs) fleet.kill(p);
          await k.rt.close();
        }
      } finally {
        await servers.default.cleanup();
        await servers.always.cleanup();
      }
      const med = (mode: string) => {
        const xs = rows.filter((r) => r.sync === mode).map((r) => r.ratePerS).sort((a, b) => a - b);
        return xs[Math.floor(xs.length / 2)]!;
      };
      result.sync = { rows, medianRatePerS: { default: med("default"), always: med("always") }, alwaysVsDefault: med("always") / med("default") };
    }

    // ---- path: where one round trip's time goes, hop by hop ------------------------------
    if (parts.has("path")) {
      process.stderr.write("round-trip path\n");
      const dir = mkdtempSync(join(tmpdir(), "tandem-trace-"));
      const d = await deploy(1, 1, { TANDEM_TRACE: dir });
      const [s] = await openSessions(1);
      const payload = { x: "y".repeat(100) };
      await load(1, Math.min(D, 3000), async () => void (await s!.request(payload)), "warm-up");
      setTraceDir(dir);
      await load(1, D, async () => void (await s!.request(payload)), "round trips with timestamps");
      setTraceDir(null);
      await sleep(1200); // the manager and server write theirs every 500 ms
      result.path = pathBreakdown(dir);
      rmSync(dir, { recursive: true, force: true });
      await s!.close();
      await undeploy(d);
    }

    // ---- scale: sessions and servers --------------------------------------------------
    if (parts.has("scale")) {
      process.stderr.write("scale\n");
      const bySessions: unknown[] = [];
      for (const k of quick ? [1, 100, 1000] : [1, 100, 1000, 10_000]) {
        const d = await deploy(1);
        const sessions = await openSessions(k);
        const window = Math.min(k, 128);
        let next = 0;
        // 128 loops share the k sessions; a session busy with another loop's request is skipped.
        const busy = new Set<number>();
        const r = await load(window, D, async () => {
          let i = next++ % k;
          while (busy.has(i)) i = next++ % k;
          busy.add(i);
          try {
            await sessions[i]!.request({ k });
          } finally {
            busy.delete(i);
          }
        }, `${k} open sessions (128 in flight)`);
        bySessions.push({ sessions: k, ratePerS: r.rate, p50Ms: r.latency.p50, p99Ms: r.latency.p99, managerRssMb: rssMb(d.managers[0]!.child.pid) });
        for (const s of sessions) await s.close().catch(() => {});
        await undeploy(d);
      }
      const byServers: unknown[] = [];
      for (const n of [1, 2, 4]) {
        const d = await deploy(n);
        const sessions = await openSessions(128);
        const r = await load(128, D, async (i) => void (await sessions[i]!.request({ n })), `${n} server(s), 128 sessions`);
        byServers.push({ servers: n, ratePerS: r.rate, p50Ms: r.latency.p50, p99Ms: r.latency.p99 });
        for (const s of sessions) await s.close();
        await undeploy(d);
      }
      result.scale = { bySessions, byServers };
    }

    // ---- failover: repeated SIGKILL of the primary under load ------------------------
    if (parts.has("failover")) {
      process.stderr.write("failover\n");
      const d = await deploy(1, 2);
      const sessions = await openSessions(16);
      const kills = quick ? 3 : 8;
      const timings: Array<{ kill: number; allServingMs: number; firstMs: number }> = [];
      const lastServed = new Map<number, number>();
      let stop = false;
      const loops = sessions.map(async (s, i) => {
        while (!stop) {
          await s.request(i);
          lastServed.set(i, performance.now());
        }
      });
      for (let k = 0; k < kills; k++) {
        await sleep(800);
        const st = await status(rt);
        const victim = d.managers.find((m) => nodeNames.get(m) === st?.node) ?? d.managers.find((m) => m.child.exitCode === null)!;
        const t0 = performance.now();
        fleet.kill(victim);
        await until(() => sessions.every((_, i) => (lastServed.get(i) ?? 0) > t0), 30_000);
        const after = sessions.map((_, i) => lastServed.get(i)! - t0);
        timings.push({ kill: k + 1, allServingMs: Math.max(...after), firstMs: Math.min(...after) });
        process.stderr.write(`  kill ${k + 1}: every session serving again after ${Math.round(Math.max(...after))} ms\n`);
        // The killed node comes back as a standby.
        const idx = d.managers.indexOf(victim);
        d.managers[idx] = fleet.start(victim.name, ["manager", "--node", `bench-r${k}-${idx}`]);
        nodeNames.set(d.managers[idx]!, `bench-r${k}-${idx}`);
        await until(async () => ((await status(rt))?.standbys.length ?? 0) >= 1, 30_000);
      }
      stop = true;
      await Promise.all(loops);
      const all = timings.map((t) => t.allServingMs).sort((a, b) => a - b);
      result.failover = { kills: timings, medianMs: all[Math.floor(all.length / 2)], maxMs: all[all.length - 1] };
      for (const s of sessions) await s.close();
      await undeploy(d);
    }

    // ---- restart cost: takeover time vs pending requests ------------------------------
    if (parts.has("restart")) {
      process.stderr.write("restart cost\n");
      const rows: unknown[] = [];
      for (const pending of quick ? [1000, 10_000] : [1000, 10_000, 100_000]) {
        const d = await deploy(1, 2);
        fleet.kill(d.servers[0]!, "SIGSTOP"); // requests queue up, unanswered
        const sessions = await openSessions(100, 2000);
        const per = Math.ceil(pending / sessions.length);
        const show = progress(`queueing ${pending} requests`);
        let queued = 0;
        await Promise.all(
          sessions.map(async (s) => {
            for (let i = 0; i < per; i++) {
              await s.send({ i });
              show(++queued, per * sessions.length);
            }
          }),
        );
        await sleep(1500); // a backup cut that includes them
        const before = await status(rt);
        const t0 = performance.now();
        fleet.kill(d.managers[0]!);
        await until(async () => {
          const st = await status(rt);
          return !!st && st.node !== before?.node;
        }, 120_000);
        const takeoverMs = performance.now() - t0;
        rows.push({ pending: queued, takeoverMs });
        process.stderr.write(`  ${queued} pending: standby primary after ${Math.round(takeoverMs)} ms\n`);
        for (const s of sessions) await s.detach();
        fleet.kill(d.servers[0]!, "SIGCONT");
        await undeploy(d);
        await rt.jsm.streams.purge(rt.names.streamReq);
        await rt.jsm.streams.purge(rt.names.streamResp);
      }
      result.restart = rows;
    }

    // ---- hedging: a straggler share, p99 without and with hedging ----------------------
    if (parts.has("hedging")) {
      process.stderr.write("hedging\n");
      const node = `bench-h${Date.now() % 100000}`;
      const m = fleet.start("manager-h", ["manager", "--node", node]);
      nodeNames.set(m, node);
      // 5 % of every server's calls are delayed 500 ms (docs/design.md §7).
      const servers = [0, 1, 2].map((i) =>
        fleet.start(`hedge-server-${i}`, ["server", "--service", "hedge", "--work", "sleep", "--sleep-ms", "2", "--straggle-pct", "5", "--straggle-ms", "500", "--capacity", "256"]),
      );
      await until(async () => ((await status(rt))?.servers.filter((x) => x.alive && x.service === "hedge").length ?? 0) >= 3);
      const hedgeStats = async () => (await status(rt))?.services.find((x) => x.service === "hedge")?.hedging ?? { requests: 0, extra: 0, p95Ms: null };
      const rows: Record<string, unknown> = {};
      for (const mode of ["without", "with"] as const) {
        const sessions: ClientSession[] = [];
        for (let i = 0; i < 16; i++) sessions.push(await client.open("hedge", mode === "with" ? { hedge: { copies: 2, after: "p95" } } : {}));
        // Warm up (the learned delay needs samples), then measure.
        await load(16, 1000, async (i) => void (await sessions[i]!.request(i)), `hedging ${mode}: warm-up`);
        const before = await hedgeStats();
        const r = await load(16, quick ? 8000 : 30_000, async (i) => void (await sessions[i]!.request(i)), `16 sessions ${mode} hedging`);
        const after = await hedgeStats();
        const extraPct = (100 * (after.extra - before.extra)) / Math.max(1, after.requests - before.requests);
        rows[mode] = { ratePerS: r.rate, latencyMs: r.latency, extraPct, learnedP95Ms: after.p95Ms };
        cdf[`${mode} hedging (5 % stragglers)`] = r.samples;
        process.stderr.write(`  ${mode} hedging: p99 ${r.latency.p99.toFixed(1)} ms, p99.9 ${r.latency.p999.toFixed(1)} ms, extra work ${extraPct.toFixed(1)} %\n`);
        for (const s of sessions) await s.close();
      }
      result.hedging = rows;
      for (const p of [...servers, m]) fleet.kill(p);
      await sleep(300);
    }
    await client.close();
  } finally {
    await rawKit?.close();
    fleet.stopAll();
    await rt.close();
    await ns.cleanup();
  }
  result.targets = targets(ratios, result);
  writeFileSync(join(outDir, "latest.json"), JSON.stringify(result, null, 2));
  writeCharts(outDir, cdf, result);
  process.stdout.write(markdown(result));
  process.stdout.write(`\nresults: ${join(outDir, "latest.json")}, charts: ${join(outDir, "*.svg")}\n`);
}

const nodeNames = new Map<Proc, string>();

interface Span {
  median: number;
  min: number;
  max: number;
}

/** One paired round: raw and brokered measured back to back (see the brokered part). */
interface PairedRound {
  rawWqP50Ms: number;
  rawCoreP50Ms: number;
  brokeredP50Ms: number;
  /** brokered 1-session p50 / raw work-queue round trip p50 (the target). */
  p50Ratio: number;
  /** ... / raw core request-reply p50 (information). */
  p50RatioCore: number;
  rawWqRate: number;
  rawAsyncRate: number;
  brokeredRate: number;
  /** brokered 128-session round trips/s / raw work-queue round trips/s at 128 in flight (the target). */
  rateRatio: number;
  /** ... / raw async publishes/s (information: one-way, not a round trip). */
  rateRatioAsync: number;
  /** CPU µs per round trip: caller + worker + nats-server, and client + manager + server + nats-server. */
  rawCpuUs: number;
  tandemCpuUs: number;
  cpuRatio: number;
  idleTandemCpuPct: number;
}

interface Target {
  name: string;
  target: string;
  measured: string;
  met: boolean | null;
}

function targets(r: Record<string, number>, result: Record<string, unknown>): Target[] {
  const out: Target[] = [];
  const paired = result.paired as { rounds: unknown[]; p50Ratio: Span; rateRatio: Span; cpuRatio?: Span; p50RatioCore?: Span; rateRatioAsync?: Span } | undefined;
  const rng = (s: Span, d: number) => `${s.min.toFixed(d)}–${s.max.toFixed(d)}`;
  if (paired?.cpuRatio) {
    const n = paired.rounds.length;
    const x = paired.rateRatio.median;
    out.push({ name: `brokered round trips/s (128 sessions) vs raw JetStream work-queue round trips/s (128 in flight), median of ${n} paired rounds`, target: ">= 1.0", measured: `${x.toFixed(3)} (rounds ${rng(paired.rateRatio, 3)})`, met: x >= 1.0 });
    const c = paired.cpuRatio.median;
    out.push({ name: `CPU per round trip, brokered vs raw work-queue (every process incl. nats-server), median of ${n}`, target: "<= 1.1", measured: `${c.toFixed(2)} (rounds ${rng(paired.cpuRatio, 2)})`, met: c <= 1.1 });
    const y = paired.p50Ratio.median;
    out.push({ name: `brokered 1-session p50 vs raw work-queue round trip p50, median of ${n} paired rounds`, target: "<= 1.3", measured: `${y.toFixed(2)} (rounds ${rng(paired.p50Ratio, 2)})`, met: y <= 1.3 });
    if (paired.p50RatioCore) out.push({ name: "information: brokered p50 vs raw core request-reply p50", target: "—", measured: `${paired.p50RatioCore.median.toFixed(2)} (rounds ${rng(paired.p50RatioCore, 2)})`, met: null });
    if (paired.rateRatioAsync) out.push({ name: "information: brokered round trips/s vs raw async JetStream publishes/s (one-way)", target: "—", measured: `${paired.rateRatioAsync.median.toFixed(3)} (rounds ${rng(paired.rateRatioAsync, 3)})`, met: null });
  } else if (paired) {
    // A result file from before the work-queue baseline: the old ratios.
    out.push({ name: `brokered round trips/s (128 sessions) vs raw JetStream async publishes/s`, target: ">= 0.35", measured: paired.rateRatio.median.toFixed(3), met: paired.rateRatio.median >= 0.35 });
    out.push({ name: `brokered round-trip p50 vs raw core request-reply p50`, target: "<= 4", measured: paired.p50Ratio.median.toFixed(2), met: paired.p50Ratio.median <= 4 });
  }
  const w = result.windows as { window32VsWindow1: number; byWindow: Array<{ window: number; ratePerS: number }> } | undefined;
  if (w) {
    const w32 = w.byWindow.find((x) => x.window === 32)!.ratePerS;
    out.push({ name: "one session, window 32: round trips/s vs the same session at window 1", target: ">= 10", measured: `${w.window32VsWindow1.toFixed(1)} (${Math.round(w32)}/s vs ${Math.round(w.byWindow[0]!.ratePerS)}/s)`, met: w.window32VsWindow1 >= 10 });
  }
  const f = result.failover as { medianMs: number; maxMs: number } | undefined;
  if (f) out.push({ name: "failover: SIGKILL of the primary -> every session serving, median", target: "<= 1500 ms", measured: `${Math.round(f.medianMs)} ms (max ${Math.round(f.maxMs)} ms)`, met: f.medianMs <= 1500 });
  const h = result.hedging as { without: { latencyMs: Latency }; with: { latencyMs: Latency; extraPct: number } } | undefined;
  if (h) {
    const x = h.with.latencyMs.p99 / h.without.latencyMs.p99;
    out.push({
      name: "hedging: p99 with hedging vs without (5 % delayed 500 ms)",
      target: "<= 1/5, <= 10 % extra work",
      measured: `1/${(1 / x).toFixed(1)} (${h.with.latencyMs.p99.toFixed(1)} ms / ${h.without.latencyMs.p99.toFixed(1)} ms), ${h.with.extraPct.toFixed(1)} % extra`,
      met: x <= 0.2 && h.with.extraPct <= 10,
    });
  }
  return out;
}

/** The hops of one round trip, as [from stage, to stage, what happens there]. */
const HOPS: Array<[string, string, string]> = [
  ["client.send", "manager.request", "client -> manager: request stored in TANDEM_REQ, pulled by the manager"],
  ["manager.request", "manager.dispatch", "manager: table, pick server"],
  ["manager.dispatch", "server.work", "manager -> server: work message (core)"],
  ["server.work", "server.done", "server: handler (echo)"],
  ["server.done", "manager.response", "server -> manager: response stored in TANDEM_RESP, pulled by the manager"],
  ["manager.response", "manager.deliver", "manager: table, order"],
  ["manager.deliver", "client.delivered", "manager -> client: deliver message (core)"],
  ["client.delivered", "client.handed", "client: hand to the application"],
];

interface PathRow {
  hop: string;
  p50Us: number;
  p90Us: number;
}

/** Median and p90 of each hop over the round trips whose every stage was recorded. */
function pathBreakdown(dir: string): { roundTrips: number; hops: PathRow[]; totalP50Us: number } {
  const at = new Map<string, Map<string, number>>();
  for (const f of readdirSync(dir)) {
    for (const line of readFileSync(join(dir, f), "utf8").split("\n")) {
      const [stage, key, t] = line.split(" ");
      if (!stage || !key || !t) continue;
      let m = at.get(key);
      if (!m) at.set(key, (m = new Map()));
      m.set(stage, Number(t));
    }
  }
  const stages = ["client.send", ...HOPS.map((h) => h[1])];
  const full = [...at.values()].filter((m) => stages.every((s) => m.has(s)));
  const q = (xs: number[], p: number) => {
    const s = xs.sort((a, b) => a - b);
    return s.length ? Math.round(s[Math.min(s.length - 1, Math.floor(p * s.length))]! * 1000) : NaN;
  };
  const hops = HOPS.map(([a, b, what]) => {
    const d = full.map((m) => m.get(b)! - m.get(a)!);
    return { hop: what, p50Us: q(d, 0.5), p90Us: q(d, 0.9) };
  });
  return { roundTrips: full.length, hops, totalP50Us: q(full.map((m) => m.get("client.handed")! - m.get("client.send")!), 0.5) };
}

function markdown(result: Record<string, unknown>): string {
  const m = result.machine as { cpus: number; model: string; memGiB: number; node: string };
  const lines: string[] = [];
  lines.push(`\n### Tandem vs raw NATS (${m.cpus} cores, ${m.model}, ${m.memGiB} GiB, Node ${m.node}${result.quick ? ", --quick" : ""})\n`);
  lines.push("| target (docs/design.md §7) | target | measured | met |", "|---|---|---|---|");
  for (const t of result.targets as Target[]) lines.push(`| ${t.name} | ${t.target} | ${t.measured} | ${t.met === null ? "—" : t.met ? "yes" : "**no**"} |`);
  const raw = result.raw as Record<string, Record<string, { ratePerS?: number; latencyMs?: Latency }>> | undefined;
  const f = (x: number | undefined, d = 0) => (x === undefined || Number.isNaN(x) ? "—" : x.toFixed(d));
  if (raw) {
    lines.push("", "| raw NATS | rate/s | p50 ms | p99 ms |", "|---|---|---|---|");
    lines.push(`| core request-reply, sequential (responder in its own process) | ${f(raw.coreRequestReply!.sequential!.ratePerS)} | ${f(raw.coreRequestReply!.sequential!.latencyMs!.p50, 3)} | ${f(raw.coreRequestReply!.sequential!.latencyMs!.p99, 3)} |`);
    const same = raw.coreRequestReply!.sameProcess;
    if (same) lines.push(`| core request-reply, sequential, responder in the same process | ${f(same.ratePerS)} | ${f(same.latencyMs!.p50, 3)} | ${f(same.latencyMs!.p99, 3)} |`);
    lines.push(`| core request-reply, 100 in flight | ${f(raw.coreRequestReply!.window100!.ratePerS)} | | |`);
    lines.push(`| JetStream publish, sync | ${f(raw.jetstreamPublish!.sync!.ratePerS)} | ${f(raw.jetstreamPublish!.sync!.latencyMs!.p50, 3)} | ${f(raw.jetstreamPublish!.sync!.latencyMs!.p99, 3)} |`);
    const ac = (raw.jetstreamPublish!.async256 as { cpuUsPerMsg?: { client: number; natsServer: number } }).cpuUsPerMsg;
    lines.push(`| JetStream publish, 256 in flight${ac ? ` (CPU µs per message: client ${ac.client}, nats-server ${ac.natsServer})` : ""} | ${f(raw.jetstreamPublish!.async256!.ratePerS)} | | |`);
    lines.push(`| KV put | ${f((raw.kvPut as unknown as { ratePerS: number }).ratePerS)} | ${f((raw.kvPut as unknown as { latencyMs: Latency }).latencyMs.p50, 3)} | ${f((raw.kvPut as unknown as { latencyMs: Latency }).latencyMs.p99, 3)} |`);
    const wq = raw.jetstreamWorkQueueRoundTrip as unknown as { window1: { ratePerS: number; p50Ms: number }; window128: { ratePerS: number; p50Ms: number; cpuUsPerRoundTrip: number } } | undefined;
    if (wq) {
      lines.push(`| JetStream work-queue round trip, 1 in flight (worker in its own process) | ${f(wq.window1.ratePerS)} | ${f(wq.window1.p50Ms, 3)} | |`);
      lines.push(`| JetStream work-queue round trip, 128 in flight (CPU µs per round trip, all processes: ${wq.window128.cpuUsPerRoundTrip}) | ${f(wq.window128.ratePerS)} | ${f(wq.window128.p50Ms, 3)} | |`);
    }
    const nb = raw.natsBench as unknown as { tool?: string; serviceRequestReply?: { ratePerS: number; p50Ms: number | null } | null; jsPublishAsync?: { ratePerS: number; p50Ms: number | null } | null } | undefined;
    if (nb?.serviceRequestReply) lines.push(`| \`nats bench service request\` (${nb.tool ?? "natscli"}, Go), 1 client | ${f(nb.serviceRequestReply.ratePerS)} | ${f(nb.serviceRequestReply.p50Ms ?? undefined, 3)} | |`);
    if (nb?.jsPublishAsync) lines.push(`| \`nats bench js pub async\` (Go, batches of 500) | ${f(nb.jsPublishAsync.ratePerS)} | | |`);
  }
  const b = result.brokered as Record<string, { sessions: number; ratePerS: number; latencyMs: Latency; cpuUsPerRoundTrip?: Record<string, number> }> | undefined;
  if (b) {
    // As ratios to the raw figures of the same run: rate to async publishes, p50 to request-reply.
    const rawRate = raw?.jetstreamPublish?.async256?.ratePerS;
    const rawP50 = raw?.coreRequestReply?.sequential?.latencyMs?.p50;
    lines.push(
      "",
      "| Tandem brokered round trips | rate/s | × raw async publishes (raw part) | p50 ms | × raw request-reply p50 (raw part) | p90 ms | p99 ms | p99.9 ms | CPU µs per round trip: manager / server / client / nats-server |",
      "|---|---|---|---|---|---|---|---|---|",
    );
    for (const r of Object.values(b)) {
      const cpu = r.cpuUsPerRoundTrip ? `${r.cpuUsPerRoundTrip.manager} / ${r.cpuUsPerRoundTrip.server} / ${r.cpuUsPerRoundTrip.client} / ${r.cpuUsPerRoundTrip.natsServer}` : "—";
      const xr = rawRate ? f(r.ratePerS / rawRate, 3) : "—";
      const xl = rawP50 ? f(r.latencyMs.p50 / rawP50, 2) : "—";
      lines.push(`| ${r.sessions} session(s) | ${f(r.ratePerS)} | ${xr} | ${f(r.latencyMs.p50, 2)} | ${xl} | ${f(r.latencyMs.p90, 2)} | ${f(r.latencyMs.p99, 2)} | ${f(r.latencyMs.p999, 2)} | ${cpu} |`);
    }
  }
  const win = result.windows as { byWindow: Array<{ window: number; ratePerS: number; latencyMs: Latency; workPerRoundTrip?: number; deliveriesPerRoundTrip?: number; requestRecordsPerRoundTrip?: number; responseRecordsPerRoundTrip?: number; cpuUsPerRoundTrip?: Record<string, number> }> } | undefined;
  if (win) {
    lines.push("", "| one session, window w (w of its requests at the server at once) | rate/s | × window 1 | p50 ms | p99 ms | max ms | work messages per round trip | delivery messages per round trip | request / response records per round trip | CPU µs per round trip: manager / server / client / nats-server |", "|---|---|---|---|---|---|---|---|---|---|");
    const one = win.byWindow[0]!.ratePerS;
    for (const r of win.byWindow) {
      const cpu = r.cpuUsPerRoundTrip ? `${r.cpuUsPerRoundTrip.manager} / ${r.cpuUsPerRoundTrip.server} / ${r.cpuUsPerRoundTrip.client} / ${r.cpuUsPerRoundTrip.natsServer}` : "—";
      lines.push(`| window ${r.window} | ${f(r.ratePerS)} | ${f(r.ratePerS / one, 1)} | ${f(r.latencyMs.p50, 2)} | ${f(r.latencyMs.p99, 2)} | ${r.latencyMs.max === undefined ? "" : f(r.latencyMs.max, 1)} | ${r.workPerRoundTrip === undefined ? "" : f(r.workPerRoundTrip, 2)} | ${r.deliveriesPerRoundTrip === undefined ? "" : f(r.deliveriesPerRoundTrip, 2)} | ${r.requestRecordsPerRoundTrip === undefined ? "" : `${f(r.requestRecordsPerRoundTrip, 2)} / ${f(r.responseRecordsPerRoundTrip ?? NaN, 2)}`} | ${cpu} |`);
    }
  }
  const pool = result.pool as { servers: number; inFlight: number; rateRatio: number; cpuRatio: number; byServer: Record<string, number>; messagesInWarmUp?: Record<string, number>; rounds: Array<Record<string, number> & { cpuUsPerRoundTrip?: Record<string, number> }> } | undefined;
  if (pool) {
    lines.push("", `| unordered pool, one session on ${pool.servers} servers, ${pool.inFlight} in flight (paired round) | raw work-queue round trips/s (128) | pool round trips/s | ratio | CPU µs/rt raw / pool | ratio | pool CPU µs/rt: manager / servers / client / nats-server |`, "|---|---|---|---|---|---|---|");
    const by = (c?: Record<string, number>) => (c ? `${f(c.manager)} / ${f(c.servers)} / ${f(c.client)} / ${f(c.natsServer)}` : "");
    pool.rounds.forEach((x, i) => lines.push(`| ${i + 1} | ${f(x.rawWqRate)} | ${f(x.poolRate)} | ${f(x.rateRatio, 3)} | ${f(x.rawCpuUs)} / ${f(x.poolCpuUs)} | ${f(x.cpuRatio, 2)} | ${by(x.cpuUsPerRoundTrip)} |`));
    lines.push(`| median | | | ${f(pool.rateRatio, 3)} | | ${f(pool.cpuRatio, 2)} | |`, "", `Responses per server: ${Object.entries(pool.byServer).map(([k, v]) => `${k} ${v}`).join(", ")}.`);
    const mw = pool.messagesInWarmUp;
    if (mw) lines.push("", `Messages per round trip in the warm-up: work ${f(mw.workPerRoundTrip!, 3)}, deliveries ${f(mw.deliveriesPerRoundTrip!, 3)}, request records ${f(mw.requestRecordsPerRoundTrip!, 3)}, response records ${f(mw.responseRecordsPerRoundTrip!, 3)}.`);
  }
  const pr = result.paired as { msPerMeasurement: number; rounds: Array<Record<string, number>> } | undefined;
  if (pr && pr.rounds[0]?.rawWqRate !== undefined) {
    lines.push(
      "",
      `| paired round (${pr.msPerMeasurement} ms each, back to back) | raw work-queue p50 ms | brokered p50 ms (1 session) | ratio | raw work-queue round trips/s (128) | brokered round trips/s (128 sessions) | ratio | CPU µs/rt raw / brokered | ratio | raw request-reply p50 ms | raw async publishes/s (idle Tandem's CPU) |`,
      "|---|---|---|---|---|---|---|---|---|---|---|",
    );
    pr.rounds.forEach((x, i) =>
      lines.push(`| ${i + 1} | ${f(x.rawWqP50Ms, 3)} | ${f(x.brokeredP50Ms, 3)} | ${f(x.p50Ratio, 2)} | ${f(x.rawWqRate)} | ${f(x.brokeredRate)} | ${f(x.rateRatio, 3)} | ${f(x.rawCpuUs)} / ${f(x.tandemCpuUs)} | ${f(x.cpuRatio, 2)} | ${f(x.rawCoreP50Ms, 3)} | ${f(x.rawAsyncRate)} (${f(x.idleTandemCpuPct)} %) |`),
    );
  } else if (pr) {
    lines.push("", `| paired round | raw request-reply p50 ms | brokered p50 ms | ratio | raw async publishes/s | brokered round trips/s | ratio |`, "|---|---|---|---|---|---|---|");
    pr.rounds.forEach((x, i) => lines.push(`| ${i + 1} | ${f(x.rawP50Ms, 3)} | ${f(x.brokeredP50Ms, 3)} | ${f(x.p50Ratio, 2)} | ${f(x.rawRate)} | ${f(x.brokeredRate)} | ${f(x.rateRatio, 3)} |`));
  }
  const sy = result.sync as { rows: Array<{ sync: string; round: number; ratePerS: number; p50Ms: number; p99Ms: number }>; alwaysVsDefault: number } | undefined;
  if (sy) {
    lines.push("", `| brokered, 128 sessions, by nats-server fsync policy (alternating rounds) | rate/s | p50 ms | p99 ms |`, "|---|---|---|---|");
    for (const r of sy.rows) lines.push(`| ${r.sync === "always" ? "sync_interval: always (fsync per write)" : "default (fsync every 2 min)"}, round ${r.round} | ${f(r.ratePerS)} | ${f(r.p50Ms, 2)} | ${f(r.p99Ms, 2)} |`);
    lines.push(`| always ÷ default, medians | ${f(sy.alwaysVsDefault, 2)} | | |`);
  }
  const p = result.path as ReturnType<typeof pathBreakdown> | undefined;
  if (p) {
    lines.push("", `| one round trip, hop by hop (1 session, ${p.roundTrips} round trips) | p50 µs | p90 µs |`, "|---|---|---|");
    for (const h of p.hops) lines.push(`| ${h.hop} | ${h.p50Us} | ${h.p90Us} |`);
    lines.push(`| whole round trip | ${p.totalP50Us} | |`);
  }
  const s = result.scale as { bySessions: Array<Record<string, number | null>>; byServers: Array<Record<string, number>> } | undefined;
  if (s) {
    lines.push("", "| open sessions | rate/s | p50 ms | p99 ms | manager RSS MB |", "|---|---|---|---|---|");
    for (const r of s.bySessions) lines.push(`| ${r.sessions} | ${f(r.ratePerS!)} | ${f(r.p50Ms!, 2)} | ${f(r.p99Ms!, 2)} | ${r.managerRssMb ?? "—"} |`);
    lines.push("", "| servers per service (128 sessions) | rate/s | p50 ms | p99 ms |", "|---|---|---|---|");
    for (const r of s.byServers) lines.push(`| ${r.servers} | ${f(r.ratePerS)} | ${f(r.p50Ms, 2)} | ${f(r.p99Ms, 2)} |`);
  }
  const fo = result.failover as { kills: Array<{ kill: number; allServingMs: number }>; medianMs: number; maxMs: number } | undefined;
  if (fo) lines.push("", `Failover, ${fo.kills.length} SIGKILLs of the primary under load (16 sessions, lease 1 s): every session serving again after median ${Math.round(fo.medianMs)} ms, max ${Math.round(fo.maxMs)} ms.`);
  const hg = result.hedging as Record<string, { ratePerS: number; latencyMs: Latency; extraPct: number; learnedP95Ms: number | null }> | undefined;
  if (hg) {
    lines.push("", "| 16 sessions, 5 % of calls delayed 500 ms | rate/s | p50 ms | p99 ms | p99.9 ms | extra server work |", "|---|---|---|---|---|---|");
    for (const [mode, r] of Object.entries(hg)) {
      lines.push(`| ${mode} hedging${mode === "with" ? ` (2 copies, after the learned p95 = ${r.learnedP95Ms ?? "?"} ms)` : ""} | ${f(r.ratePerS)} | ${f(r.latencyMs.p50, 2)} | ${f(r.latencyMs.p99, 2)} | ${f(r.latencyMs.p999, 2)} | ${mode === "with" ? `${r.extraPct.toFixed(1)} %` : "—"} |`);
    }
  }
  const rs = result.restart as Array<{ pending: number; takeoverMs: number }> | undefined;
  if (rs) {
    lines.push("", "| pending requests at the kill | standby primary after ms |", "|---|---|");
    for (const r of rs) lines.push(`| ${r.pending} | ${Math.round(r.takeoverMs)} |`);
  }
  return `${lines.join("\n")}\n`;
}

// ---- SVG charts (hand-drawn: no chart library) ---------------------------------------

function svg(width: number, height: number, body: string, title: string): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="${width / 2}" y="18" text-anchor="middle" font-size="14">${title}</text>${body}</svg>\n`;
}

function linePlot(series: Array<{ name: string; points: Array<[number, number]>; color: string }>, opts: { title: string; xLabel: string; yLabel: string; logX?: boolean; legendLeft?: boolean }): string {
  const W = 640, H = 400, L = 60, R = 20, T = 30, B = 50;
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return svg(W, H, "", opts.title);
  const tx = (x: number) => (opts.logX ? Math.log10(Math.max(x, 1e-3)) : x);
  const xs = all.map((p) => tx(p[0]));
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || 1;
  const y1 = Math.max(...all.map((p) => p[1])) || 1;
  const X = (x: number) => L + ((tx(x) - x0) / (x1 - x0 || 1)) * (W - L - R);
  const Y = (y: number) => H - B - (y / y1) * (H - T - B);
  let body = `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`;
  body += `<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">${opts.xLabel}</text><text x="14" y="${(T + H - B) / 2}" transform="rotate(-90 14 ${(T + H - B) / 2})" text-anchor="middle">${opts.yLabel}</text>`;
  for (let i = 0; i <= 4; i++) {
    const xv = opts.logX ? 10 ** (x0 + ((x1 - x0) * i) / 4) : x0 + ((x1 - x0) * i) / 4;
    body += `<text x="${X(xv)}" y="${H - B + 15}" text-anchor="middle">${xv < 10 ? xv.toFixed(2) : Math.round(xv)}</text>`;
    body += `<text x="${L - 5}" y="${Y((y1 * i) / 4) + 4}" text-anchor="end">${((y1 * i) / 4).toFixed(y1 < 10 ? 2 : 0)}</text>`;
  }
  series.forEach((s, i) => {
    body += `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${s.points.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(" ")}"/>`;
    // A mark on every point: a series of one point (the pool, a reference) has no line to show it.
    for (const [x, y] of s.points) body += `<circle cx="${X(x).toFixed(1)}" cy="${Y(y).toFixed(1)}" r="4" fill="${s.color}"/>`;
    const lx = opts.legendLeft ? L + 10 : W - R - 190;
    body += `<rect x="${lx}" y="${T + 8 + i * 18}" width="12" height="12" fill="${s.color}"/><text x="${lx + 18}" y="${T + 18 + i * 18}">${s.name}</text>`;
  });
  return svg(W, H, body, opts.title);
}

function writeCharts(dir: string, cdf: Record<string, number[]>, result: Record<string, unknown>): void {
  const colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
  const cdfSeries = Object.entries(cdf).map(([name, samples], i) => {
    const s = [...samples].sort((a, b) => a - b);
    const step = Math.max(1, Math.floor(s.length / 400));
    const points: Array<[number, number]> = [];
    for (let k = 0; k < s.length; k += step) points.push([s[k]!, (k + 1) / s.length]);
    return { name, points, color: colors[i % colors.length]! };
  });
  if (cdfSeries.length) writeFileSync(join(dir, "latency-cdf.svg"), linePlot(cdfSeries, { title: "Round-trip latency CDF (sequential)", xLabel: "latency, ms (log)", yLabel: "fraction", logX: true }));
  const s = result.scale as { bySessions: Array<{ sessions: number; ratePerS: number }> } | undefined;
  if (s) writeFileSync(join(dir, "throughput-vs-sessions.svg"), linePlot([{ name: "round trips/s", points: s.bySessions.map((r) => [r.sessions, r.ratePerS] as [number, number]), color: colors[0]! }], { title: "Throughput vs open sessions (128 in flight)", xLabel: "open sessions (log)", yLabel: "round trips/s", logX: true }));
  // Throughput by requests in flight: one session's window, the pool, and at 128 in flight the
  // paired references (128 sessions of window 1, and raw JetStream's work-queue round trip).
  const w = result.windows as { byWindow: Array<{ window: number; ratePerS: number }> } | undefined;
  const pool = result.pool as { servers: number; inFlight: number; ratePerS: number; rounds: Array<{ rawWqRate: number }> } | undefined;
  const paired = result.paired as { rounds: Array<{ brokeredRate: number; rawWqRate: number }> } | undefined;
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const inFlight: Array<{ name: string; points: Array<[number, number]>; color: string }> = [];
  if (w) inFlight.push({ name: "one session, window w", points: w.byWindow.map((r) => [r.window, r.ratePerS] as [number, number]), color: colors[0]! });
  if (pool) inFlight.push({ name: `one pool on ${pool.servers} servers`, points: [[pool.inFlight, pool.ratePerS]], color: colors[1]! });
  if (paired?.rounds.length) inFlight.push({ name: "128 sessions, window 1", points: [[128, median(paired.rounds.map((r) => r.brokeredRate))]], color: colors[2]! });
  // The raw rate of the rounds paired with the pool where there are some (the brokered part's
  // rounds run beside its idle sessions, and their raw rate is lower): one reference, named.
  const rawWq = (pool?.rounds.length ? pool.rounds : (paired?.rounds ?? [])).map((r) => r.rawWqRate);
  if (rawWq.length && inFlight.length) inFlight.push({ name: `raw JetStream work queue${pool?.rounds.length ? " (pool's rounds)" : ""}`, points: [[128, median(rawWq)]], color: colors[3]! });
  if (inFlight.length) writeFileSync(join(dir, "throughput-vs-window.svg"), linePlot(inFlight, { title: "Throughput vs requests in flight", xLabel: "requests in flight (log)", yLabel: "round trips/s", logX: true, legendLeft: true }));
  const f = result.failover as { kills: Array<{ kill: number; allServingMs: number; firstMs: number }> } | undefined;
  if (f) {
    writeFileSync(
      join(dir, "failover.svg"),
      linePlot(
        [
          { name: "every session serving", points: f.kills.map((k) => [k.kill, k.allServingMs] as [number, number]), color: colors[1]! },
          { name: "first session serving", points: f.kills.map((k) => [k.kill, k.firstMs] as [number, number]), color: colors[2]! },
        ],
        { title: "Failover: SIGKILL of the primary, time to serve again", xLabel: "kill #", yLabel: "ms after the kill" },
      ),
    );
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().then(
    () => process.exit(0),
    (err) => {
      process.stderr.write(`bench failed: ${(err as Error)?.stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
