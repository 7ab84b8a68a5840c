/**
 * Real Tandem processes for fault tests: the CLI as child processes, JSON lines collected from
 * stdout, logs kept for failures, ended by their own PIDs (SIGKILL for faults).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

export const CLI = fileURLToPath(new URL("../../dist/apps/cli.js", import.meta.url));

export interface TandemProc {
  name: string;
  child: ChildProcess;
  pid: number;
  lines: Array<Record<string, unknown>>;
  stderr: () => string;
  exited: Promise<number | null>;
  running: () => boolean;
  kill: (signal?: NodeJS.Signals) => Promise<void>;
}

const all = new Set<TandemProc>();
// A test process that ends (or a worker torn down) takes its processes with it.
process.once("exit", () => {
  for (const p of all) {
    try {
      process.kill(p.pid, "SIGKILL");
    } catch {
      /* gone */
    }
  }
});

export function tandem(name: string, args: string[], env: Record<string, string>): TandemProc {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, TANDEM_LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: Array<Record<string, unknown>> = [];
  let err = "";
  createInterface({ input: child.stdout! }).on("line", (l) => {
    try {
      // _at: when the test saw it, for takeover timings.
      lines.push({ ...(JSON.parse(l) as Record<string, unknown>), _at: performance.now() });
    } catch {
      /* not a JSON line */
    }
  });
  child.stderr!.on("data", (d: Buffer) => {
    err = (err + d.toString()).slice(-200_000);
  });
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const p: TandemProc = {
    name,
    child,
    pid: child.pid!,
    lines,
    stderr: () => err,
    exited,
    running: () => child.exitCode === null && child.signalCode === null,
    kill: async (signal = "SIGKILL") => {
      if (!p.running()) return;
      process.kill(p.pid, signal);
      if (signal === "SIGKILL" || signal === "SIGTERM" || signal === "SIGINT") await exited;
    },
  };
  all.add(p);
  void exited.then(() => all.delete(p));
  return p;
}

/** SIGKILL every process the tests started that is still running. */
export async function killAll(): Promise<void> {
  await Promise.all([...all].map((p) => p.kill("SIGKILL")));
}

export function logLines(p: TandemProc): Array<Record<string, unknown>> {
  return p
    .stderr()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return {};
      }
    });
}
