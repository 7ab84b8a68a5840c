/**
 * `tandem status`: the primary manager's view, or one session's records.
 * Its flags and help are declared here together; the common settings, parsing and runtime
 * come from the kit.
 */
import type { ManagerStatus } from "../../actors/manager.js";
import { unwrap } from "../../actors/protocol.js";
import { readSessionInfo } from "../../actors/sessionInfo.js";
import { createLogger } from "../../runtime/logger.js";
import { encode } from "../../runtime/wire.js";
import { fail, parse, configFrom, int, runtime } from "./kit.js";
import type { Runtime } from "../../runtime/runtime.js";

export const HELP = `Usage: tandem status [--json] [--session ID] [--watch [MS]] [--count N]

Asks the primary manager for its view: epoch, node, services, sessions and servers.
  --session ID   one session's record and, for hedged requests, which server took which
                 copy and which one won
  --json         one JSON object (with --watch: one line per refresh)
  --watch [MS]   refresh every MS milliseconds (default 1000) until interrupted; a primary that
                 stops answering is shown as such, and the watch goes on until one answers
  --count N      with --watch: stop after N refreshes
Exit codes: 0 found, 1 no primary manager answered, 3 no such session.`;

interface View {
  text: string;
  json: unknown;
  /** The exit code this view says: 0 found, 1 no primary, 3 no such session. */
  code: number;
}

async function sessionView(rt: Runtime, id: string): Promise<View> {
  const info = await readSessionInfo(rt, id);
  const r = info.record;
  const lines = [
    `session   ${info.session}${r ? `  client ${r.client}  service ${r.service}  server ${r.server ?? "-"}` : "  (no record: closed, or never opened)"}`,
    ...(r ? [`queue     requests ${r.lastReq}  answered ${r.answered}  taken ${r.taken}${r.hedge ? `  hedge ${r.hedge.copies} copies after ${r.hedge.after}${typeof r.hedge.after === "number" ? " ms" : ""}` : ""}`] : []),
    ...(info.hedges.length ? ["", "request  winner                        copies (cancelled)                         ms"] : []),
    ...info.hedges.map((h) => `${String(h.n).padStart(7)}  ${(h.winner ?? "-").padEnd(29)} ${h.copies.map((c) => (h.cancelled.includes(c) ? `(${c})` : c)).join(" ").padEnd(42)} ${h.latencyMs}`),
  ];
  // What was found says the exit code: 3 for no such session (as `tandem trace`).
  return { text: lines.join("\n"), json: info, code: r ? 0 : 3 };
}

async function managerView(rt: Runtime): Promise<View> {
  let st: ManagerStatus;
  try {
    const r = await rt.nc.request(rt.names.mgr("status"), encode({}), { timeout: 3000 });
    st = unwrap<ManagerStatus>(r.data);
  } catch (err) {
    const why = `no primary manager answered (${(err as Error).message}); start one with \`tandem manager\`, or check that this is the NATS and --prefix it uses`;
    return { text: why, json: { primary: null, error: why }, code: 1 };
  }
  const lease = await rt.kv.ctl.get("leader").catch(() => null);
  const leaseInfo = lease?.operation === "PUT" ? lease.json<{ epoch: number; node: string; since: string }>() : null;
  const lines = [
    `primary   ${st.node}  epoch ${st.epoch}  since ${st.since ?? "?"}${leaseInfo ? `  (lease renewed ${leaseInfo.since})` : ""}`,
    `standbys  ${st.standbys.length === 0 ? "none" : st.standbys.map((s) => `${s.node} (last backup ${s.lastBackupAgeMs} ms ago)`).join(", ")}`,
    `sessions  ${st.sessions}`,
    "",
    "service              sessions  pending  servers  hedged (extra/requests, learned p95)",
    ...st.services.map(
      (s) =>
        `${s.service.padEnd(20)} ${String(s.sessions).padStart(8)} ${String(s.pending).padStart(8)} ${String(s.servers).padStart(8)}  ${
          s.hedging && s.hedging.extra > 0 ? `${s.hedging.extra}/${s.hedging.requests}, p95 ${s.hedging.p95Ms ?? "-"} ms` : "-"
        }`,
    ),
    "",
    "servers",
    ...st.servers.map((s) => `  ${s.id.padEnd(28)} ${s.service.padEnd(16)} ${s.alive ? "alive" : "lost"}`),
  ];
  return { text: lines.join("\n"), json: { ...st, lease: leaseInfo }, code: 0 };
}

export async function cmdStatus(argv: string[]): Promise<void> {
  // `--watch` takes an optional interval: a bare `--watch` is given its default here.
  const args = argv.flatMap((a, i) => (a === "--watch" && (argv[i + 1] === undefined || argv[i + 1]!.startsWith("-")) ? ["--watch", "1000"] : [a]));
  const v = parse("status", HELP, args, { json: { type: "boolean" }, session: { type: "string" }, watch: { type: "string" }, count: { type: "string" } });
  const cfg = configFrom(v);
  const log = createLogger({ level: cfg.logLevel === "info" ? "warn" : cfg.logLevel });
  const watchMs = v.watch === undefined ? 0 : int(v.watch, "watch", 1000, 100);
  const count = v.count === undefined ? Infinity : int(v.count, "count", 1, 1);
  const rt = await runtime(cfg, log, "tandem-status", "reader");
  const view = () => (typeof v.session === "string" ? sessionView(rt, v.session) : managerView(rt));
  const show = (x: View) => {
    if (v.json) process.stdout.write(`${JSON.stringify(watchMs ? { at: new Date().toISOString(), ...(x.json as object) } : x.json)}\n`);
    else if (watchMs && process.stdout.isTTY) process.stdout.write(`\x1b[H\x1b[2J${new Date().toLocaleTimeString()}  every ${watchMs} ms (Ctrl-C ends)\n\n${x.text}\n`);
    else process.stdout.write(`${watchMs ? `--- ${new Date().toISOString()}\n` : ""}${x.text}\n`);
  };
  if (!watchMs) {
    const x = await view();
    await rt.close();
    if (x.code === 1 && !v.json) fail(x.text, 1);
    show(x);
    process.exitCode = x.code;
    return;
  }
  let stop = false;
  process.once("SIGINT", () => (stop = true));
  process.once("SIGTERM", () => (stop = true));
  let last = 0;
  for (let i = 0; i < count && !stop; i++) {
    const x = await view();
    show(x);
    last = x.code;
    if (i + 1 < count) await sleepUnless(watchMs, () => stop);
  }
  await rt.close();
  process.exitCode = last;
}

async function sleepUnless(ms: number, stopped: () => boolean): Promise<void> {
  const until = Date.now() + ms;
  while (!stopped() && Date.now() < until) await new Promise((r) => setTimeout(r, Math.min(100, until - Date.now())));
}
