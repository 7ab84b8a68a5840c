/**
 * What the demos share: a fresh directory with an embedded nats-server, `tandem` processes
 * whose pino logs go to files there, the primary manager's status read through the CLI, and
 * terminal styling.
 */
import { pollUntil } from "../runtime/backoff.js";
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, mkdirSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { NatsServer } from "../runtime/dev/nats-server.js";

const CLI = fileURLToPath(new URL("./cli.js", import.meta.url));

export const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
export const dim = (s: string) => (process.stdout.isTTY ? `\x1b[2m${s}\x1b[0m` : s);
export const say = (s = "") => process.stdout.write(`${s}\n`);

export interface DemoProc {
  name: string;
  child: ChildProcess;
}

export class DemoStage {
  readonly procs: DemoProc[] = [];
  readonly env: NodeJS.ProcessEnv;

  private constructor(
    readonly dir: string,
    readonly nats: NatsServer,
  ) {
    this.env = { ...process.env, NATS_URL: nats.url, TANDEM_LOG_JSON: "1", TANDEM_LOG_LEVEL: "info" };
  }

  /** A fresh `.tandem/<name>` with its own nats-server; Ctrl-C ends everything. */
  static async open(name: string): Promise<DemoStage> {
    const dir = resolve(".tandem", name);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(join(dir, "logs"), { recursive: true });
    const stage = new DemoStage(dir, await NatsServer.start({ storeDir: join(dir, "nats") }));
    process.once("SIGINT", () => void stage.kill().finally(() => process.exit(130)));
    return stage;
  }

  get logs(): string {
    return join(this.dir, "logs");
  }

  /** Run `tandem <args>`; its stderr (the logs) goes to logs/<name>.log, stdout stays readable. */
  start(name: string, args: string[]): ChildProcess {
    const child = spawn(process.execPath, [CLI, ...args], { env: this.env, stdio: ["ignore", "pipe", "pipe"] });
    child.stderr!.pipe(createWriteStream(join(this.logs, `${name}.log`)));
    this.procs.push({ name, child });
    return child;
  }

  find(name: string): DemoProc | undefined {
    return this.procs.find((p) => p.name === name);
  }

  /** The primary manager's status (`tandem status --json`), or null while there is none. */
  async status<T>(): Promise<T | null> {
    const out = await new Promise<string>((res) => {
      const c = spawn(process.execPath, [CLI, "status", "--json"], { env: { ...this.env, TANDEM_LOG_LEVEL: "error" }, stdio: ["ignore", "pipe", "ignore"] });
      let s = "";
      c.stdout!.on("data", (d) => (s += d));
      c.once("exit", () => res(s));
    });
    try {
      return JSON.parse(out) as T;
    } catch {
      return null;
    }
  }

  /** Wait (30 s at most) until the status satisfies `ok`. */
  async waitFor<T>(ok: (st: T) => boolean): Promise<void> {
    await pollUntil(async () => {
      const st = await this.status<T>();
      return st !== null && st !== undefined && ok(st);
    }, "the deployment", 30_000, 200).catch(() => {
      throw new Error(`the deployment did not come up within 30 s; see ${this.logs}`);
    });
  }

  /** Drain: servers and clients first (SIGTERM), managers after, then whatever is left. */
  async stop(): Promise<void> {
    for (const p of this.procs) if (!p.name.startsWith("manager") && p.child.exitCode === null) p.child.kill("SIGTERM");
    for (const p of this.procs) if (p.name.startsWith("manager") && p.child.exitCode === null) p.child.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 300));
    await this.kill();
  }

  async kill(): Promise<void> {
    for (const p of this.procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
    await this.nats.cleanup();
  }
}
