#!/usr/bin/env node
// Builds the dashboard page (src/apps/dashboard/page) into dist/dashboard with esbuild: one
// script and one style sheet, Preact and uPlot bundled in (no CDN: the page loads nothing from
// elsewhere). Part of `npm run build`, so of the setup, `npm test`, install from git and pack.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const page = join(root, "src", "apps", "dashboard", "page");
const out = join(root, "dist", "dashboard");
mkdirSync(out, { recursive: true });
await build({
  entryPoints: { app: join(page, "main.tsx") },
  outdir: out,
  bundle: true,
  format: "esm",
  minify: true,
  sourcemap: true,
  target: ["chrome110", "firefox110", "safari16"],
  jsx: "automatic",
  jsxImportSource: "preact",
  logLevel: "warning",
});
copyFileSync(join(page, "index.html"), join(out, "index.html"));
