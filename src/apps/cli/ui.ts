/**
 * `tandem ui`: the live dashboard in a browser. Its flags and help are declared here together;
 * the common settings, parsing and runtime come from the kit.
 */
import { Dashboard } from "../dashboard/server.js";
import { createLogger } from "../../runtime/logger.js";
import { configFrom, int, parse, runtime, untilSignal } from "./kit.js";

export const HELP = `Usage: tandem ui [--port N] [--host H]

Serves the live dashboard: the primary manager, its epoch and standbys with their backup age,
a timeline of takeovers, services and servers with liveness and load, sessions with pending
and in-flight work, the last minute of throughput and latency, the dead-letter stream with show
and replay, and a session's trace. It reads through the manager's status subject with this
command's NATS user (in a secured deployment: admin), once a second.
  --port N       HTTP port (default 7222; 0 for a free one)
  --host H       address to listen on (default 127.0.0.1: this machine only)`;

export async function cmdUi(argv: string[]): Promise<void> {
  const v = parse("ui", HELP, argv, { port: { type: "string" }, host: { type: "string" } });
  const cfg = configFrom(v);
  const log = createLogger({ level: cfg.logLevel, name: "ui" });
  const rt = await runtime(cfg, log, "tandem-ui", "reader");
  const ui = await Dashboard.start(rt, { port: int(v.port, "port", 7222, 0), ...(typeof v.host === "string" ? { host: v.host } : {}) });
  log.info({ url: ui.url }, `dashboard on ${ui.url}`);
  process.stdout.write(`${ui.url}\n`);
  await untilSignal(log, async () => {
    await ui.close();
    await rt.close();
  });
}
