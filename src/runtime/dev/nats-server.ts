/**
 * A nats-server child process: free loopback port, store directory, killed by its own PID.
 * Used for the embedded default, `tandem nats`, and by the tests as their server helper.
 */
import { pollUntil } from "../backoff.js";
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync } from "node:fs";
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { createServer, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ErrorCode, TandemError } from "../errors.js";
import { natsServerBin } from "./nats-bin.js";

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * n distinct free ports: all held open at once while they are picked, so no two are the same
 * (freePort() called n times can return a port twice once the first is closed again).
 */
export async function freePorts(n: number): Promise<number[]> {
  const servers = Array.from({ length: n }, () => createServer());
  try {
    return await Promise.all(
      servers.map(
        (srv) =>
          new Promise<number>((resolve, reject) => {
            srv.unref();
            srv.on("error", reject);
            srv.listen(0, "127.0.0.1", () => {
              const addr = srv.address();
              resolve(typeof addr === "object" && addr ? addr.port : 0);
            });
          }),
      ),
    );
  } finally {
    await Promise.all(servers.map((srv) => new Promise<void>((r) => (srv.listening ? srv.close(() => r()) : r()))));
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcpConnect({ port, host: "127.0.0.1" });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** `--sync`: nats-server's `jetstream { sync_interval }`: "always" (fsync per write) or a duration. */
export function parseSync(v: string): string {
  if (v === "always" || /^[1-9][0-9]*(ms|s|m|h)$/.test(v)) return v;
  throw new TandemError(ErrorCode.Config, `--sync must be "always" or a duration such as 100ms, 1s, 2m (got "${v}")`, { context: { flag: "--sync" } });
}

/**
 * One nats-server config for what has no command-line flag: the fsync policy, and the users of
 * a secured deployment (nats-server takes one -c, so both go into one file). Null when neither.
 */
export function serverConfig(opts: { sync?: string | undefined; authConf?: string | undefined }): string | null {
  const parts: string[] = [];
  if (opts.authConf) parts.push(opts.authConf);
  if (opts.sync) parts.push(`jetstream { sync_interval: ${JSON.stringify(opts.sync)} }`);
  return parts.length ? `${parts.join("\n")}\n` : null;
}

export interface NatsServerOptions {
  /** Store directory; default a new temporary directory (removed by cleanup()). */
  storeDir?: string;
  port?: number;
  /** Extra command-line arguments. */
  args?: string[];
  /** Config file text (see serverConfig), written beside the store and given with -c. */
  config?: string | null;
  /** How long to wait for the server to accept connections. */
  startTimeoutMs?: number;
  /** HTTP monitoring port (nats-server -m: /varz, /jsz, /connz). */
  monitorPort?: number;
  /**
   * Outlive this process: its own process group, its output in `<storeDir>/nats-server.log`,
   * not killed when this process exits (the shared embedded server of a data directory).
   */
  detached?: boolean;
}

/** Servers this process started: killed if the process exits without stopping them. */
const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const c of live) {
    try {
      c.kill("SIGKILL");
    } catch {
      /* gone */
    }
  }
});

export class NatsServer {
  private child: ChildProcess | undefined;
  private readonly ownsDir: boolean;
  private stderrTail = "";

  private constructor(
    readonly storeDir: string,
    readonly port: number,
    private readonly args: string[],
    ownsDir: boolean,
    private readonly startTimeoutMs: number,
    private readonly detached: boolean,
  ) {
    this.ownsDir = ownsDir;
  }

