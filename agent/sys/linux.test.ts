// The namespace checks the enrollment socket relies on, against real namespaces and files.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { withWorld } from "../../test/world/world.ts";
import { interfaceAddresses, Netns, NotANetworkNamespaceError } from "./linux.ts";

describe("Netns.open", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "nodemesh-netns-"));
    execFileSync("mkfifo", [join(dir, "fifo")]);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("opens a network namespace and names it by its inode", () => {
    const ns = Netns.open("/proc/self/ns/net");
    try {
      expect(ns.inode).toBeGreaterThan(0);
    } finally {
      ns.close();
    }
  });

  it.each([
    ["a regular file", "/etc/passwd"],
    ["a directory", "/run"],
    ["a mount namespace", "/proc/self/ns/mnt"],
    ["a FIFO (refused without opening it, which would block)", "fifo"],
  ])("refuses %s", (_, path) => {
    const full = path.startsWith("/") ? path : join(dir, path);
    expect(() => Netns.open(full)).toThrow(NotANetworkNamespaceError);
  });

  it("reports a path that does not exist as such", () => {
    expect(() => Netns.open(join(dir, "nope"))).toThrow(/ENOENT/);
  });
});

describe("interfaceAddresses", () => {
  it("lists the addresses of the namespace it is given, not the caller's", async () => {
    await withWorld({ nodes: 1 }, async (world) => {
      const pod = await world.addPod(world.nodes[0]!, "addr");
      const ns = Netns.open(pod.netnsPath);
      try {
        // Right after the veth pair was made: listed even before the kernel reports its carrier.
        expect(interfaceAddresses(ns).sort((a, b) => a.interface.localeCompare(b.interface))).toEqual([
          { interface: "eth0", address: pod.ip, loopback: false },
          { interface: "lo", address: "127.0.0.1", loopback: true },
        ]);
      } finally {
        ns.close();
      }
    });
  }, 30_000);
});
