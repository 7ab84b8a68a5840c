/**
 * A real PostgreSQL for tests, like the nats-server helper: its own data directory under a
 * temporary directory, a free loopback port, started from Debian's `postgresql` binaries
 * (scripts/ensure-postgres.mjs installs them), killed by its own PID. Running as root, the
 * server runs as the `postgres` user (PostgreSQL refuses root).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { freePort } from "../../src/runtime/dev/nats-server.js";

function binDir(): string {
  const base = "/usr/lib/postgresql";
  const versions = existsSync(base) ? readdirSync(base).filter((v) => existsSync(join(base, v, "bin", "postgres"))) : [];
  if (versions.length === 0) throw new Error("PostgreSQL is not installed: run `node scripts/ensure-postgres.mjs` (apt-get install postgresql)");
  versions.sort((a, b) => Number(b) - Number(a));
  return join(base, versions[0]!, "bin");
}

function runAs(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const r = spawnSync("id", ["-u", "postgres"], { encoding: "utf8" });
  const g = spawnSync("id", ["-g", "postgres"], { encoding: "utf8" });
  if (r.status !== 0) throw new Error("running as root needs the `postgres` user (from the postgresql package)");
  return { uid: Number(r.stdout.trim()), gid: Number(g.stdout.trim()) };
}

export class PgServer {
  private proc: ChildProcess | null = null;
  private constructor(
    readonly dir: string,
    readonly port: number,
    private readonly user: { uid: number; gid: number } | undefined,
  ) {}

  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  static async start(): Promise<PgServer> {
    const user = runAs();
    const dir = mkdtempSync(join(tmpdir(), "tandem-pg-"));
    const data = join(dir, "data");
    if (user) chownSync(dir, user.uid, user.gid);
    const init = spawnSync(join(binDir(), "initdb"), ["-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"], {
      encoding: "utf8",
      ...(user ?? {}),
    });
    if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr}`);
    const s = new PgServer(dir, await freePort(), user);
    await s.launch();
    return s;
  }

  private async launch(): Promise<void> {
    const args = ["-D", join(this.dir, "data"), "-p", String(this.port), "-h", "127.0.0.1", "-k", this.dir];
    for (const c of ["fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=200"]) args.push("-c", c);
    this.proc = spawn(join(binDir(), "postgres"), args, { stdio: "ignore", ...(this.user ?? {}) });
    const deadline = Date.now() + 30_000;
    for (;;) {
      const c = new pg.Client({ connectionString: this.url });
      try {
        await c.connect();
        await c.end();
        return;
      } catch (err) {
        await c.end().catch(() => {});
        if (Date.now() > deadline) throw new Error(`PostgreSQL did not start on port ${this.port}: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** SIGKILL the postmaster (fault injection). */
  kill(): void {
    if (this.proc?.pid) process.kill(this.proc.pid, "SIGKILL");
  }

  async stop(): Promise<void> {
    const p = this.proc;
    this.proc = null;
    if (p?.pid && p.exitCode === null) {
      const gone = new Promise((r) => p.once("exit", r));
      process.kill(p.pid, "SIGQUIT"); // immediate shutdown, children included
      await Promise.race([gone, new Promise((r) => setTimeout(r, 5000))]);
      if (p.exitCode === null) process.kill(p.pid, "SIGKILL");
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
