// Real iptables in throwaway network namespaces (nmi-*): the CLI end to end with --no-enroll,
// the library through `netnsPath`, and a functional check that REDIRECT really happens.
import { describe, expect, it } from "vitest";
import { applyRedirect, restoreTables, saveTables } from "./iptables.ts";
import { AGENT_CONNTRACK_ZONE, buildTables, parseExclusions } from "./rules.ts";
import { connect, init, iptablesSave, serve, sh, withNamespaces } from "./testing/netns.ts";

const EXCLUDE = [
  "--exclude-outbound-ports=8443,9000:9100",
  "--exclude-inbound-ports=9090",
  "--exclude-outbound-cidrs=10.97.0.0/16",
];
const CONFIG = parseExclusions({
  outboundPorts: "8443,9000:9100",
  inboundPorts: "9090",
  outboundCidrs: "10.97.0.0/16",
});

/** Rules of other tools in four tables; they must come through install and uninstall unchanged. */
async function addForeignRules(ns: string): Promise<void> {
  await sh(ns, "iptables -t nat -A OUTPUT -c 7 420 -d 10.1.2.3 -p tcp --dport 53 -j DNAT --to-destination 10.9.9.9");
  await sh(ns, "iptables -t nat -N app-rules && iptables -t nat -A app-rules -j RETURN");
  await sh(ns, "iptables -t raw -A OUTPUT -c 3 180 -p udp --dport 53 -j CT --notrack");
  await sh(ns, "iptables -A INPUT -p tcp --dport 22 -j ACCEPT");
  await sh(ns, "iptables -t mangle -A OUTPUT -p tcp --dport 81 -j MARK --set-xmark 0x539/0xfff");
}

