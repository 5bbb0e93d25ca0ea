import { describe, expect, it } from "vitest";
import type { Service } from "../../api/services.ts";
import { buildTables, parseExclusions } from "../../init-container/rules.ts";
import { allocateSharedBuffers, SharedState } from "../dataplane/shared-state.ts";
import { compileSnapshot } from "../dataplane/snapshot.ts";
import { exclusionsOfRules, interceptionOf, listeningPorts, nextPick, rulesFindings } from "./diagnose.ts";

const EXCLUSIONS = parseExclusions({
  outboundPorts: "9000,8000:8100",
  outboundCidrs: "10.0.5.0/24",
  inboundPorts: "9901",
});
/** What nodemesh init installs in empty nat and raw tables, as iptables-save prints them back (with counters). */
const INSTALLED = buildTables("", EXCLUSIONS).replace(/^-A /gm, "[0:0] -A ");
const SUBJECT = "pod default/web";
const POD = { excludeInboundPorts: [{ first: 9901, last: 9901 }] };

describe("the pod's rules", () => {
  it("reads the exclusions back from the rules themselves", () => {
    expect(exclusionsOfRules(INSTALLED)).toEqual(EXCLUSIONS);
  });

  it("as nodemesh init installs them: ok, naming the exclusions", () => {
    expect(rulesFindings(INSTALLED, POD, SUBJECT)).toEqual([
      {
        verdict: "ok",
        check: "rules",
        subject: SUBJECT,
        message:
          "NODEMESH_OUTPUT first in OUTPUT, the agent's connections in conntrack zone 1337, NODEMESH_INBOUND first in PREROUTING, in nodemesh init's order (excluded: outbound ports 9000,8000:8100, outbound CIDRs 10.0.5.0/24, inbound ports 9901)",
      },
    ]);
  });

  it("none at all, one missing, or another tool's rule before ours: errors with the init command", () => {
    const none = rulesFindings(buildTables(INSTALLED, null), POD, SUBJECT);
    expect(none).toMatchObject([{ verdict: "error", message: expect.stringContaining("no interception rules") }]);
    expect(none[0]!.fix).toContain("nodemesh init --pod-name web --pod-namespace default");

    const lacking = INSTALLED.split("\n")
      .filter((l) => !l.includes("to agent outbound listener"))
      .join("\n");
    expect(rulesFindings(lacking, POD, SUBJECT)[0]!.message).toBe(
      `the pod's rules differ from what nodemesh init installs (missing or moved: -A NODEMESH_OUTPUT -p tcp -m comment --comment "nodemesh: to agent outbound listener" -j REDIRECT --to-ports 15001)`,
    );

    // A pod set up before the agent's connections had a conntrack zone of their own.
    const noZone = INSTALLED.split("\n")
      .filter((l) => !l.includes("-j CT --zone-orig"))
      .join("\n");
    expect(rulesFindings(noZone, POD, SUBJECT)[0]!.message).toBe(
      `the pod's rules differ from what nodemesh init installs (missing or moved: -A NODEMESH_AGENT_CT -m comment --comment "nodemesh: own conntrack zone, original direction" -j CT --zone-orig 1337)`,
    );

    const foreignFirst = INSTALLED.replace(":NODEMESH_INBOUND", ":NODEMESH_INBOUND").replace(
      /^\[0:0\] -A OUTPUT /m,
      "-A OUTPUT -p udp -j RETURN\n[0:0] -A OUTPUT ",
    );
    expect(rulesFindings(foreignFirst, POD, SUBJECT)[0]!.message).toContain(
      'out of order: "-A OUTPUT -p tcp -m comment --comment "nodemesh: intercept outbound tcp" -j NODEMESH_OUTPUT" belongs where the pod has "-A OUTPUT -p udp -j RETURN"',
    );
  });

  it("inbound only (the eBPF mode) is a warning; inbound exclusions unlike the enrollment's too", () => {
    const inbound = buildTables("", EXCLUSIONS, "inbound");
    const findings = rulesFindings(inbound, { excludeInboundPorts: [] }, SUBJECT);
    expect(findings.map((f) => f.verdict)).toEqual(["ok", "warning", "warning"]);
    expect(findings[1]!.message).toContain("no NODEMESH_OUTPUT: outbound interception is not by iptables");
    expect(findings[2]!.message).toBe("the rules exclude inbound ports 9901, the enrollment says none");
  });
});

describe("interception of a destination", () => {
  it("follows the rules: loopback, excluded ports and CIDRs return; the rest goes to the agent", () => {
    expect(interceptionOf(INSTALLED, "10.96.0.10", 80)).toEqual({
      intercepted: true,
      reason: "NODEMESH_OUTPUT redirects 10.96.0.10:80 to the agent's :15001",
    });
    expect(interceptionOf(INSTALLED, "127.0.0.1", 80).intercepted).toBe(false);
    expect(interceptionOf(INSTALLED, "10.96.0.10", 8050).reason).toBe(
      "not intercepted: port 8050 is an excluded outbound port (RETURN)",
    );
    expect(interceptionOf(INSTALLED, "10.0.5.7", 80).reason).toBe(
      "not intercepted: 10.0.5.7 is in the excluded outbound CIDR 10.0.5.0/24 (RETURN)",
    );
    expect(interceptionOf(buildTables("", null), "10.96.0.10", 80).intercepted).toBe(false);
  });
});

describe("listeners", () => {
  it("reads the LISTEN sockets' ports from /proc/net/tcp", () => {
    const table = [
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
      "   0: 00000000:3A99 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0",
      "   1: 00000000:3A9E 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0",
      "   2: 0B00F40A:1F90 0100F40A:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 1 10 -1",
    ].join("\n");
    expect([...listeningPorts(table)]).toEqual([15001, 15006]);
  });
});

describe("the next pick", () => {
  const services: Service[] = [
    {
      name: "reviews",
      namespace: "default",
      vip: "10.96.0.10",
      ports: [{ port: 80 }],
      endpoints: [
        { ip: "10.244.1.1", node: "node-1" },
        { ip: "10.244.2.1", node: "node-2" },
      ],
    },
  ];
  const snapshot = compileSnapshot({
    version: "1",
    table: { services },
    routeSlots: { "10.96.0.10:80": 3 },
    endpointSlots: {},
    node: "node-1",
    rttMs: {},
  });
  const backend = snapshot.routes.get("10.96.0.10:80")!.self;

  it("round robin: the endpoint the rotation gives next, read without advancing it", () => {
    const shared = new SharedState(allocateSharedBuffers());
    const first = nextPick(shared, backend, undefined, 0);
    expect(first).toBe(backend.route.endpoints[0]);
    expect(nextPick(shared, backend, undefined, 0)).toBe(first);
    expect(shared.roundRobinPosition(3)).toBe(0);
    shared.nextRoundRobin(3); // a worker's pick
    expect(nextPick(shared, backend, undefined, 0)).toBe(backend.route.endpoints[1]);
  });

  it("least request is not knowable beforehand; without a data plane nothing is", () => {
    const lr = {
      ...backend,
      policy: { ...backend.policy, lb: { ...backend.policy.lb, type: "LeastRequest" as const } },
    };
    expect(nextPick(new SharedState(allocateSharedBuffers()), lr, undefined, 0)).toMatch(/not knowable beforehand/);
    expect(nextPick(undefined, backend, undefined, 0)).toBe("unknown (the data plane is not running)");
  });
});
