/**
 * The README's "Tandem in your own app", run as written in a new directory: the package packed
 * from this checkout and installed from the tarball, `npx tandem` from it, no NATS_URL (the
 * first process starts the directory's shared nats-server, the others find it), the two files
 * from the README, and a strict TypeScript app type-checked against the shipped typings.
 */
import { afterAll, describe, expect, it } from "vitest";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const root = fileURLToPath(new URL("../..", import.meta.url));
const run = promisify(execFile);

function block(readme: string, name: string): string {
  const at = readme.indexOf(`<!-- quickstart:start ${name} -->`);
  expect(at, `README has the quickstart block "${name}"`).toBeGreaterThanOrEqual(0);
  const m = /```\w+\n([\s\S]*?)```\s*<!-- quickstart:end -->/.exec(readme.slice(at));
  expect(m).not.toBeNull();
  return m![1]!;
}

const background: ChildProcess[] = [];
const dir = mkdtempSync(join(tmpdir(), "tandem-quickstart-"));

function killGroup(c: ChildProcess): void {
  try {
    process.kill(-c.pid!, "SIGTERM");
  } catch {
    /* gone */
  }
}

afterAll(() => {
  for (const c of background) {
    try {
      process.kill(-c.pid!, "SIGKILL");
    } catch {
      /* gone */
    }
  }
  const d = join(dir, ".tandem", "nats.json");
  if (existsSync(d)) {
    try {
      process.kill((JSON.parse(readFileSync(d, "utf8")) as { pid: number }).pid, "SIGKILL");
    } catch {
      /* gone */
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

describe("README: Tandem in your own app", () => {
  it("installs from a packed tarball, runs as written, and its typings satisfy a strict app", async () => {
    const readme = readFileSync(join(root, "README.md"), "utf8");
    // dist/ is built by the global setup; packing again would only rebuild it (`prepare`).
    await run("npm", ["pack", "--silent", "--ignore-scripts", "--pack-destination", dir], { cwd: root, timeout: 120_000 });
    writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "my-app", private: true, type: "module" }));
    writeFileSync(join(dir, "server.mjs"), block(readme, "server.mjs"));
    writeFileSync(join(dir, "client.mjs"), block(readme, "client.mjs"));
    // A user whose nats-server is on PATH (`tandem setup` links it); no NATS_URL.
    const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${join(root, ".tools", "bin")}:${process.env.PATH}`, npm_config_prefer_offline: "true" };
    delete env.NATS_URL;
    delete env.TANDEM_DATA_DIR;
    let printed = "";
    for (const raw of block(readme, "sh").split("\n")) {
      const line = raw.replace(/\s+#.*$/, "").trim();
      if (!line) continue;
      if (line.startsWith("kill ")) {
        background.forEach(killGroup);
        continue;
      }
      if (line.endsWith("&")) {
        background.push(spawn("sh", ["-c", line.slice(0, -1)], { cwd: dir, env, detached: true, stdio: "ignore" }));
        continue;
      }
      const { stdout } = await run("sh", ["-c", line], { cwd: dir, env, timeout: 120_000 });
      if (line === "node client.mjs") printed = stdout.trim();
      if (line === "npx tandem --version") expect(stdout).toMatch(/^tandem \d/);
    }
    expect(printed).toBe("hello, Ada");
    // `tandem nats --stop` ended the shared server that the first process started.
    expect(existsSync(join(dir, ".tandem", "nats.json"))).toBe(false);

    const { stdout: version } = await run("npx", ["tandem", "--version"], { cwd: dir, env });
    expect(version.trim()).toBe(`tandem ${(JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string }).version}`);

    writeFileSync(
      join(dir, "app.ts"),
      `import { connect, TandemClient, TandemError, type Response } from "tandem";
const rt = await connect({ name: "typed" });
const client = await TandemClient.connect(rt, { id: "typed" });
const session = await client.open("greet");
const r: unknown = await session.request({ name: "Ada" });
const code: string | undefined = r instanceof TandemError ? r.code : undefined;
export type R = Response;
console.log(r, code);
`,
    );
    writeFileSync(
      join(dir, "tsconfig.json"),
      JSON.stringify({ compilerOptions: { strict: true, module: "nodenext", target: "es2022", noEmit: true, skipLibCheck: false }, files: ["app.ts"] }),
    );
    const tsc = await run(process.execPath, [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", "."], { cwd: dir }).then(
      () => "",
      (e: { stdout?: string }) => e.stdout ?? String(e),
    );
    expect(tsc).toBe("");
  }, 240_000);
});
