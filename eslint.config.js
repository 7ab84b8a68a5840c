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
  // Layers point down (docs/design.md §1): apps -> actors -> runtime -> machines. Each rule names
  // what a layer may not import; a wrong-way import is a lint error, so a build.
  {
    // Machines are data: no NATS, no logging, no node: imports, and nothing of the layers above.
    files: ["src/machines/**/*.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            { group: ["@nats-io/*", "pino", "pino-*", "node:*"], message: "src/machines must stay pure: inject effects with machine.provide()" },
            { group: ["**/runtime/**", "**/actors/**", "**/apps/**"], message: "src/machines is the bottom layer: it imports only machines" },
          ],
        },
      ],
    },
  },
  {
    files: ["src/runtime/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [{ group: ["**/actors/**", "**/apps/**", "**/index.js"], message: "src/runtime is the process library: it may import machines, never actors or apps" }] }],
    },
  },
  {
    // The public API is the library: the demos and their handlers stay in the applications.
    files: ["src/index.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [{ group: ["./apps/**"], message: "src/index.ts exports the library, not the applications (demos, bench, built-in handlers)" }] }],
    },
  },
  {
    files: ["src/actors/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [{ group: ["**/apps/**", "**/index.js"], message: "src/actors may import runtime and machines, never the applications" }] }],
    },
  },
);
