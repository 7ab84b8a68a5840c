/**
 * One settings table (issue 12, item 5): the README's configuration table, the defaults, the
 * environment variables, the flags and the validation all come from src/runtime/settings.ts.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { configFromEnv, DEFAULTS, resolveConfig } from "../../src/runtime/config.js";
import { SETTINGS, settingsTable } from "../../src/runtime/settings.js";

describe("the settings table", () => {
  it("is the README's configuration table", () => {
    const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
    const m = /<!-- settings:start -->\n([\s\S]*?)\n<!-- settings:end -->/.exec(readme);
    expect(m?.[1]).toBe(settingsTable());
  });

  it("gives every setting its default, environment variable and bounds", () => {
    for (const s of SETTINGS) {
      if (s.default !== null) expect((DEFAULTS as unknown as Record<string, unknown>)[s.key]).toEqual(s.default);
      if (s.env) expect(configFromEnv({ [s.env]: "7" } as NodeJS.ProcessEnv)[s.key]).toBe("7");
      if (s.kind === "int") {
        // Named as the user gives it: the flag, else the environment variable.
        const name = s.flag ? `--${s.flag}` : (s.env ?? s.key);
        expect(() => resolveConfig({ [s.key]: String((s.min ?? 0) - 1) })).toThrow(`invalid setting ${name}`);
        expect(() => resolveConfig({ [s.key]: "1.5" })).toThrow(/expected an integer/);
      }
    }
  });
});
