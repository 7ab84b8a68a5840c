/**
 * `tandem manager`: run a manager node.
 * Its flags and help are declared here together; the common settings, parsing and runtime
 * come from the kit.
 */
import { ManagerNode } from "../../actors/manager.js";
import { createLogger } from "../../runtime/logger.js";
import { parse, configFrom, untilSignal, runtime } from "./kit.js";

export const HELP = `Usage: tandem manager [options]

Runs a manager node. Without a lease holder it becomes primary; otherwise it waits as standby
and takes over when the primary's lease runs out.`;

export async function cmdManager(argv: string[]): Promise<void> {
  const v = parse("manager", HELP, argv, {});
  const cfg = configFrom(v);
  const log = createLogger({ level: cfg.logLevel, name: `manager ${cfg.node}` });
  const rt = await runtime(cfg, log, `tandem-manager-${cfg.node}`, "manager");
  const node = new ManagerNode(rt);
  node.start();
  log.info({ node: cfg.node }, "manager node started");
  await untilSignal(log, async () => {
    await node.stop();
    await rt.close();
  });
}