  static async start(opts: NatsServerOptions = {}): Promise<NatsServer> {
    const ownsDir = opts.storeDir === undefined;
    const dir = opts.storeDir ?? (await mkdtemp(join(tmpdir(), "tandem-nats-")));
    await mkdir(dir, { recursive: true });
    const port = opts.port ?? (await freePort());
    const args = [...(opts.args ?? [])];
    if (opts.config) {
      const file = join(dir, "tandem-nats.conf");
      await writeFile(file, opts.config, { mode: 0o600 });
      args.push("-c", file);
    }
    if (opts.monitorPort !== undefined) args.push("-m", String(opts.monitorPort));
    const s = new NatsServer(dir, port, args, ownsDir, opts.startTimeoutMs ?? 15_000, opts.detached === true);
    await s.spawn();
    return s;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  private async spawn(): Promise<void> {
    const args = ["-js", "-a", "127.0.0.1", "-p", String(this.port), "-sd", this.storeDir, ...this.args];
    let child: ChildProcess;
    const logFile = join(this.storeDir, "nats-server.log");
    const logFd = this.detached ? openSync(logFile, "a") : undefined;
    try {
      child = logFd !== undefined
        ? spawn(natsServerBin(), args, { stdio: ["ignore", "ignore", logFd], detached: true })
        : spawn(natsServerBin(), args, { stdio: ["ignore", "ignore", "pipe"] });
    } catch (err) {
      throw missing(err);
    } finally {
      if (logFd !== undefined) closeSync(logFd);
    }
    this.child = child;
    this.stderrTail = "";
    if (this.detached) {
      child.unref();
    } else {
      live.add(child);
      child.once("exit", () => live.delete(child));
      child.stderr?.on("data", (d: Buffer) => {
        this.stderrTail = (this.stderrTail + d.toString()).slice(-4000);
      });
    }
    const spawnError = new Promise<never>((_, reject) => child.once("error", (e) => reject(missing(e))));
    spawnError.catch(() => {});
    const exited = () => child.exitCode !== null || child.signalCode !== null;
    const up = await pollUntil(
      async () => {
        if (exited()) throw new Error("nats-server exited");
        return Promise.race([canConnect(this.port), spawnError]);
      },
      `nats-server on port ${this.port}`,
      this.startTimeoutMs,
      25,
    ).then(
      () => true,
      (err: unknown) => {
        if (err instanceof TandemError) throw err; // not installed
        return false;
      },
    );
    if (up) return;
    this.kill();
    if (this.detached) this.stderrTail = existsSync(logFile) ? readFileSync(logFile, "utf8").slice(-4000) : "";
    throw new TandemError(
      ErrorCode.NatsServer,
      `nats-server did not start on port ${this.port}: ${this.stderrTail.trim().split("\n").slice(-3).join(" | ") || "no output"}`,
      { context: { port: this.port, storeDir: this.storeDir } },
    );
  }

  /** SIGKILL the server (fault injection); the store stays for restart(). */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    const exited = new Promise((r) => child.once("exit", r));
    this.kill();
    await exited;
  }

  /** Graceful stop: SIGTERM, then SIGKILL after a grace period. */
  async shutdown(graceMs = 3000): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    const t = setTimeout(() => this.kill(), graceMs);
    await exited;
    clearTimeout(t);
  }

  private kill(): void {
    if (this.child?.pid !== undefined && this.running) {
      try {
        process.kill(this.child.pid, "SIGKILL");
      } catch {
        /* already gone */
      }
    }
  }

  /** Start again on the same port and store directory. */
  async restart(): Promise<void> {
    await this.stop();
    await this.spawn();
  }

  async cleanup(): Promise<void> {
    await this.stop();
    if (this.ownsDir) await rm(this.storeDir, { recursive: true, force: true });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.cleanup();
  }
}

/**
 * Stop a nats-server by its PID (one that another process started, detached): SIGTERM, then
 * SIGKILL after graceMs. False when no such process was running.
 */
export async function stopPid(pid: number, graceMs = 5000): Promise<boolean> {
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  if (!alive()) return false;
  process.kill(pid, "SIGTERM");
  const until = Date.now() + graceMs;
  while (alive() && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  if (alive()) process.kill(pid, "SIGKILL");
  return true;
}

/** The port if nothing listens on it on 127.0.0.1, else a free one. */
export async function portOr(preferred: number): Promise<number> {
  const free = await new Promise<boolean>((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", () => resolve(false));
    srv.listen(preferred, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
  return free ? preferred : freePort();
}

function missing(err: unknown): TandemError {
  return new TandemError(
    ErrorCode.NatsServer,
    `nats-server could not be started (looked for ${natsServerBin()}); run \`npx tandem setup\` (in a checkout: \`npm run setup\`), which puts one into .tools/bin, or set NATS_SERVER_BIN`,
    { cause: err },
  );
}
