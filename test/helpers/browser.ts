/**
 * Headless Chromium for the dashboard's test: Debian's package (scripts/ensure-chromium.mjs),
 * driven by playwright-core, with the flags a root sandbox-less container needs.
 */
import { existsSync } from "node:fs";
import { chromium, type Browser } from "playwright-core";

export function chromiumPath(): string {
  const p = [process.env.CHROMIUM_BIN, "/usr/bin/chromium", "/usr/bin/chromium-browser"].find((x): x is string => !!x && existsSync(x));
  if (!p) throw new Error("no Chromium: run `node scripts/ensure-chromium.mjs` (npm test does), or set CHROMIUM_BIN");
  return p;
}

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: chromiumPath(), headless: true, args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"] });
}
