import { defineConfig } from "vitest/config";

// Three projects (STYLE.md §8): unit needs nothing; integration needs Debian's etcd; e2e needs root,
// iproute2, nsenter and the built dist/. `npm test` builds first and runs all three.
// vitest's config entry point must be a default export (the one exception to STYLE.md §4).
export default defineConfig({
  test: {
    root: new URL("..", import.meta.url).pathname,
    reporters: ["default", "./test/summary-reporter.ts"],
    projects: [
      { extends: true, test: { name: "unit", include: ["test/unit/**/*.test.ts"] } },
      {
        extends: true,
        test: { name: "integration", include: ["test/integration/**/*.test.ts"], testTimeout: 60_000, hookTimeout: 60_000 },
      },
      {
        extends: true,
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          // Namespaced clusters are heavy on a 2-core machine: one file at a time.
          fileParallelism: false,
        },
      },
    ],
  },
});
