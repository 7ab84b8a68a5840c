/**
 * Configuration in stages: DEFAULTS, then environment (TANDEM_*), then flags. `resolveConfig`
 * returns a Config with every field present or throws a TandemError naming the bad setting.
 * Defaults, environment names and bounds all come from the one settings table (settings.ts).
 */
import { ErrorCode, TandemError } from "./errors.js";
import { SETTINGS, type Config } from "./settings.js";

// The Config interface sits beside the table that defines each of its fields.
export type { Config };

/** The defaults, from the settings table (settings.ts). */
export const DEFAULTS = Object.fromEntries(SETTINGS.filter((x) => x.default !== null).map((x) => [x.key, x.default])) as unknown as Omit<Config, "node">;

export function defaultConfig(): Config {
  return { ...DEFAULTS, natsUrls: [...DEFAULTS.natsUrls], node: `${hostnameish()}-${process.pid}` };
}

function hostnameish(): string {
  return (process.env.HOSTNAME ?? "node").replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 32) || "node";
}

/** Environment variable -> setting, from the settings table. */
const ENV: Record<string, keyof Config> = Object.fromEntries(SETTINGS.filter((x) => x.env).map((x) => [x.env!, x.key]));

type Raw = Partial<Record<keyof Config, string | number | string[] | undefined>>;

/** Settings from the environment, as raw strings (validated by resolveConfig). */
export function configFromEnv(env: NodeJS.ProcessEnv = process.env): Raw {
  const out: Raw = {};
  for (const [name, key] of Object.entries(ENV)) {
    const v = env[name];
    if (v !== undefined && v !== "") out[key] = v;
  }
  return out;
}

/** Integer settings with their bounds, from the settings table. */
const NUMERIC: Array<[keyof Config, number, number]> = SETTINGS.filter((x) => x.kind === "int").map((x) => [x.key, x.min ?? 0, x.max ?? Number.MAX_SAFE_INTEGER]);

/** A bad setting, named as the user gives it: its flag and environment variable (the settings table). */
function bad(setting: string, why: string): TandemError {
  const row = SETTINGS.find((x) => x.key === setting);
  const names = row ? [row.flag ? `--${row.flag}` : null, row.env ?? null].filter((x): x is string => x !== null) : [];
  const shown = names.length ? names.join(" / ") : setting;
  return new TandemError(ErrorCode.Config, `invalid setting ${shown}: ${why}`, {
    context: { setting, ...(row?.flag ? { flag: `--${row.flag}` } : {}), ...(row?.env ? { env: row.env } : {}) },
  });
}

/** Merge layers (later wins) over the defaults and validate. */
export function resolveConfig(...layers: Raw[]): Config {
  const cfg = defaultConfig() as unknown as Record<string, unknown>;
  for (const layer of layers) {
    for (const [k, v] of Object.entries(layer)) if (v !== undefined) cfg[k] = v;
  }
  if (typeof cfg.natsUrls === "string") {
    cfg.natsUrls = cfg.natsUrls
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
  }
  if (!Array.isArray(cfg.natsUrls)) throw bad("natsUrls", "expected a comma-separated list of URLs");
  for (const [key, min, max] of NUMERIC) {
    const raw = cfg[key];
    const n = typeof raw === "string" ? Number(raw) : raw;
    if (typeof n !== "number" || !Number.isInteger(n)) {
      throw bad(key, `expected an integer, got ${JSON.stringify(raw)}`);
    }
    if (n < min || n > max) throw bad(key, `${n} is outside ${min}..${max}`);
    cfg[key] = n;
  }
  const c = cfg as unknown as Config;
  if (!/^[A-Za-z][A-Za-z0-9_-]{0,31}$/.test(c.prefix)) {
    throw bad("prefix", `"${c.prefix}" must be a letter then up to 31 letters, digits, _ or - (it is a subject token and a stream name stem)`);
  }
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(c.node)) {
    throw bad("node", `"${c.node}" must be 1-64 letters, digits, _ or -`);
  }
  if (c.leaseMs <= c.heartbeatMs * 2) {
    throw bad("leaseMs", `${c.leaseMs} must be more than twice heartbeatMs (${c.heartbeatMs}) or a healthy primary looks dead`);
  }
  if (c.serverTimeoutMs <= c.serverHeartbeatMs * 2) {
    throw bad("serverTimeoutMs", `${c.serverTimeoutMs} must be more than twice serverHeartbeatMs (${c.serverHeartbeatMs})`);
  }
  if (!["fatal", "error", "warn", "info", "debug", "trace", "silent"].includes(c.logLevel)) {
    throw bad("logLevel", `"${c.logLevel}" is not one of fatal, error, warn, info, debug, trace, silent`);
  }
  return c;
}
