/**
 * What every `tandem` command shares: the common flags and their help (from the settings
 * table), parsing, settings, failing with a message, draining on a signal, the runtime.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { configFromEnv, resolveConfig, type Config } from "../../runtime/config.js";
import { flagHelp, SETTINGS } from "../../runtime/settings.js";
import { TandemError } from "../../runtime/errors.js";
import type { Logger } from "../../runtime/logger.js";
import type { AuthUser } from "../../runtime/dev/auth.js";
import { startRuntime, type Runtime } from "../../runtime/runtime.js";

export type Options = NonNullable<ParseArgsConfig["options"]>;

// The flags every command takes, and their help, from the one settings table (settings.ts).
export const COMMON: Options = {
  ...Object.fromEntries(SETTINGS.filter((x) => x.flag).map((x) => [x.flag!, { type: "string" as const }])),
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
};

export const COMMON_HELP = `
Common options (flags override the environment variables; README: Configuration):
${flagHelp()}`;

export function fail(msg: string, code = 2): never {
  process.stderr.write(`tandem: ${msg}\n`);
  process.exit(code);
}

export function parse(cmd: string, help: string, argv: string[], extra: Options) {
  try {
    const r = parseArgs({ args: argv, options: { ...COMMON, ...extra }, allowPositionals: false, strict: true });
    if (r.values.help) {
      process.stdout.write(`${help}\n${COMMON_HELP}\n`);
      process.exit(0);
    }
    exitIfVersion(r.values);
    return r.values as Record<string, string | boolean | undefined>;
  } catch (err) {
    fail(`${(err as Error).message}\nRun \`tandem ${cmd} --help\` for usage.`);
  }
}

export function configFrom(v: Record<string, string | boolean | undefined>): Config {
  const flags = Object.fromEntries(SETTINGS.filter((x) => x.flag && typeof v[x.flag] === "string").map((x) => [x.key, v[x.flag!] as string]));
  try {
    return resolveConfig(configFromEnv(), flags);
  } catch (err) {
    fail((err as Error).message);
  }
}

export function int(v: string | boolean | undefined, name: string, dflt: number, min = 0): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) fail(`--${name} must be an integer >= ${min} (got ${String(v)})`);
  return n;
}

/** Run until SIGINT/SIGTERM, then drain with `stop`; a second signal exits at once. */
export function untilSignal(log: Logger, stop: () => Promise<void>): Promise<void> {
  return new Promise((resolveDone) => {
    let stopping = false;
    const onSignal = (sig: string) => {
      if (stopping) {
        log.warn({ signal: sig }, "second signal: exiting without draining");
        process.exit(130);
      }
      stopping = true;
      log.info({ signal: sig }, "draining (send the signal again to exit at once)");
      stop()
        .catch((err) => log.error({ err }, "drain failed"))
        .finally(() => resolveDone());
    };
    process.on("SIGINT", () => onSignal("SIGINT"));
    process.on("SIGTERM", () => onSignal("SIGTERM"));
  });
}

/**
 * `role`: the manager provisions; "reader" is a command that looks at a deployment (status,
 * trace, dlq): it never starts an embedded nats-server of its own, it says none is running.
 */
export async function runtime(cfg: Config, log: Logger, name: string, role: "manager" | "other" | "reader" = "other"): Promise<Runtime> {
  try {
    // With a NATS user (a secured deployment) only the manager creates streams and buckets.
    return await startRuntime(cfg, { logger: log, name, provision: role === "manager" || !cfg.natsUser, embedded: role !== "reader" });
  } catch (err) {
    if (err instanceof TandemError) fail(`${err.message}`, 1);
    throw err;
  }
}

export function authDir(cfg: Config, dir?: string): string {
  return dir ?? join(resolve(cfg.dataDir), "auth");
}

export function adminAuth(cfg: Config, dir?: string): { user?: string; pass?: string } {
  try {
    const users = JSON.parse(readFileSync(join(authDir(cfg, dir), "users.json"), "utf8")) as AuthUser[];
    const admin = users.find((u) => u.user === "admin");
    return admin ? { user: admin.user, pass: admin.password } : {};
  } catch {
    return {};
  }
}

/** The package's version (package.json, two levels above this file in src/ and in dist/). */
export function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version?: string }).version ?? "unknown";
  } catch {
    return "unknown";
  }
}

/** `--version` on any command: print it and exit. */
export function exitIfVersion(values: Record<string, unknown>): void {
  if (values.version !== true) return;
  process.stdout.write(`tandem ${packageVersion()}\n`);
  process.exit(0);
}
