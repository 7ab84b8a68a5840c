/**
 * `tandem setup`: put nats-server 2.15.2 (and, with --with-cli, the NATS CLI) where Tandem
 * looks first, the package's own `.tools/bin`. The same script as the checkout's `npm run setup`,
 * shipped in the package so that an app that installed Tandem can run it too.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { fail, parse } from "./kit.js";

export const HELP = `Usage: tandem setup [--with-cli]

Makes sure a current nats-server (2.15.2; at least 2.12) is in the package's .tools/bin, where
every tandem process looks first: one on PATH that is new enough is linked, otherwise it is built
with Go (\`go install\`, about 3 min on a cold Go cache), otherwise Debian's package is unpacked
there. Not needed when NATS_URL points at a nats-server of your own.
  --with-cli     the NATS CLI too (natscli 0.5.0, \`nats\`), for tracing messages`;

export async function cmdSetup(argv: string[]): Promise<void> {
  const v = parse("setup", HELP, argv, { "with-cli": { type: "boolean" } });
  // dist/apps/cli/ and src/apps/cli/ are both three levels below the package root.
  const script = join(resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", ".."), "scripts", "ensure-nats.mjs");
  if (!existsSync(script)) fail(`the setup script is missing (${script}); reinstall the package`, 1);
  const r = spawnSync(process.execPath, [script, ...(v["with-cli"] === true ? ["--with-cli"] : [])], { stdio: "inherit" });
  process.exitCode = r.status ?? 1;
}
