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
import { fail, parse, configFrom, runtime } from "./kit.js";

export const HELP = `Usage: tandem status [--json] [--session ID]

Asks the primary manager for its view: epoch, node, services, sessions and servers.
  --session ID   one session's record and, for hedged requests, which server took which
                 copy and which one won`;

export async function cmdStatus(argv: string[]): Promise<void> {
  const v = parse("status", HELP, argv, { json: { type: "boolean" }, session: { type: "string" } });
  const cfg = configFrom(v);
  const log = createLogger({ level: cfg.logLevel === "info" ? "warn" : cfg.logLevel });
  const rt = await runtime(cfg, log, "tandem-status", "reader");
  if (typeof v.session === "string") {
    const info = await readSessionInfo(rt, v.session);
    if (v.json) process.stdout.write(`${JSON.stringify(info)}\n`);
    else {
      const r = info.record;
      const lines = [
        `session   ${info.session}${r ? `  client ${r.client}  service ${r.service}  server ${r.server ?? "-"}` : "  (no record: closed, or never opened)"}`,
        ...(r ? [`queue     requests ${r.lastReq}  answered ${r.answered}  taken ${r.taken}${r.hedge ? `  hedge ${r.hedge.copies} copies after ${r.hedge.after}${typeof r.hedge.after === "number" ? " ms" : ""}` : ""}`] : []),
        ...(info.hedges.length ? ["", "request  winner                        copies (cancelled)                         ms"] : []),
        ...info.hedges.map((h) => `${String(h.n).padStart(7)}  ${(h.winner ?? "-").padEnd(29)} ${h.copies.map((c) => (h.cancelled.includes(c) ? `(${c})` : c)).join(" ").padEnd(42)} ${h.latencyMs}`),
      ];
      process.stdout.write(`${lines.join("\n")}\n`);
    }
    await rt.close();
    // What was found says the exit code: 3 for no such session (as `tandem trace`).
    if (!info.record) process.exitCode = 3;
    return;
  }
  let st: ManagerStatus;
  try {
    const r = await rt.nc.request(rt.names.mgr("status"), encode({}), { timeout: 3000 });
    st = unwrap<ManagerStatus>(r.data);
  } catch (err) {
    await rt.close();
    fail(`no primary manager answered (${(err as Error).message}); start one with \`tandem manager\``, 1);
  }
  const lease = await rt.kv.ctl.get("leader");
  const leaseInfo = lease?.operation === "PUT" ? lease.json<{ epoch: number; node: string; since: string }>() : null;
  if (v.json) {
    process.stdout.write(`${JSON.stringify({ ...st, lease: leaseInfo })}\n`);
  } else {
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
    process.stdout.write(`${lines.join("\n")}\n`);
  }
  await rt.close();
}
