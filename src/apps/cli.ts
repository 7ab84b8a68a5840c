#!/usr/bin/env node
/**
 * The `tandem` command: one file per command under cli/, loaded when it is run, each with its
 * flags and help (cli/kit.ts has what they share). Every long-running command drains on
 * SIGINT/SIGTERM (a second signal exits at once). Logs go to stderr (pino).
 */
import { TandemError } from "../runtime/errors.js";
import { fail, packageVersion } from "./cli/kit.js";

const MAIN_HELP = `tandem: fault-tolerant work distribution on NATS JetStream

Usage: tandem <command> [options]

Commands:
  demo       a guided demo: manager, two servers, three clients, one server killed midway
  nats       run nats-server with JetStream in the foreground (store under .tandem/nats)
  manager    run a manager node (one primary holds the lease; others stand by)
  server     run a server session for a service with a built-in handler
  client     send requests to a service and report the responses
  status     show the primary manager, services, sessions and servers
  trace      what happened to a session's requests, from its queues and records
  dlq        the dead-letter stream: list, show, replay and purge entries
  auth       write per-role NATS users and permissions (for \`tandem nats --secure\`)
  ui         the live dashboard in a browser (managers, takeovers, services, sessions, DLQ)
  setup      put nats-server (and the NATS CLI) where tandem looks first

Run \`tandem <command> --help\` for its options.`;

async function main(): Promise<void> {
  const [cmd, ...rest] = process.argv.slice(2);
  switch (cmd) {
    case "nats":
      return (await import("./cli/nats.js")).cmdNats(rest);
    case "manager":
      return (await import("./cli/manager.js")).cmdManager(rest);
    case "server":
      return (await import("./cli/server.js")).cmdServer(rest);
    case "client":
      return (await import("./cli/client.js")).cmdClient(rest);
    case "status":
      return (await import("./cli/status.js")).cmdStatus(rest);
    case "auth":
      return (await import("./cli/auth.js")).cmdAuth(rest);
    case "trace":
      return (await import("./cli/trace.js")).cmdTrace(rest);
    case "ui":
      return (await import("./cli/ui.js")).cmdUi(rest);
    case "setup":
      return (await import("./cli/setup.js")).cmdSetup(rest);
    case "dlq":
      return (await import("./cli/dlq.js")).cmdDlq(rest);
    case "demo": {
      const { cmdDemo } = await import("./demo.js");
      return cmdDemo(rest);
    }
    case "--version":
    case "-v":
    case "version":
      process.stdout.write(`tandem ${packageVersion()}\n`);
      return;
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(`${MAIN_HELP}\n`);
      return;
    default:
      fail(`unknown command "${cmd}"\n\n${MAIN_HELP}`);
  }
}

main().then(
  () => process.exit(typeof process.exitCode === "number" ? process.exitCode : 0),
  (err) => {
    process.stderr.write(`tandem: ${err instanceof TandemError ? `${err.code}: ` : ""}${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  },
);