describe.skipIf(process.getuid?.() !== 0)("iptables in a network namespace", () => {
  it("installs idempotently, and iptables-save prints back exactly the table we computed", async () => {
    await withNamespaces(1, async (ns) => {
      await addForeignRules(ns);
      const first = await init(ns, ["--no-enroll", ...EXCLUDE]);
      expect(first.code, first.stderr).toBe(0);
      const once = await iptablesSave(ns);
      const second = await init(ns, ["--no-enroll", ...EXCLUDE]);
      expect(second.code, second.stderr).toBe(0);
      expect(await iptablesSave(ns)).toBe(once);
      // iptables-save normalises nothing in our rules: the dump is already our canonical form.
      const tables = (await iptablesSave(ns, "nat")) + (await iptablesSave(ns, "raw"));
      expect(buildTables(tables, CONFIG)).toBe(tables);
    });
  });

  it("keeps foreign rules, and --uninstall restores the state from before the install", async () => {
    await withNamespaces(1, async (ns) => {
      await addForeignRules(ns);
      const before = await iptablesSave(ns);
      expect((await init(ns, ["--no-enroll", ...EXCLUDE])).code).toBe(0);
      const installed = await iptablesSave(ns);
      for (const line of before.split("\n").filter((l) => l.startsWith("-A"))) expect(installed).toContain(line);
      expect(installed).toContain("-j NODEMESH_OUTPUT");
      // Restoring the whole tables did not reset the other tools' counters.
      expect(await sh(ns, "iptables-save -c -t nat")).toContain("[7:420] -A OUTPUT -d 10.1.2.3/32");
      expect(await sh(ns, "iptables-save -c -t raw")).toContain(
        "[3:180] -A OUTPUT -p udp -m udp --dport 53 -j CT --notrack",
      );

      // Unenrolling from an absent agent is only a warning: the rules are what matters.
      // ... and it does not wait long for it: no --enroll-timeout, the 2 s default for unenrolling.
      const args = ["--uninstall", "--pod-name=web", "--enrollment-socket=/nonexistent.sock"];
      const started = Date.now();
      const uninstall = await init(ns, args, { POD_IP: "10.0.0.9" });
      expect(Date.now() - started).toBeLessThan(6_000);
      expect(uninstall.code, uninstall.stderr).toBe(0);
      expect(uninstall.stderr).toMatch(
        /warning \[agent_unreachable\]: could not unenroll pod default\/web: .*\/nonexistent\.sock within 2 s/,
      );
      expect(await iptablesSave(ns)).toBe(before);
    });
  });

  it("--dry-run prints the table it would restore and changes nothing", async () => {
    await withNamespaces(1, async (ns) => {
      await addForeignRules(ns);
      const before = await iptablesSave(ns);
      // A dry run needs no pod flags (no --pod-name, no --no-enroll).
      const dry = await init(ns, ["--dry-run", ...EXCLUDE]);
      expect(dry.code, dry.stderr).toBe(0);
      // The table is computed from a dump with counters (-c), so other tools' rules keep theirs.
      const dump = (await sh(ns, "iptables-save -c -t nat")) + (await sh(ns, "iptables-save -c -t raw"));
      expect(dry.stdout).toBe(buildTables(dump, CONFIG));
      expect(dry.stdout).toContain("[7:420] -A OUTPUT -d 10.1.2.3/32 -p tcp -m tcp --dport 53 -j DNAT");
      expect(dry.stdout).toContain("-j REDIRECT --to-ports 15001");
      expect(await iptablesSave(ns)).toBe(before);
    });
  });

  it("puts the exclusions in the live rules", async () => {
    await withNamespaces(1, async (ns) => {
      expect((await init(ns, ["--no-enroll", ...EXCLUDE])).code).toBe(0);
      const nat = await iptablesSave(ns, "nat");
      expect(nat).toContain("-A NODEMESH_OUTPUT -p tcp -m tcp --dport 8443 ");
      expect(nat).toContain("-A NODEMESH_OUTPUT -p tcp -m tcp --dport 9000:9100 ");
      expect(nat).toContain("-A NODEMESH_OUTPUT -d 10.97.0.0/16 ");
      expect(nat).toContain("-A NODEMESH_INBOUND -p tcp -m tcp --dport 9090 ");
      expect(nat).toContain("-A NODEMESH_INBOUND -p tcp -m tcp --dport 15008 ");
    });
  });

  it("leaves empty nat and raw tables after install + uninstall in a fresh namespace", async () => {
    await withNamespaces(1, async (ns) => {
      expect((await init(ns, ["--no-enroll"])).code).toBe(0);
      expect((await init(ns, ["--no-enroll", "--uninstall"])).code).toBe(0);
      expect(await iptablesSave(ns, "nat")).toBe(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n",
      );
      expect(await iptablesSave(ns, "raw")).toBe("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n");
    });
  });

  it("keeps the rules and exits 1 when the agent cannot be reached (fail closed)", async () => {
    await withNamespaces(1, async (ns) => {
      const args = [
        "--pod-name=web",
        "--pod-ip=10.0.0.9",
        "--enrollment-socket=/nonexistent.sock",
        "--enroll-timeout=300ms",
      ];
      const r = await init(ns, args);
      expect(r.code).toBe(1);
      const lines = r.stderr.trimEnd().split("\n");
      expect(lines).toHaveLength(3);
      expect(lines[0]).toBe("nodemesh init: redirect rules installed (outbound to :15001, inbound to :15006)");
      expect(lines[1]).toMatch(/error \[agent_unreachable\]: could not enroll pod default\/web: .*\/nonexistent\.sock/);
      // Says plainly that the pod is cut off, and how to undo it.
      expect(lines[2]).toBe(
        "nodemesh init: pod default/web is cut off: its redirect rules stay installed (fail closed), so its " +
          "traffic is blocked until the agent at /nonexistent.sock accepts the pod. Run nodemesh init again once " +
          "the agent is up, or remove the rules with: nodemesh init --uninstall --pod-name web " +
          "--pod-namespace default --enrollment-socket /nonexistent.sock",
      );
      expect(await iptablesSave(ns, "nat")).toContain("-j NODEMESH_OUTPUT");
      // The command it gives does undo it (in a pod, POD_IP comes from the downward API).
      const undo = await init(
        ns,
        ["--uninstall", "--pod-name", "web", "--pod-namespace", "default", "--enrollment-socket", "/nonexistent.sock"],
        { POD_IP: "10.0.0.9" },
      );
      expect(undo.code, undo.stderr).toBe(0);
      expect(await iptablesSave(ns, "nat")).not.toContain("NODEMESH");
    });
  });

  it("library: applies through netnsPath and reports iptables-restore's error with the failing line", async () => {
    await withNamespaces(1, async (ns) => {
      const netnsPath = `/run/netns/${ns}`;
      const { tables } = await applyRedirect(CONFIG, { netnsPath });
      expect(buildTables(await saveTables({ netnsPath }), CONFIG)).toBe(tables);
      const bad = "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p tcp --bogus -j RETURN\nCOMMIT\n";
      await expect(restoreTables(bad, { netnsPath })).rejects.toMatchObject({
        code: "iptables_failed",
        message: expect.stringMatching(
          /iptables-restore -c failed \(exit code 2\): .*unknown option "--bogus".*\n {2}line 3: -A OUTPUT -p tcp --bogus/s,
        ),
      });
      // The failed restore changed nothing.
      expect(buildTables(await saveTables({ netnsPath }), CONFIG)).toBe(tables);
    });
  });

  it("redirects the pod's TCP traffic to the agent's ports, except what is excluded", async () => {
    // pod (10.200.0.2) ──veth── world (10.200.0.1, and 10.96.0.1 + 10.97.0.1 on its loopback)
    await withNamespaces(2, async (pod, world) => {
      await sh(pod, `ip link add vpod type veth peer name vworld netns ${world}`);
      await sh(pod, "ip addr add 10.200.0.2/24 dev vpod && ip link set vpod up && ip route add default via 10.200.0.1");
      await sh(world, "ip addr add 10.200.0.1/24 dev vworld && ip link set vworld up");
      await sh(world, "ip addr add 10.96.0.1/32 dev lo && ip addr add 10.97.0.1/32 dev lo");
      await addForeignRules(pod); // includes: mangle marks dport 81 with 0x539, as the agent's sockets are

      const agent = await serve(pod, {
        15001: "agent-outbound",
        15006: "agent-inbound",
        15008: "agent-tunnel",
        8080: "app-8080",
        9090: "app-9090",
      });
      const remote = await serve(world, { 80: "world-80", 81: "world-81", 8443: "world-8443" });
      try {
        // Before: everything reaches its real destination.
        expect(await connect(pod, "10.96.0.1", 80)).toBe("world-80");
        expect(await connect(world, "10.200.0.2", 8080)).toBe("app-8080");

        const r = await init(pod, ["--no-enroll", ...EXCLUDE]);
        expect(r.code, r.stderr).toBe(0);

        expect(await connect(pod, "10.96.0.1", 80)).toBe("agent-outbound");
        expect(await connect(pod, "10.96.0.1", 8443)).toBe("world-8443"); // excluded port
        expect(await connect(pod, "10.97.0.1", 80)).toBe("world-80"); // excluded CIDR
        expect(await connect(pod, "10.96.0.1", 81)).toBe("world-81"); // marked like the agent's sockets
        expect(await connect(pod, "127.0.0.1", 8080)).toBe("app-8080"); // loopback
        expect(await connect(pod, "10.200.0.2", 8080)).toBe("app-8080"); // the pod itself, via lo
        expect(await connect(world, "10.200.0.2", 8080)).toBe("agent-inbound");
        expect(await connect(world, "10.200.0.2", 15008)).toBe("agent-tunnel");
        expect(await connect(world, "10.200.0.2", 9090)).toBe("app-9090"); // excluded inbound port

        // A dial of the agent's that got no answer leaves a conntrack entry without NAT for two
        // minutes (SYN_SENT). An app connection that picks the same source port to the same
        // destination is still redirected: the agent's entry is in a zone of its own.
        const agentDial = { localPort: 41234, mark: 0x539 };
        expect(await connect(pod, "10.99.0.1", 80, agentDial)).toMatch(/^error: /); // nothing routes 10.99/16
        const conntrack = await sh(pod, "cat /proc/net/nf_conntrack");
        expect(conntrack).toMatch(
          new RegExp(
            `SYN_SENT src=10\\.200\\.0\\.2 dst=10\\.99\\.0\\.1 sport=41234 dport=80 zone-orig=${AGENT_CONNTRACK_ZONE} `,
          ),
        );
        expect(await connect(pod, "10.99.0.1", 80, { localPort: 41234 })).toBe("agent-outbound");

        expect((await init(pod, ["--no-enroll", "--uninstall"])).code).toBe(0);
        expect(await connect(pod, "10.96.0.1", 80)).toBe("world-80");
        expect(await connect(world, "10.200.0.2", 8080)).toBe("app-8080");
      } finally {
        await agent.stop();
        await remote.stop();
      }
    });
  });
});
