/**
 * Where the NATS tools are: the project's own `.tools/bin` (filled by `npm run setup`), then
 * PATH. The setup builds pinned versions there (nats-server 2.15.2, natscli 0.5.0) so that no
 * process picks up an older system package by accident. `NATS_SERVER_BIN` / `NATS_CLI_BIN`
 * override both.
 */
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** `src/runtime/dev/` and `dist/runtime/dev/` are both three levels below the package root. */
export const TOOLS_BIN = join(resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", ".."), ".tools", "bin");

/** The oldest nats-server Tandem runs on (message tracing, TTLs, atomic batches: 2.12). */
export const NATS_SERVER_FLOOR = [2, 12, 0] as const;

function find(name: string, override: string | undefined): string {
  if (override) return override;
  const local = join(TOOLS_BIN, name);
  return existsSync(local) ? local : name;
}

export function natsServerBin(): string {
  return find("nats-server", process.env.NATS_SERVER_BIN);
}

export function natsCliBin(): string {
  return find("nats", process.env.NATS_CLI_BIN);
}

/** "2.15.2" -> [2, 15, 2]; null when it does not read as a version. */
export function parseVersion(v: string | undefined): [number, number, number] | null {
  const m = /(\d+)\.(\d+)\.(\d+)/.exec(v ?? "");
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null;
}

export function atLeast(v: readonly number[], floor: readonly number[]): boolean {
  for (let i = 0; i < floor.length; i++) if (v[i] !== floor[i]) return (v[i] ?? 0) > (floor[i] ?? 0);
  return true;
}
