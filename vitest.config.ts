import { defineConfig } from "vitest/config";

/**
 * Two projects. `unit`: pure logic and loopback servers, no privileges — `npx vitest run --project
 * unit` runs as any user in seconds. `system`: what needs root or a whole machine — network
 * namespaces, real iptables, raw ICMP sockets, Chromium, the end-to-end worlds and the benches'
 * checks. `make test` (and `npx vitest run`) runs both.
 */
const SYSTEM_TESTS = [
  "test/e2e/**/*.test.ts",
  "test/world/**/*.test.ts",
  "test/bench/**/*.test.ts",
  "test/workload/**/*.test.ts",
  "init-container/iptables.test.ts",
  "init-container/ebpf.test.ts",
  "agent/sys/linux.test.ts",
  "agent/control/probes.test.ts",
  "controller/ui/dashboard-page.test.ts",
  "controller/ui/observe-page.test.ts",
  "deploy/**/*.test.ts",
  "controller/store/file-store-crash.test.ts",
];
const IGNORED = ["node_modules/**", ".tools/**", "dist/**"];

export default defineConfig({
  test: {
    pool: "forks",
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: [
      {
        extends: true,
        // Nothing here shares a machine-wide resource, so files run side by side.
        test: {
          name: "unit",
          include: ["**/*.test.ts"],
          exclude: [...IGNORED, ...SYSTEM_TESTS],
          fileParallelism: true,
          // First, and alone: the system tests' timing bounds must not share the cores with them.
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: "system",
          include: SYSTEM_TESTS,
          // They build network namespaces and start processes: one file at a time on a 2-core machine.
          fileParallelism: false,
          sequence: { groupOrder: 1 },
          exclude: IGNORED,
          // Removes what an earlier, killed run left behind; fails the run if this one left anything.
          globalSetup: ["test/world/global-setup.ts"],
        },
      },
    ],
  },
});
