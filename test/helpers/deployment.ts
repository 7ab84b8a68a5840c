/**
 * A real deployment for fault tests: nats-server, manager(s), servers and clients as separate
 * processes of the built CLI, each restartable; clients keep the lines of all their
 * incarnations so the history checker sees what the application saw.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { NatsServer } from "../../src/runtime/dev/nats-server.js";
import { NatsCluster } from "../../src/runtime/dev/nats-cluster.js";
import { Names, decode, encode } from "../../src/runtime/wire.js";
import type { ManagerStatus } from "../../src/actors/manager.js";
import { fastEnv } from "./nats.js";
import { tandem, type TandemProc } from "./procs.js";
import type { ClientHistory, Line } from "./history.js";

export class ClientRunner {
  readonly lines: Line[] = [];
  proc: TandemProc | null = null;
  incarnations = 0;
  private copied = 0;

  constructor(
    readonly name: string,
    private readonly args: string[],
    private readonly env: Record<string, string>,
    readonly expected: number,
    private readonly stopped: () => boolean = () => false,
  ) {}

  start(): void {
    if (this.stopped()) throw new Error("deployment already stopped (its run was abandoned)");
    this.collect();
    this.copied = 0;
    this.incarnations++;
    this.proc = tandem(`${this.name}#${this.incarnations}`, this.args, this.env);
  }

  /** Move the current incarnation's new lines into the history. */
  collect(): void {
    if (!this.proc) return;
    const l = this.proc.lines;
    for (; this.copied < l.length; this.copied++) this.lines.push(l[this.copied]!);
  }

  running(): boolean {
    return this.proc?.running() ?? false;
  }

  async kill(): Promise<void> {
    await this.proc?.kill("SIGKILL");
    this.collect();
  }

  answered(): number {
    this.collect();
    return new Set(this.lines.filter((l) => l.type === "response").map((l) => l.request)).size;
  }

  finished(): boolean {
    this.collect();
    const p = this.proc;
    return p !== null && !p.running() && p.child.exitCode === 0 && this.lines.some((l) => l.type === "summary" && l.complete === true);
  }

  history(): ClientHistory {
    this.collect();
    return { name: this.name, expected: this.expected, lines: this.lines, ...(this.args.includes("--unordered") ? { unordered: true } : {}) };
  }
}

export interface DeploymentOptions {
  /** A NATS cluster of this many servers instead of one nats-server. */
  cluster?: number;
  servers?: number;
  managers?: number;
  work?: string[];
  service?: string;
  /** Start a server again 100 ms after it exits on its own (as a supervisor would); not after killServer. */
  supervise?: boolean;
}

export class Deployment {
  /** Every deployment not yet stopped: a property run abandoned at its time limit is stopped by stopAllDeployments(). */
  static readonly live = new Set<Deployment>();
  private stopped = false;
  readonly dir = mkdtempSync(join(tmpdir(), "tandem-deploy-"));
  readonly names = new Names("tandem");
  managers: TandemProc[] = [];
  servers: Array<TandemProc | null> = [];
  /** Every server process started, in order (a supervised slot has many). */
  readonly serverProcs: TandemProc[] = [];
  private readonly killed = new Set<TandemProc>();
  clients: ClientRunner[] = [];
  private managerCount = 0;

  private constructor(
    readonly ns: NatsServer,
    readonly cluster: NatsCluster | null,
    readonly nc: NatsConnection,
    readonly env: Record<string, string>,
    readonly opts: Required<DeploymentOptions>,
  ) {}

  static async start(opts: DeploymentOptions = {}): Promise<Deployment> {
    const cluster = opts.cluster ? await NatsCluster.start({ size: opts.cluster }) : null;
    if (cluster) await cluster.waitReady();
    const ns = cluster ? cluster.servers[0]! : await NatsServer.start();
    const url = cluster ? cluster.url : ns.url;
    const nc = await connect({ servers: url.split(","), maxReconnectAttempts: -1, reconnectTimeWait: 200 });
    const d = new Deployment(ns, cluster, nc, fastEnv(url), {
      servers: opts.servers ?? 2,
      managers: opts.managers ?? 1,
      work: opts.work ?? ["--work", "sleep", "--sleep-ms", "5"],
      service: opts.service ?? "svc",
      cluster: opts.cluster ?? 0,
      supervise: opts.supervise ?? false,
    });
    Deployment.live.add(d);
    try {
      d.startManager();
      await d.waitPrimary();
      for (let i = 1; i < d.opts.managers; i++) d.startManager();
      for (let i = 0; i < d.opts.servers; i++) d.startServer(i);
      await d.waitServers(d.opts.servers);
      if (d.opts.managers > 1) {
        await until(async () => ((await d.status())?.standbys.length ?? 0) >= d.opts.managers - 1, "standbys to get backups", 30_000);
      }
    } catch (err) {
      console.error(`deployment did not come up: ${String(err)}\n${d.logs(30)}`);
      await d.stop();
      throw err;
    }
    return d;
  }

