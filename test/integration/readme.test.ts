import { describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { startNats } from "../helpers/nats.js";

const root = fileURLToPath(new URL("../..", import.meta.url));

describe("README", () => {
  it("the API example runs as written and prints the greeting", async () => {
    const readme = readFileSync(`${root}/README.md`, "utf8");
    const block = /<!-- example:start -->\s*```js\n([\s\S]*?)```\s*<!-- example:end -->/.exec(readme);
    expect(block, "README has the marked example block").not.toBeNull();
    const ns = await startNats();
    try {
      // `import ... from "tandem"` resolves to this package itself (package.json "exports").
      const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", block![1]!], {
        cwd: root,
        env: { ...process.env, NATS_URL: ns.url, TANDEM_LOG_LEVEL: "warn", TANDEM_LOG_JSON: "1" },
        timeout: 30_000,
      });
      expect(stdout.trim()).toBe("hello, Ada");
    } finally {
      await ns.cleanup();
    }
  });
});
