import { describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { startNats } from "../helpers/nats.js";

const root = fileURLToPath(new URL("../..", import.meta.url));

async function runBlock(name: string): Promise<string> {
  const readme = readFileSync(`${root}/README.md`, "utf8");
  const marker = name === "api" ? "<!-- example:start -->" : `<!-- example:start ${name} -->`;
  const at = readme.indexOf(marker);
  expect(at, `README has the marked example block "${name}"`).toBeGreaterThanOrEqual(0);
  const block = /```js\n([\s\S]*?)```\s*<!-- example:end -->/.exec(readme.slice(at));
  expect(block).not.toBeNull();
  const ns = await startNats();
  try {
    // `import ... from "tandem"` resolves to this package itself (package.json "exports").
    const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", block![1]!], {
      cwd: root,
      env: { ...process.env, NATS_URL: ns.url, TANDEM_LOG_LEVEL: "warn", TANDEM_LOG_JSON: "1" },
      timeout: 30_000,
    });
    return stdout.trim();
  } finally {
    await ns.cleanup();
  }
}

describe("README", () => {
  it("the API example runs as written and prints the greeting", async () => {
    expect(await runBlock("api")).toBe("hello, Ada");
  });

  it("the hedging example runs as written: three updates, each applied once", async () => {
    expect((await runBlock("hedge")).split("\n")).toEqual(["1", "2", "3", "3"]);
  });
});