  get manager(): TandemProc | undefined {
    return this.managers.find((m) => m.running());
  }

  /** The manager process that is primary now (by the node name its status reports). */
  async primary(): Promise<TandemProc | undefined> {
    const st = await this.status();
    return st ? this.managers.find((m) => m.name === `manager-${st.node.slice(1)}`) : undefined;
  }

  async waitPrimary(other?: string, timeoutMs = 30_000): Promise<string> {
    let node = "";
    await until(async () => {
      const st = await this.status();
      node = st?.node ?? "";
      return node !== "" && node !== other;
    }, other ? `a primary other than ${other}` : "a primary", timeoutMs);
    return node;
  }

  private alive(): void {
    if (this.stopped) throw new Error("deployment already stopped (its run was abandoned)");
  }

  startManager(): TandemProc {
    this.alive();
    const m = tandem(`manager-${++this.managerCount}`, ["manager", "--node", `m${this.managerCount}`], this.env);
    this.managers.push(m);
    return m;
  }

  startServer(i: number): TandemProc {
    this.alive();
    const p = tandem(`server-${i}`, ["server", "--service", this.opts.service, ...this.opts.work, "--id", `srv${i}-${Date.now() % 100000}`], this.env);
    this.servers[i] = p;
    this.serverProcs.push(p);
    if (this.opts.supervise) {
      void p.exited.then(() => {
        if (this.stopped || this.killed.has(p) || this.servers[i] !== p) return;
        setTimeout(() => {
          if (!this.stopped && this.servers[i] === p) this.startServer(i);
        }, 100);
      });
    }
    return p;
  }

  async killServer(i: number): Promise<void> {
    const p = this.servers[i];
    if (p) this.killed.add(p);
    await p?.kill("SIGKILL");
  }

  client(name: string, requests: number, concurrency: number, extra: string[] = []): ClientRunner {
    const args = [
      "client", "--service", this.opts.service, "--requests", String(requests), "--concurrency", String(concurrency),
      "--json", "--state", join(this.dir, `${name}.json`), ...extra,
    ];
    const c = new ClientRunner(name, args, this.env, requests, () => this.stopped);
    this.clients.push(c);
    return c;
  }

  async status(): Promise<ManagerStatus | null> {
    try {
      const r = await this.nc.request(this.names.mgr("status"), encode({}), { timeout: 1000 });
      const rep = decode(r.data) as { ok: boolean; value: ManagerStatus };
      return rep.ok ? rep.value : null;
    } catch {
      return null;
    }
  }

  async waitServers(count: number, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const st = await this.status();
      if (st && st.servers.filter((s) => s.alive).length >= count) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`fewer than ${count} servers registered within ${timeoutMs} ms`);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    Deployment.live.delete(this);
    // Kill everything first, synchronously, so nothing outlives a failing teardown.
    const procs = [...this.clients.map((c) => c.proc), ...this.servers, ...this.managers].filter((p): p is TandemProc => !!p);
    for (const p of procs) if (p.running()) process.kill(p.pid, "SIGKILL");
    await Promise.allSettled(procs.map((p) => p.exited));
    for (const c of this.clients) c.collect();
    await this.nc.close().catch(() => {});
    if (this.cluster) await this.cluster.cleanup().catch(() => {});
    else await this.ns.cleanup().catch(() => {});
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Logs of every process, for a failing test's message. */
  logs(tail = 40): string {
    const all = [...this.managers, ...this.servers.filter((s): s is TandemProc => s !== null), ...this.clients.map((c) => c.proc).filter((p): p is TandemProc => p !== null)];
    return all.map((p) => `--- ${p.name}\n${p.stderr().split("\n").slice(-tail).join("\n")}`).join("\n");
  }
}

export async function until(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Stop every deployment still running (a property run fast-check abandoned at its time limit). */
export async function stopAllDeployments(): Promise<void> {
  await Promise.all([...Deployment.live].map((d) => d.stop()));
}
