// Flag parsing is pure (parseInitArgs); the CLI's effects are tested end to end in iptables.test.ts.
import type { NetworkInterfaceInfo } from "node:os";
import { describe, expect, it } from "vitest";
import { HELP, OPTIONS, parseInitArgs } from "./cli.ts";

const iface = (address: string, internal = false): NetworkInterfaceInfo => {
  return { address, family: "IPv4", internal, netmask: "255.255.255.0", mac: "00:00:00:00:00:00", cidr: null };
};
const NETNS = () => ({ lo: [iface("127.0.0.1", true)], eth0: [iface("10.244.1.7")] });
const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseInitArgs(argv, env, NETNS);

describe("nodemesh init flags", () => {
  it("fills the pod from the downward-API environment and the namespace's address", () => {
    const plan = parse([], { POD_NAME: "web", POD_NAMESPACE: "shop" });
    expect(plan.pod).toEqual({
      name: "web",
      namespace: "shop",
      ip: "10.244.1.7",
      labels: {},
      serviceAccount: "default",
    });
    expect(plan.agent).toEqual({ socketPath: "/var/run/nodemesh/agent.sock", timeoutMs: 30_000 });
    expect(plan).toMatchObject({ uninstall: false, dryRun: false, help: false });
  });

  it("lets flags win over the environment", () => {
    const argv = [
      "--pod-name=api",
      "--pod-namespace=prod",
      "--pod-ip=10.0.0.3",
      "--label=app=api",
      "--label",
      "tier=back-end",
    ];
    const plan = parse([...argv, "--service-account=api-sa", "--netns-path=/var/run/netns/cni-1"], { POD_NAME: "web" });
    expect(plan.pod).toEqual({
      name: "api",
      namespace: "prod",
      ip: "10.0.0.3",
      netnsPath: "/var/run/netns/cni-1",
      labels: { app: "api", tier: "back-end" },
      serviceAccount: "api-sa",
    });
  });

  it("joins repeated exclusion flags", () => {
    const plan = parse(["--no-enroll", "--exclude-outbound-ports=22", "--exclude-outbound-ports", "80,443"]);
    expect(plan.config.excludeOutboundPorts.map((p) => p.first)).toEqual([22, 80, 443]);
    expect(plan.pod).toBeUndefined();
  });

  it("tells the agent the excluded inbound ports, which its tunnel must not reach", () => {
    const plan = parse(["--pod-name=web", "--exclude-inbound-ports=9090,10000:10100"]);
    expect(plan.pod?.excludeInboundPorts).toEqual([
      { first: 9090, last: 9090 },
      { first: 10000, last: 10100 },
    ]);
    expect(parse(["--pod-name=web"]).pod).not.toHaveProperty("excludeInboundPorts");
  });

  it("reads --enroll-timeout as a duration", () => {
    const timeout = (t: string) => parse(["--no-enroll", `--enroll-timeout=${t}`]).agent.timeoutMs;
    expect([timeout("45"), timeout("2m"), timeout("500ms"), timeout("1.5s")]).toEqual([45_000, 120_000, 500, 1_500]);
  });

  const bad: [string[], NodeJS.ProcessEnv, string][] = [
    [[], {}, "--pod-name (or POD_NAME) is required to enroll the pod; use --no-enroll for rules only"],
    [["--pod-name=Web"], {}, "--pod-name: name must be a DNS label (lowercase letters, digits, '-')"],
    [["--pod-ip=10.0.0.300"], { POD_NAME: "web" }, "--pod-ip: ip must be an IPv4 address"],
    [["--pod-ip=127.0.0.1"], { POD_NAME: "web" }, "--pod-ip: ip 127.0.0.1 is a loopback address (127.0.0.0/8)"],
    [["--label=app"], { POD_NAME: "web" }, '--label: "app" is not KEY=VALUE'],
    [["--no-enroll", "--enroll-timeout=soon"], {}, '--enroll-timeout: "soon" is not a duration like 30s, 2m or 500ms'],
    [["--no-enroll", "--exclude-inbound-ports=0"], {}, 'exclude-inbound-ports: "0" is not a port (1-65535)'],
    [["--no-enroll", "--bogus"], {}, "Unknown option '--bogus'"],
    [["--no-enroll", "extra"], {}, "Unexpected argument 'extra'"],
  ];
  for (const [argv, env, message] of bad) {
    it(`rejects ${argv.join(" ") || "no pod name"}`, () => {
      expect(() => parse(argv, env)).toThrow(expect.objectContaining({ code: "invalid_argument" }));
      expect(() => parse(argv, env)).toThrow(message);
    });
  }

  it("requires --pod-ip when the namespace has no address", () => {
    expect(() => parseInitArgs(["--pod-name=web"], {}, () => ({ lo: [iface("127.0.0.1", true)] }))).toThrow(
      "--pod-ip (or POD_IP) is required",
    );
  });

  it("names the socket --enrollment-socket, as the agent does; --agent-socket still works, with a warning", () => {
    const current = parse(["--no-enroll", "--enrollment-socket=/run/a.sock"]);
    expect(current.agent.socketPath).toBe("/run/a.sock");
    expect(current.warnings).toEqual([]);
    const old = parse(["--no-enroll", "--agent-socket=/run/b.sock"]);
    expect(old.agent.socketPath).toBe("/run/b.sock");
    expect(old.warnings).toEqual([
      "--agent-socket is deprecated; use --enrollment-socket (the same flag as nodemesh agent's)",
    ]);
    expect(() => parse(["--no-enroll", "--agent-socket=/a", "--enrollment-socket=/b"])).toThrow(
      "give --enrollment-socket only (--agent-socket is its old name)",
    );
    expect(HELP).toMatch(/^ {2}--enrollment-socket PATH .*\(nodemesh agent --enrollment-socket\)/m);
  });

  it("needs no pod for a dry run, and checks and keeps one that is given", () => {
    const bare = parse(["--dry-run"]);
    expect(bare.dryRun).toBe(true);
    expect(bare.pod).toBeUndefined();
    expect(parse(["--dry-run", "--pod-name=web"]).pod).toMatchObject({ name: "web", ip: "10.244.1.7" });
    expect(() => parse(["--dry-run", "--pod-name=Web"])).toThrow("--pod-name: name must be a DNS label");
    // Without a dry run the pod stays required.
    expect(() => parse([])).toThrow("--pod-name (or POD_NAME) is required");
  });

  it("waits 2 s for the agent when unenrolling, unless told otherwise", () => {
    expect(parse(["--uninstall", "--pod-name=web"]).agent.timeoutMs).toBe(2_000);
    expect(parse(["--uninstall", "--pod-name=web", "--enroll-timeout=10s"]).agent.timeoutMs).toBe(10_000);
    expect(parse(["--pod-name=web"]).agent.timeoutMs).toBe(30_000);
  });

  it("takes --mode iptables (the default) or ebpf, which needs the pod's cgroup", () => {
    expect(parse(["--no-enroll"]).mode).toBe("iptables");
    const ebpf = parse(["--no-enroll", "--mode=ebpf", "--cgroup=/sys/fs/cgroup/pod1", "--agent-cgroup=/sys/fs/cgroup"]);
    expect(ebpf).toMatchObject({ mode: "ebpf", cgroup: "/sys/fs/cgroup/pod1", agentCgroup: "/sys/fs/cgroup" });
    expect(() => parse(["--no-enroll", "--mode=ebpf"])).toThrow("--mode ebpf needs --cgroup PATH");
    expect(() => parse(["--no-enroll", "--mode=nft"])).toThrow('--mode: "nft" is not iptables, ebpf or node');
    // A dry run shows what it would do without a cgroup.
    expect(parse(["--dry-run", "--mode=ebpf"]).mode).toBe("ebpf");
  });

  it("takes --mode node (asked of the agent, so not with --no-enroll), and --cgroup parent with its --cgroup-root", () => {
    expect(parse(["--pod-name=web", "--mode=node"])).toMatchObject({ mode: "node" });
    expect(() => parse(["--no-enroll", "--mode=node"])).toThrow("--mode node asks the agent: not with --no-enroll");
    const parent = parse(["--pod-name=web", "--mode=ebpf", "--cgroup=parent", "--cgroup-root=/host/sys/fs/cgroup"]);
    expect(parent).toMatchObject({ cgroup: "parent", cgroupRoot: "/host/sys/fs/cgroup" });
    expect(() => parse(["--pod-name=web", "--cgroup-root=/x"])).toThrow("--cgroup-root goes with --cgroup parent");
  });

  it("documents every flag in --help", () => {
    for (const flag of Object.keys(OPTIONS)) expect(HELP).toContain(`--${flag}`);
    expect(parse(["--help"]).help).toBe(true);
  });
});
