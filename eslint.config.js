import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", ".tandem/", "bench-results/"] },
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/no-explicit-any": "error",
    },
  },
  {
    // Machines are data: no NATS, no logging, no node: imports (DESIGN.md §1).
    files: ["src/machines/**/*.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        { patterns: [{ group: ["@nats-io/*", "pino", "pino-*", "node:*"], message: "src/machines must stay pure: inject effects with machine.provide()" }] },
      ],
    },
  },
);
