/**
 * `tandem trace`: what happened to a session's requests, from its queues and records.
 * Its flags and help are declared here together; the common settings, parsing and runtime
 * come from the kit.
 */
import { parseArgs } from "node:util";
import { createLogger } from "../../runtime/logger.js";
import { COMMON, COMMON_HELP, fail, configFrom, int, runtime, type Options, exitIfVersion } from "./kit.js";

export const HELP = `Usage: tandem trace SESSION [N] [--json]

What happened to a session's requests (or to request N), read from the session's queues and
records: when each was queued, the checkpoints and the response and which server wrote them,
hedged copies and the winner, and when the client committed its receipt. Times are the ones
JetStream stored. Closed sessions are purged, so only open ones can be traced.
  --json         one JSON object instead of the table`;

export async function cmdTrace(argv: string[]): Promise<void> {
  let positionals: string[];
  let v: Record<string, string | boolean | undefined>;
  try {
    const r = parseArgs({ args: argv, options: { ...COMMON, json: { type: "boolean" } } as Options, allowPositionals: true, strict: true });
    exitIfVersion(r.values);
    if (r.values.help) {
      process.stdout.write(`${HELP}\n${COMMON_HELP}\n`);
      process.exit(0);
    }
    positionals = r.positionals;
    v = r.values as Record<string, string | boolean | undefined>;
  } catch (err) {
    fail(`${(err as Error).message}\nRun \`tandem trace --help\` for usage.`);
  }
  const [session, nText, ...extra] = positionals;
  if (!session || extra.length > 0) fail("usage: tandem trace SESSION [N] [--json]");
  const n = nText === undefined ? undefined : int(nText, "N", 1, 1);
  const cfg = configFrom(v);
  const log = createLogger({ level: cfg.logLevel === "info" ? "warn" : cfg.logLevel });
  const rt = await runtime(cfg, log, "tandem-trace", "reader");
  const { traceSession, formatTrace } = await import("../request-trace.js");
  const t = await traceSession(rt, session, n);
  await rt.close();
  process.stdout.write(`${v.json ? JSON.stringify(t) : formatTrace(t)}\n`);
  if (!t.client) process.exit(3); // no such session
  if (n !== undefined && t.requests.length === 0) process.exit(3);
}
